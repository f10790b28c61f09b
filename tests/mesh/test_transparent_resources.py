"""A container's sidecar as a transparent proxy, as resources: one listener on 127.0.0.1 that restores each
connection's original destination and picks the filter chain of the service at that virtual address (HTTP: the
same route and clusters as a declared upstream; tcp: proxied whole); services without an address are not there.
And the container's nftables table that sends the app's connections to the service range there."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf.message import Message

from meshvisor.core.errors import InvalidInput
from meshvisor.mesh.model import Endpoint, Service, Sidecar
from meshvisor.mesh.resources import CLUSTER, LISTENER, ROUTE, sidecar_resources
from meshvisor.network.app_guard import Transparent, VmAppPort, ruleset, vm_ruleset

SERVICES = {
    "web": Service("web", 8080, (Endpoint("10.0.0.5", 15006, "h1"),), address="240.0.0.1"),
    "db": Service("db", 5432, (Endpoint("10.0.0.6", 15006, "h1"),), protocol="tcp", address="240.0.0.2"),
    "old": Service("old", 8080, (Endpoint("10.0.0.7", 15006, "h1"),)),  # no address (yet)
}


def _unpack(message: Message, cls: type[Any]) -> Any:
    out = cls()
    assert message.Unpack(out)  # type: ignore[attr-defined]
    return out


def _resources(transparent_port: int | None = 15001) -> dict[str, dict[str, Any]]:
    car = Sidecar("app-1", "app", 15006, 8080, transparent_port=transparent_port)
    return sidecar_resources(car, SERVICES, b"CERT", b"KEY", b"BUNDLE", "td.test")


def test_the_transparent_listener_picks_the_service_by_its_virtual_address() -> None:
    out = _resources()
    listener = out[LISTENER]["transparent|15001"]
    assert (listener.address.socket_address.address, listener.address.socket_address.port_value) == (
        "127.0.0.1",
        15001,
    )
    assert [f.name for f in listener.listener_filters] == ["envoy.filters.listener.original_dst"]
    chains = {c.name: c for c in listener.filter_chains}
    assert set(chains) == {"web", "db"}  # `old` has no address
    for name, address in (("web", "240.0.0.1"), ("db", "240.0.0.2")):
        [match] = chains[name].filter_chain_match.prefix_ranges
        assert (match.address_prefix, match.prefix_len.value) == (address, 32)
        assert not chains[name].filter_chain_match.destination_port.value  # any port
    web = _unpack(chains["web"].filters[0].typed_config, hcm_pb2.HttpConnectionManager)
    assert web.rds.route_config_name == "outbound|web" and web.stat_prefix == "transparent_web"
    db = _unpack(chains["db"].filters[0].typed_config, tcp_proxy_pb2.TcpProxy)
    assert (db.cluster, db.stat_prefix) == ("outbound|db", "transparent_db")
    assert {"outbound|web", "outbound|db"} <= set(out[CLUSTER]) and "outbound|old" not in out[CLUSTER]
    assert "outbound|web" in out[ROUTE] and "outbound|db" not in out[ROUTE]


def test_a_vm_sidecar_takes_what_its_gateway_namespace_redirects_on_every_address() -> None:
    car = Sidecar(
        "vm-1", "app", 15006, 80, app_address="10.0.0.9", outbound_address="0.0.0.0", transparent_port=15001
    )
    out = sidecar_resources(car, SERVICES, b"CERT", b"KEY", b"BUNDLE", "td.test")
    address = out[LISTENER]["transparent|15001"].address.socket_address
    assert (address.address, address.port_value) == ("0.0.0.0", 15001)


def test_a_meshed_vm_app_port_takes_tcp_from_its_sidecar_only_where_frames_leave_for_its_tap() -> None:
    text = vm_ruleset(
        "pfx", [VmAppPort("pfx-t-0123abcd", 80, "10.0.0.10"), VmAppPort("pfx-t-0123abcd", 80, "10.0.0.10")]
    )
    assert text.startswith("table bridge pfx-vmapp\ndelete table bridge pfx-vmapp\n")
    assert "type filter hook forward priority filter - 10; policy accept;" in text
    assert text.count('oifname "pfx-t-0123abcd" tcp dport 80 ip saddr != 10.0.0.10 drop') == 1
    assert "drop" not in vm_ruleset("pfx", [])


@pytest.mark.parametrize(
    "bad",
    [
        VmAppPort("other-t-0123abcd", 80, "10.0.0.10"),  # not a link of the prefix
        VmAppPort("pfx-t-0123abcd; drop", 80, "10.0.0.10"),
        VmAppPort("pfx-t-0123abcd", 0, "10.0.0.10"),
        VmAppPort("pfx-t-0123abcd", 80, "10.0.0.300"),
    ],
)
def test_a_bad_vm_app_guard_is_refused(bad: VmAppPort) -> None:
    with pytest.raises(InvalidInput):
        vm_ruleset("pfx", [bad])


def test_a_sidecar_without_a_transparent_port_takes_nothing_redirected() -> None:
    out = _resources(None)
    assert not [name for name in out[LISTENER] if name.startswith("transparent")]
    assert not [name for name in out[CLUSTER] if name.startswith("outbound|")]


def test_the_containers_table_redirects_the_service_range_to_the_sidecar() -> None:
    text = ruleset("pfx", 8080, Transparent("240.0.0.0/16", 15001))
    assert "type nat hook output priority -100; policy accept;" in text
    assert "ip daddr 240.0.0.0/16 meta l4proto tcp redirect to :15001" in text
    assert "tcp dport 8080 drop" in text  # the app's port stays the sidecar's alone
    assert "redirect" not in ruleset("pfx", 8080)


def test_a_vm_gateway_namespace_redirects_what_arrives_for_the_services_and_guards_no_app() -> None:
    text = ruleset("pfx", None, Transparent("240.0.0.0/16", 15001, arriving=True))
    assert "type nat hook prerouting priority -100;" in text and "redirect to :15001" in text
    assert "hook input" not in text and "hook output" not in text


@pytest.mark.parametrize("bad", [Transparent("240.0.0.0/16", 0), Transparent("240.0.0.0/16", 70000)])
def test_a_bad_redirect_port_is_refused(bad: Transparent) -> None:
    with pytest.raises(InvalidInput):
        ruleset("pfx", 8080, bad)
