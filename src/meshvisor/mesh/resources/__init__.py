"""Pure builders: the model in, typed Envoy v3 resources for one sidecar out (only what that sidecar needs).

Names (stable, so the control plane can diff them):
    cluster/CLA  `outbound|<up>` (all endpoints), `outbound|<up>|<version>` (one per split version),
                 `inbound|<svc>` (the local app, static)
    listener     `inbound|<port>`, `outbound|<up>|<local_port>`
    route        `outbound|<up>`, `inbound|<svc>` (both RDS)
    where <up> is an upstream's name in the sidecar's own project, `<project>/<name>` in another
    (`upstream_ref`), so two projects' services of one name never share a resource name
    secret       `workload` (certificate + key), `trust-bundle` (CA roots)

Modules (each uses only those above it; import the names from this package):
    names           xDS type URLs, push order, resource names, `Resources`
    protos          small protobuf pieces: `Any` packing, durations, percents, addresses, the ADS config source
    tls             mTLS transport sockets and the SDS secrets they name
    endpoints       load assignments (EDS), grouped by locality, built once per distinct input
    clusters        clusters (CDS): upstream services with their client-side policy, the app, Zipkin
    filters         HTTP filters: router, HCM, and the server-side policy filters (RBAC, rate limit, fault)
    routes          route configurations (RDS): outbound with splits, timeout, retries; inbound with the policy
    observability   access logs, request ids, Zipkin tracing of every HCM; the per-upstream stat prefix
    listeners       listeners (LDS): the mTLS inbound one, one plaintext outbound one per upstream
    assembly        `sidecar_resources`: everything for one sidecar; `BuildCache` shares it across sidecars
    bootstrap_json  `bootstrap`: the Envoy bootstrap (JSON-ready) that points only at ADS, with the node's
                    xDS credential (`bootstrap_token` reads it back)
"""

from .assembly import BuildCache, sidecar_resources
from .bootstrap_json import XDS_AUTH_HEADER, XDS_AUTH_SCHEME, bootstrap, bootstrap_token
from .clusters import app_cluster, parse_host_port, upstream_cluster, zipkin_cluster
from .endpoints import load_assignment
from .filters import (
    FAULT_FILTER,
    RATELIMIT_FILTER,
    RBAC_FILTER,
    fault_filter,
    ratelimit_filter,
    rbac_filter,
)
from .listeners import inbound_listener, outbound_listener
from .names import (
    BUNDLE_SECRET,
    CERT_SECRET,
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    SECRET,
    WILDCARD_TYPES,
    ZIPKIN_CLUSTER,
    Resources,
    inbound_cluster,
    outbound_cluster,
    upstream_ref,
)
from .observability import (
    INBOUND_ACCESS_LOG,
    OUTBOUND_ACCESS_LOG,
    access_log,
    access_log_format,
    outbound_stat_prefix,
    transparent_stat_prefix,
)
from .protos import CONNECT_TIMEOUT_MS
from .routes import inbound_route, outbound_route
from .tls import downstream_tls, secrets, upstream_tls

__all__ = [
    "BUNDLE_SECRET",
    "CERT_SECRET",
    "CLUSTER",
    "CONNECT_TIMEOUT_MS",
    "ENDPOINT",
    "FAULT_FILTER",
    "INBOUND_ACCESS_LOG",
    "LISTENER",
    "OUTBOUND_ACCESS_LOG",
    "PUSH_ORDER",
    "RATELIMIT_FILTER",
    "RBAC_FILTER",
    "ROUTE",
    "SECRET",
    "WILDCARD_TYPES",
    "XDS_AUTH_HEADER",
    "XDS_AUTH_SCHEME",
    "ZIPKIN_CLUSTER",
    "BuildCache",
    "Resources",
    "access_log",
    "access_log_format",
    "app_cluster",
    "bootstrap",
    "bootstrap_token",
    "downstream_tls",
    "fault_filter",
    "inbound_cluster",
    "inbound_listener",
    "inbound_route",
    "load_assignment",
    "outbound_cluster",
    "outbound_listener",
    "outbound_route",
    "outbound_stat_prefix",
    "transparent_stat_prefix",
    "parse_host_port",
    "ratelimit_filter",
    "rbac_filter",
    "secrets",
    "sidecar_resources",
    "upstream_cluster",
    "upstream_ref",
    "upstream_tls",
    "zipkin_cluster",
]
