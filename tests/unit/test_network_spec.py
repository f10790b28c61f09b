from __future__ import annotations

from pathlib import Path

import pytest

from meshvisor.core.errors import InvalidInput
from meshvisor.core.names import new_id
from meshvisor.network import DEFAULT_MTU, NetworkSpec, bridge_name, gateway_mac
from meshvisor.network.dhcp import DnsSpec, dnsmasq_argv, hosts_file_text, names_file_text, opts_file_text

NET_ID = "0123456789abcdef0123456789abcdef"


def spec(**kw: object) -> NetworkSpec:
    values: dict[str, object] = {
        "network_id": NET_ID,
        "vni": 42,
        "cidr": "10.231.1.0/24",
        "gateway": "10.231.1.1",
        "local_ip": "10.231.255.1",
        "remotes": ("10.231.255.3", "10.231.255.2", "10.231.255.3"),
    }
    values.update(kw)
    return NetworkSpec(**values)  # type: ignore[arg-type]


def test_defaults_and_normalised_remotes() -> None:
    s = spec()
    assert s.mtu == DEFAULT_MTU == 1450
    assert s.remotes == ("10.231.255.2", "10.231.255.3")  # sorted, without duplicates
    assert s == spec(remotes=["10.231.255.2", "10.231.255.3"])
    assert s.prefixlen == 24 and s.underlay is None


@pytest.mark.parametrize(
    "bad",
    [
        {"network_id": "NOTHEX"},
        {"vni": 0},
        {"vni": 2**24},
        {"vni": True},
        {"cidr": "10.231.1.1/24"},  # host bits set
        {"cidr": "10.231.1.0/31"},
        {"cidr": "fd00::/64"},
        {"gateway": "10.231.2.1"},
        {"gateway": "10.231.1.0"},
        {"gateway": "10.231.1.255"},
        {"local_ip": "not-an-ip"},
        {"remotes": "10.231.255.2"},
        {"remotes": ("10.231.255.1",)},  # the local address
        {"remotes": ("nope",)},
        {"mtu": 100},
        {"mtu": 9001},
        {"underlay": "x" * 16},
    ],
)
def test_bad_specs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        spec(**bad)


def test_the_gateway_mac_is_stable_unicast_and_local() -> None:
    mac = gateway_mac(NET_ID)
    assert mac == gateway_mac(NET_ID) == spec().gateway_mac
    assert mac != gateway_mac(new_id())
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01


def test_hosts_file_is_sorted_checked_and_lowercase() -> None:
    text = hosts_file_text(spec(), {"02:AA:00:00:00:02": "10.231.1.20", "02:aa:00:00:00:01": "10.231.1.10"})
    assert text == "02:aa:00:00:00:01,10.231.1.10\n02:aa:00:00:00:02,10.231.1.20\n"
    assert hosts_file_text(spec(), {}) == ""


@pytest.mark.parametrize(
    "leases",
    [
        {"02:aa:00:00:00:01": "10.231.2.10"},  # outside the network
        {"02:aa:00:00:00:01": "10.231.1.1"},  # the gateway
        {"02:aa:00:00:00:01": "10.231.1.255"},  # broadcast
        {"01:aa:00:00:00:01": "10.231.1.10"},  # multicast MAC
        {"02:aa:00:00:00:01": "10.231.1.10", "02:aa:00:00:00:02": "10.231.1.10"},  # one address twice
        {"02:aa:00:00:00:01": "10.231.1.10", "02:AA:00:00:00:01": "10.231.1.11"},  # one MAC twice
        {"nonsense": "10.231.1.10"},
    ],
)
def test_bad_leases_are_refused(leases: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        hosts_file_text(spec(), leases)


def test_dnsmasq_serves_static_leases_and_the_platforms_names_only_on_the_bridge_only() -> None:
    argv = dnsmasq_argv("mv", spec(), Path("/state"))
    assert argv[0] == "dnsmasq"
    assert "--bind-interfaces" in argv and "--except-interface=lo" in argv
    assert "--no-hosts" in argv and f"--addn-hosts=/state/{NET_ID}.names" in argv
    assert "--local=/meshvisor.internal/" in argv  # never forwarded
    assert "--no-resolv" in argv  # other names are refused unless the network is allowed out
    assert "--dhcp-option=option:dns-server,10.231.1.1" in argv
    assert "--dhcp-ignore=tag:!known" in argv  # silent for another host's VM (no NAK)
    assert f"--interface={bridge_name('mv', NET_ID)}" in argv
    assert "--dhcp-range=10.231.1.0,static,255.255.255.0,1h" in argv
    assert f"--dhcp-hostsfile=/state/{NET_ID}.hosts" in argv and f"--pid-file=/state/{NET_ID}.pid" in argv
    assert f"--dhcp-optsfile=/state/{NET_ID}.opts" in argv
    assert "--dhcp-option=option:router,10.231.1.1" in argv and "--dhcp-option=option:mtu,1450" in argv
    assert "--conf-file=/dev/null" in argv
    assert not any(a.startswith("--dhcp-range") and "static" not in a for a in argv)


def test_a_network_allowed_out_forwards_other_names_and_hands_out_its_domain() -> None:
    dns = DnsSpec(domain="front.meshvisor.internal", upstream=True)
    argv = dnsmasq_argv("mv", spec(), Path("/state"), dns=dns)
    assert "--no-resolv" not in argv and "--local=/meshvisor.internal/" in argv
    assert "--domain=front.meshvisor.internal" in argv
    assert "--dhcp-option=option:domain-search,front.meshvisor.internal" in argv


def test_the_names_file_lists_each_name_with_its_address_and_refuses_what_is_not_a_name() -> None:
    names = {"web.front.meshvisor.internal": "10.231.1.20", "db.front.meshvisor.internal": "10.231.1.10"}
    assert names_file_text(names) == (
        "10.231.1.10 db.front.meshvisor.internal\n10.231.1.20 web.front.meshvisor.internal\n"
    )
    assert names_file_text({}) == ""
    for bad in ({"web front": "10.231.1.20"}, {"-web.front.meshvisor.internal": "10.231.1.20"},
                {"web.front.meshvisor.internal": "10.231.1.300"}):  # fmt: skip
        with pytest.raises(InvalidInput):
            names_file_text(bad)


def test_a_mac_with_routes_gets_option_121_by_its_own_tag_with_the_default_route_last() -> None:
    vm, other = "02:AA:00:00:00:02", "02:aa:00:00:00:01"
    hosts = hosts_file_text(spec(), {vm: "10.231.1.20", other: "10.231.1.10"}, [vm])
    assert hosts == "02:aa:00:00:00:01,10.231.1.10\n02:aa:00:00:00:02,set:r02aa00000002,10.231.1.20\n"
    opts = opts_file_text(spec(), {vm: [("240.0.0.0/16", "10.231.1.21")]})
    assert opts == (
        "tag:r02aa00000002,option:classless-static-route,240.0.0.0/16,10.231.1.21,0.0.0.0/0,10.231.1.1\n"
    )
    assert opts_file_text(spec(), {}) == ""


@pytest.mark.parametrize(
    "routes",
    [
        {"02:aa:00:00:00:02": [("240.0.0.0/33", "10.231.1.21")]},  # no CIDR
        {"02:aa:00:00:00:02": [("240.0.0.0/16", "10.9.9.9")]},  # a next hop off the network
        {"02:aa:00:00:00:02": [("240.0.0.0/16", "nowhere")]},
        {"01:aa:00:00:00:02": [("240.0.0.0/16", "10.231.1.21")]},  # multicast MAC
    ],
)
def test_bad_routes_are_refused(routes: dict[str, list[tuple[str, str]]]) -> None:
    with pytest.raises(InvalidInput):
        opts_file_text(spec(), routes)
