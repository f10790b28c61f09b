"""xDS control plane and Envoy sidecars (the mesh's driver layer; no database, no API).

model      the mesh as plain values, `validate_policy`
ca         platform CA, SPIFFE workload certificates, root rotation
resources  pure builders of Envoy v3 resources per sidecar, and its bootstrap
xds        ADS gRPC server (state of the world and delta) over per-node snapshots
sidecar    run Envoy processes (optionally in a network namespace) and read their admin API
"""
