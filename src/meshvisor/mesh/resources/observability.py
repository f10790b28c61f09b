"""What every HTTP connection manager adds for telemetry: a JSON access log per direction, request ids kept as
the caller sent them, and (optionally) Zipkin tracing; and the stat prefix telemetry reads per service pair."""

from __future__ import annotations

import functools

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2
from envoy.config.trace.v3 import http_tracer_pb2, zipkin_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.request_id.uuid.v3 import uuid_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from .names import ZIPKIN_CLUSTER
from .protos import pack

# Relative to Envoy's working directory, which `sidecar.start` makes the sidecar's own directory.
INBOUND_ACCESS_LOG = "access-inbound.log"
OUTBOUND_ACCESS_LOG = "access-outbound.log"
GATEWAY_ACCESS_LOG = "access-gateway.log"  # the hosts' ingress: what came in through its routes
ACCESS_LOGS = {"inbound": INBOUND_ACCESS_LOG, "outbound": OUTBOUND_ACCESS_LOG, "gateway": GATEWAY_ACCESS_LOG}


def outbound_stat_prefix(service: str) -> str:
    """Stat prefix of the caller's outbound HCM for `service`: its `http.<prefix>.downstream_rq_*` stats are the
    requests the app made to `service` (what telemetry reports per service pair)."""
    return f"outbound_{service}"


def transparent_stat_prefix(service: str) -> str:
    """Stat prefix of a transparent sidecar's chain for `service`: every service of the project has one, called
    or not, so telemetry reports its pairs only once they carry traffic."""
    return f"transparent_{service}"


def access_log_format(direction: str) -> dict[str, str]:
    """One JSON object per request. The peer is the caller's identity (inbound) or the callee's (outbound)."""
    peer = "%DOWNSTREAM_PEER_URI_SAN%" if direction == "inbound" else "%UPSTREAM_PEER_URI_SAN%"
    return {
        "start_time": "%START_TIME(%Y-%m-%dT%H:%M:%E3SZ)%",
        "direction": direction,
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH):512%",
        "protocol": "%PROTOCOL%",
        "code": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "duration_ms": "%DURATION%",
        "bytes_received": "%BYTES_RECEIVED%",
        "bytes_sent": "%BYTES_SENT%",
        "peer": peer,
        "downstream": "%DOWNSTREAM_REMOTE_ADDRESS%",
        "upstream": "%UPSTREAM_HOST%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "traceparent": "%REQ(TRACEPARENT)%",
        "trace_id": "%TRACE_ID%",
    }


@functools.cache
def access_log(direction: str, path: str) -> accesslog_pb2.AccessLog:
    """Built once per direction (copy it, never change it): every listener of every sidecar has one."""
    fmt = struct_pb2.Struct()
    fmt.update(access_log_format(direction))
    config = file_pb2.FileAccessLog(
        path=path, log_format=substitution_format_string_pb2.SubstitutionFormatString(json_format=fmt)
    )
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.file", typed_config=pack(config))


def observe(manager: hcm_pb2.HttpConnectionManager, direction: str, tracing: bool) -> None:
    """Access log, request ids and (optionally) Zipkin tracing of one HCM (Zipkin names a sidecar's spans after
    its node's cluster, the service).

    `x-request-id` is kept as the caller sent it (generated when missing, never rewritten), and `traceparent`
    passes through untouched like any other header (the Zipkin tracer speaks B3).
    """
    path = ACCESS_LOGS[direction]
    manager.access_log.add().CopyFrom(access_log(direction, path))
    manager.generate_request_id.value = True
    manager.preserve_external_request_id = True
    manager.request_id_extension.CopyFrom(_request_ids())
    if tracing:
        manager.tracing.CopyFrom(_tracing())


@functools.cache
def _tracing() -> hcm_pb2.HttpConnectionManager.Tracing:
    zipkin = zipkin_pb2.ZipkinConfig(
        collector_cluster=ZIPKIN_CLUSTER,
        collector_endpoint="/api/v2/spans",
        collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON,
        trace_id_128bit=True,  # the trace id of a W3C traceparent is 128 bits too
    )
    return hcm_pb2.HttpConnectionManager.Tracing(
        provider=http_tracer_pb2.Tracing.Http(name="envoy.tracers.zipkin", typed_config=pack(zipkin))
    )


@functools.cache
def _request_ids() -> hcm_pb2.RequestIDExtension:
    # Envoy would otherwise rewrite a nibble of a UUID request id to carry its sampling decision, and trace only
    # requests whose id is a UUID; the sampling decision travels in the B3 headers instead.
    unchanged = uuid_pb2.UuidRequestIdConfig(
        pack_trace_reason=wrappers_pb2.BoolValue(value=False),
        use_request_id_for_trace_sampling=wrappers_pb2.BoolValue(value=False),
    )
    return hcm_pb2.RequestIDExtension(typed_config=pack(unchanged))
