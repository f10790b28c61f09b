"""The guard's ruleset with an edge (egress NAT, port forwards): what each rule lets cross, checked by `nft -c`
(the kernel's parser, in check mode: nothing is applied), and values that are not what they say refused."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from meshvisor.core.errors import PermanentError
from meshvisor.network import Edge, PortForward, ensure_guard
from meshvisor.network.guard import ruleset

BRIDGE, OTHER = "zz-b-1", "zz-b-2"
WEB = PortForward("tcp", None, 18080, BRIDGE, "10.99.0.2", 80)
DNS = PortForward("udp", "198.51.100.1", 5353, BRIDGE, "10.99.0.3", 53)


def _nft_accepts(rules: str) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    checked = subprocess.run(["nft", "-c", "-f", "-"], input=rules, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr


def test_without_an_edge_nothing_is_routed_and_there_is_no_nat() -> None:
    rules = ruleset("zz", [BRIDGE, OTHER])
    assert "nat" not in rules and "accept\n" not in rules.split("policy accept;", 1)[1]
    assert f'iifname "{BRIDGE}" oifname != "{BRIDGE}" drop' in rules
    _nft_accepts(rules)


def test_a_nat_network_leaves_masqueraded_through_the_uplink_only_and_its_replies_come_back() -> None:
    rules = ruleset("zz", [BRIDGE, OTHER], Edge(uplink="upx", nat={BRIDGE: "10.99.0.0/24"}))
    accepts = rules.index(f'iifname "{BRIDGE}" oifname "upx" ip saddr 10.99.0.0/24 accept')
    assert accepts < rules.index(f'iifname "{BRIDGE}" oifname != "{BRIDGE}" drop')  # before the drops
    assert 'iifname "upx" oifname "zz-b-1" ip daddr 10.99.0.0/24 ct state established,related accept' in rules
    assert 'oifname "upx" ip saddr 10.99.0.0/24 masquerade' in rules
    assert OTHER not in rules.split("drop", 1)[0] and "dnat" not in rules  # the other network stays closed
    _nft_accepts(rules)


def test_with_no_uplink_a_nat_network_is_not_routed() -> None:
    edge = Edge(uplink=None, nat={BRIDGE: "10.99.0.0/24"})
    assert not edge.routes
    assert "masquerade" not in ruleset("zz", [BRIDGE], edge)


def test_a_forward_is_dnat_from_outside_and_from_this_host_and_lets_only_its_connection_cross() -> None:
    edge = Edge(forwards=[WEB, DNS])
    rules = ruleset("zz", [BRIDGE], edge)
    assert edge.routes
    dnat = "fib daddr type local tcp dport 18080 dnat ip to 10.99.0.2:80"
    assert rules.count(dnat) == 2  # prerouting (outside) and output (this host)
    assert rules.count("ip daddr 198.51.100.1 udp dport 5353 dnat ip to 10.99.0.3:53") == 2
    assert f'oifname "{BRIDGE}" ip daddr 10.99.0.2 tcp dport 80 ct status dnat accept' in rules
    assert f'iifname "{BRIDGE}" ip saddr 10.99.0.3 udp sport 53 ct status dnat accept' in rules
    # this host's loopback reaches the forward on every address: rewritten to the gateway as it leaves the bridge
    assert edge.localnet == [BRIDGE]
    assert rules.count(f'oifname "{BRIDGE}" ip saddr 127.0.0.0/8 ct status dnat masquerade') == 1
    assert Edge(forwards=[DNS]).localnet == [] and "masquerade" not in ruleset(
        "zz", [BRIDGE], Edge(forwards=[DNS])
    )
    _nft_accepts(rules)


@pytest.mark.parametrize(
    "edge",
    [
        Edge(uplink='up"x', nat={BRIDGE: "10.99.0.0/24"}),
        Edge(uplink="a-name-far-too-long", nat={BRIDGE: "10.99.0.0/24"}),
        Edge(uplink="upx", nat={BRIDGE: "10.99.0.0/33"}),
        Edge(uplink="upx", nat={"eth0": "10.99.0.0/24"}),  # not a bridge of the prefix
        Edge(forwards=[PortForward("icmp", None, 1, BRIDGE, "10.99.0.2", 80)]),
        Edge(forwards=[PortForward("tcp", None, 0, BRIDGE, "10.99.0.2", 80)]),
        Edge(forwards=[PortForward("tcp", None, 80, BRIDGE, "10.99.0.2; flush ruleset", 80)]),
        Edge(forwards=[PortForward("tcp", "any", 80, BRIDGE, "10.99.0.2", 80)]),
    ],
)
def test_values_that_are_not_what_they_say_never_reach_nft(edge: Edge) -> None:
    with pytest.raises(PermanentError):
        ensure_guard("zz", [BRIDGE], edge=edge)
