"""The service mesh.

services        services, their traffic policy and ingress
view            the mesh as the database describes it (pure `build_view`)
sidecars        Envoy sidecars beside meshed workloads
control_plane   `meshvisor xds`: the ADS server fed from the view
ca              the platform CA as the API shows and rotates it
telemetry       /metrics and access logs
"""
