"""The Envoy bootstrap (a JSON-ready dict): the node, the admin interface, and ADS as the source of everything
else, reached over the one static cluster `xds_cluster` (HTTP/2, TCP or a Unix socket), with the node's xDS
credential as gRPC metadata (`xds.auth`): the file is as secret as that credential."""

from __future__ import annotations

from typing import Any

from meshvisor.core.errors import InvalidInput

XDS_AUTH_HEADER = "authorization"  # gRPC metadata of every ADS stream: "Bearer <the node's credential>"
XDS_AUTH_SCHEME = "Bearer "


def bootstrap(
    node_id: str,
    cluster: str,
    xds_host: str = "127.0.0.1",
    xds_port: int = 18000,
    admin_port: int | None = None,
    *,
    api_type: str = "GRPC",
    admin_address: str = "127.0.0.1",
    admin_path: str | None = None,
    xds_path: str | None = None,
    xds_token: str | None = None,
) -> dict[str, Any]:
    """Envoy bootstrap (JSON-ready) that points only at the ADS server; everything else comes over ADS.

    `admin_path`/`xds_path` put the admin interface or the xDS connection on a Unix socket, which stays
    reachable across network namespaces. `xds_token` is the node's credential (`NodeAuth.token`), sent as
    `authorization: Bearer <token>` on the ADS stream; without it the control plane serves nothing.
    """
    if api_type not in ("GRPC", "DELTA_GRPC"):
        raise InvalidInput(f"api_type must be GRPC or DELTA_GRPC, not {api_type!r}")
    if (admin_port is None) == (admin_path is None):
        raise InvalidInput("give exactly one of admin_port and admin_path")
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node_id, "cluster": cluster},
        "admin": {"address": _address(admin_path, admin_address, admin_port)},
        "dynamic_resources": {
            "ads_config": _ads_config(api_type, xds_token),
            "cds_config": ads_source,
            "lds_config": ads_source,
        },
        "static_resources": {"clusters": [_xds_cluster(_address(xds_path, xds_host, xds_port))]},
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {}}]},
    }


def bootstrap_token(boot: dict[str, Any]) -> str | None:
    """The xDS credential a bootstrap carries (`bootstrap`'s `xds_token`), None when it has none."""
    try:
        (service,) = boot["dynamic_resources"]["ads_config"]["grpc_services"]
        values = [h["value"] for h in service.get("initial_metadata", []) if h["key"] == XDS_AUTH_HEADER]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    for value in values:
        if isinstance(value, str) and value.startswith(XDS_AUTH_SCHEME):
            return value.removeprefix(XDS_AUTH_SCHEME)
    return None


def _address(path: str | None, host: str, port: int | None) -> dict[str, Any]:
    """A Unix socket at `path` when one is given, else `host:port`."""
    if path:
        return {"pipe": {"path": path}}
    return {"socket_address": {"address": host, "port_value": port}}


def _ads_config(api_type: str, token: str | None) -> dict[str, Any]:
    service: dict[str, Any] = {
        "envoy_grpc": {
            "cluster_name": "xds_cluster",
            # Back to a restarted control plane within a second or two (Envoy's default backs off to 30 s).
            "retry_policy": {"retry_back_off": {"base_interval": "0.25s", "max_interval": "2s"}},
        }
    }
    if token is not None:
        service["initial_metadata"] = [{"key": XDS_AUTH_HEADER, "value": XDS_AUTH_SCHEME + token}]
    return {
        "api_type": api_type,
        "transport_api_version": "V3",
        "set_node_on_first_message_only": True,
        "grpc_services": [service],
    }


def _xds_cluster(address: dict[str, Any]) -> dict[str, Any]:
    """The one static cluster: the ADS server, spoken to in HTTP/2 (gRPC)."""
    return {
        "name": "xds_cluster",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": "xds_cluster",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }
