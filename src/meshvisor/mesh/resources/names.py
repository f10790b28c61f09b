"""What the resources are called: the xDS type URLs and the stable names the control plane diffs by."""

from __future__ import annotations

from google.protobuf.message import Message

_P = "type.googleapis.com/"
CLUSTER = _P + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _P + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = _P + "envoy.config.listener.v3.Listener"
ROUTE = _P + "envoy.config.route.v3.RouteConfiguration"
SECRET = _P + "envoy.extensions.transport_sockets.tls.v3.Secret"
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)  # make-before-break
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})

CERT_SECRET = "workload"
GATEWAY_SECRET = "gateway"  # the gateway's server certificate
GATEWAY_ROUTE = "gateway"
BUNDLE_SECRET = "trust-bundle"
ZIPKIN_CLUSTER = "zipkin"

Resources = dict[str, dict[str, Message]]  # type URL -> name -> resource


def upstream_ref(service: str, project: str, caller_project: str) -> str:
    """How a sidecar's resources name an upstream: by its name in the sidecar's own project, as
    `<project>/<name>` in another (no service name holds a `/`)."""
    return service if project == caller_project else f"{project}/{service}"


def outbound_cluster(service: str, version: str | None = None) -> str:
    return f"outbound|{service}" if version is None else f"outbound|{service}|{version}"


def inbound_cluster(service: str) -> str:
    return f"inbound|{service}"
