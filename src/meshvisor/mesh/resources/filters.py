"""HTTP filters and their configs: the router, the HTTP connection manager that carries them, and the three
server-side policy filters (RBAC from `allow`, local rate limit, fault) whose per-route config `routes` sets."""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import token_bucket_pb2
from google.protobuf.message import Message

from ..ca import DEFAULT_PROJECT, spiffe_id
from ..model import Policy, allowed_identity
from .protos import ms, pack, percent, u32

RBAC_FILTER = "envoy.filters.http.rbac"
RATELIMIT_FILTER = "envoy.filters.http.local_ratelimit"
FAULT_FILTER = "envoy.filters.http.fault"


def http_filter(name: str, config: Message) -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=name, typed_config=pack(config))


def router() -> hcm_pb2.HttpFilter:
    return http_filter("envoy.filters.http.router", router_pb2.Router())


def hcm_filter(manager: hcm_pb2.HttpConnectionManager) -> listener_components_pb2.Filter:
    return listener_components_pb2.Filter(
        name="envoy.filters.network.http_connection_manager", typed_config=pack(manager)
    )


def rbac_filter(allow: Iterable[str] | None, trust_domain: str, project: str = DEFAULT_PROJECT) -> rbac_pb2.RBAC:
    """Only the identities `allow` names (`model.allowed_identity`, for a service of `project`) get in; with no
    `allow`, every service of `project` and none of another project (which needs its name in `allow`)."""
    if allow is None:
        matchers = [string_pb2.StringMatcher(prefix=spiffe_id(trust_domain, "", project))]
    else:
        identities = dict.fromkeys(allowed_identity(who, trust_domain, project) for who in allow)
        matchers = [string_pb2.StringMatcher(exact=who) for who in identities]
    principals = [
        rbac_config_pb2.Principal(authenticated=rbac_config_pb2.Principal.Authenticated(principal_name=matcher))
        for matcher in matchers
    ]
    policies = {}
    if principals:
        policies["allow"] = rbac_config_pb2.Policy(
            permissions=[rbac_config_pb2.Permission(any=True)], principals=principals
        )
    return rbac_pb2.RBAC(rules=rbac_config_pb2.RBAC(action=rbac_config_pb2.RBAC.ALLOW, policies=policies))


def fault_filter(policy: Policy) -> fault_pb2.HTTPFault | None:
    fault = policy.fault
    if fault is None:
        return None
    config = fault_pb2.HTTPFault()
    if fault.delay_ms is not None:
        config.delay.CopyFrom(
            common_fault_pb2.FaultDelay(fixed_delay=ms(fault.delay_ms), percentage=percent(fault.delay_percent))
        )
    if fault.abort_status is not None:
        config.abort.CopyFrom(
            fault_pb2.FaultAbort(http_status=fault.abort_status, percentage=percent(fault.abort_percent))
        )
    return config


def ratelimit_filter(policy: Policy, stat_prefix: str) -> local_rate_limit_pb2.LocalRateLimit | None:
    limit = policy.rate_limit
    if limit is None:
        return None
    always = base_pb2.RuntimeFractionalPercent(default_value=percent(100), runtime_key="mesh.ratelimit")
    return local_rate_limit_pb2.LocalRateLimit(
        stat_prefix=stat_prefix,
        token_bucket=token_bucket_pb2.TokenBucket(
            max_tokens=limit.burst, tokens_per_fill=u32(limit.tokens_per_second), fill_interval=ms(1000)
        ),
        filter_enabled=always,
        filter_enforced=always,
    )
