"""Security group rules and the nft ruleset built from them, without touching the host (the `nft -c` checks run in
a throwaway network namespace)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import pytest

from meshvisor.core.errors import InvalidInput
from meshvisor.network import (
    PortPolicy,
    Rule,
    apply_security_groups,
    parse_rule,
    remove_security_groups,
    security_groups_ruleset,
)

PX = "tsg"
A = PortPolicy("tsg-v-aaaaaa", "02:00:00:00:00:0a", "10.241.9.10/24", ("web",))
B = PortPolicy("tsg-t-bbbbbb", "02:00:00:00:00:0b", "10.241.9.11", ("db", "web"))
C = PortPolicy("tsg-v-cccccc", "02:00:00:00:00:0c", "10.241.9.12")  # no group: not filtered
WEB = [parse_rule({"direction": "ingress", "protocol": "tcp", "port_min": 80, "cidr": "10.241.0.0/16"})]
DB = [
    parse_rule({"direction": "ingress", "protocol": "tcp", "port_min": 5432, "group": "web"}),
    parse_rule({"direction": "egress", "protocol": "udp", "port_min": 53, "port_max": 54}),
    parse_rule({"direction": "egress", "protocol": "icmp", "group": "db"}),
]
GROUPS = {"web": WEB, "db": DB}


# -- parse_rule ---------------------------------------------------------------------------------------------------
def test_parse_rule_normalises_and_round_trips() -> None:
    rule = parse_rule({"direction": "ingress", "protocol": "tcp", "port_min": 8080})
    assert rule == Rule("ingress", "tcp", 8080, 8080)  # a lone port_min is one port
    assert parse_rule(rule.as_dict()) == rule
    assert parse_rule({"direction": "egress", "protocol": "any"}) == Rule("egress", "any")
    assert parse_rule({"direction": "ingress", "protocol": "udp", "cidr": "10.0.0.0/8"}).cidr == "10.0.0.0/8"
    assert parse_rule({"direction": "ingress", "protocol": "icmp", "group": "web-1"}).group == "web-1"
    full = {"direction": "egress", "protocol": "udp", "port_min": 1, "port_max": 65535, "cidr": "0.0.0.0/0"}
    assert parse_rule(full).as_dict() == full


TCP = {"direction": "ingress", "protocol": "tcp"}
BAD_RULES: list[tuple[Any, str]] = [
    (["ingress"], "object"),
    ({**TCP, "ports": 80}, "ports"),
    ({**TCP, "description": "x"}, "description"),
    ({"protocol": "tcp"}, "direction"),
    ({**TCP, "direction": "inbound"}, "direction"),
    ({**TCP, "direction": None}, "direction"),
    ({"direction": "ingress"}, "protocol"),
    ({**TCP, "protocol": "sctp"}, "protocol"),
    ({**TCP, "protocol": "TCP"}, "protocol"),
    ({**TCP, "protocol": "icmp", "port_min": 1}, "port_min/port_max"),
    ({**TCP, "protocol": "any", "port_min": 1, "port_max": 2}, "port_min/port_max"),
    ({**TCP, "protocol": "any", "port_max": 2}, "port_min/port_max"),
    ({**TCP, "port_max": 80}, "port_max needs port_min"),
    ({**TCP, "port_min": 0}, "port_min"),
    ({**TCP, "port_min": 65536}, "port_min"),
    ({**TCP, "port_min": -1}, "port_min"),
    ({**TCP, "port_min": 80, "port_max": 65536}, "port_max"),
    ({**TCP, "port_min": 81, "port_max": 80}, "port_min 81 is greater than port_max 80"),
    ({**TCP, "port_min": "80"}, "port_min"),
    ({**TCP, "port_min": 80.0}, "port_min"),
    ({**TCP, "port_min": True}, "port_min"),
    ({**TCP, "port_min": 80, "port_max": False}, "port_max"),
    ({**TCP, "cidr": "10.0.0.300/8"}, "cidr"),
    ({**TCP, "cidr": "10.0.0.1/8"}, "cidr"),  # host bits set
    ({**TCP, "cidr": "fd00::/8"}, "cidr"),
    ({**TCP, "cidr": "10.0.0.0/33"}, "cidr"),
    ({**TCP, "cidr": 10}, "cidr"),
    ({**TCP, "cidr": ""}, "cidr"),
    ({**TCP, "cidr": "10.0.0.0/8", "group": "web"}, "cidr or group"),
    ({**TCP, "group": "Web"}, "group"),
    ({**TCP, "group": "a_b"}, "group"),
    ({**TCP, "group": ""}, "group"),
    ({**TCP, "group": "x" * 41}, "group"),
    ({**TCP, "group": 5}, "group"),
    ({**TCP, "group": 'a"b'}, "group"),
]


@pytest.mark.parametrize(("obj", "names"), BAD_RULES, ids=[repr(obj) for obj, _ in BAD_RULES])
def test_parse_rule_refuses_bad_input_naming_the_field(obj: Any, names: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_rule(obj)
    assert names in caught.value.message


# -- the ruleset --------------------------------------------------------------------------------------------------
def chain(text: str, name: str) -> list[str]:
    found = re.search(rf"^  chain {name} {{\n(.*?)^  }}", text, re.M | re.S)
    assert found, f"no chain {name}"
    return [line.strip() for line in found.group(1).splitlines()]


def test_ruleset_layout() -> None:
    text = security_groups_ruleset(PX, [A, B, C], GROUPS)
    # Atomic replacement of both tables, like the forwarding guard.
    assert text.startswith("table bridge tsg-sg\ndelete table bridge tsg-sg\ntable bridge tsg-sg {\n")
    assert "table inet tsg-sg\ndelete table inet tsg-sg\ntable inet tsg-sg {\n" in text
    names = re.findall(r"^  chain (\S+) \{", text, re.M)
    assert names == [
        "prerouting", "forward", "out_tsg_t_bbbbbb", "in_tsg_t_bbbbbb", "out_tsg_v_aaaaaa", "in_tsg_v_aaaaaa",
        "prerouting",
    ]  # fmt: skip
    forward = chain(text, "forward")
    assert forward[0] == "type filter hook forward priority filter; policy accept;"
    assert forward[1] == (
        'iifname vmap { "tsg-t-bbbbbb" : jump out_tsg_t_bbbbbb, "tsg-v-aaaaaa" : jump out_tsg_v_aaaaaa }'
    )
    assert forward[2].startswith('oifname vmap { "tsg-t-bbbbbb" : jump in_tsg_t_bbbbbb')
    assert "tsg-v-cccccc" not in text  # no group, no filtering
    # Group peers are sets of (port, address); the port's prefix length is ignored.
    assert 'elements = { "tsg-t-bbbbbb" . 10.241.9.11, "tsg-v-aaaaaa" . 10.241.9.10 }' in text
    assert "set g_db {" in text and "set g_web {" in text
    assert 'iifname "tsg-b-*" ct direction reply meta mark set meta mark | 0x00200000' in text


def test_ingress_is_default_deny_and_egress_only_restricted_by_egress_rules() -> None:
    text = security_groups_ruleset(PX, [A, B, C], GROUPS)
    in_a = chain(text, "in_tsg_v_aaaaaa")
    assert in_a[0] == "ether type arp accept" and in_a[-1] == "drop"
    assert "ip saddr 10.241.0.0/16 ip protocol tcp tcp dport 80 accept" in in_a
    out_a = chain(text, "out_tsg_v_aaaaaa")  # web has no egress rule: only anti-spoofing
    assert out_a[0] == "ether saddr != 02:00:00:00:00:0a drop"
    assert "ip saddr != 10.241.9.10 drop" in out_a and out_a[-1] != "drop"
    out_b = chain(text, "out_tsg_t_bbbbbb")  # db has egress rules: they are all that goes out
    assert out_b[-1] == "drop"
    assert "ip protocol udp udp dport 53-54 return" in out_b
    assert "oifname . ip daddr @g_db ip protocol icmp return" in out_b
    assert "iifname . ip saddr @g_web ip protocol tcp tcp dport 5432 accept" in chain(text, "in_tsg_t_bbbbbb")
    assert not any("accept" in line for line in out_b)  # the destination's ingress chain must still run


def test_ruleset_is_deterministic_and_pure() -> None:
    first = security_groups_ruleset(PX, [A, B, C], GROUPS)
    shuffled = {"db": list(reversed(DB)) + DB, "web": WEB}
    b2 = PortPolicy(B.link, B.mac.upper(), B.address, ("web", "db", "web"))
    assert security_groups_ruleset(PX, [C, b2, A], shuffled) == first
    assert security_groups_ruleset("tsg2", [], {}) != security_groups_ruleset("tsg", [], {})
    empty = security_groups_ruleset(PX, [C], {})
    assert "vmap" not in empty and "table bridge tsg-sg {" in empty


def test_remote_members_are_matched_on_their_vxlan_device() -> None:
    text = security_groups_ruleset(
        PX, [A], {"web": WEB}, remote_members={"web": [("tsg-x-dddddd", "10.241.9.99")]}
    )
    assert '"tsg-x-dddddd" . 10.241.9.99' in text
    with pytest.raises(InvalidInput):
        security_groups_ruleset(PX, [A], {"web": WEB}, remote_members={"web": [("eth0", "10.241.9.99")]})


BAD_INPUTS: list[tuple[str, list[Any], dict[str, Any]]] = [
    ("TSG", [A], GROUPS),  # bad prefix
    ("t-sg", [A], GROUPS),
    (PX, [PortPolicy("other-v-aaaaaa", A.mac, A.address, ("web",))], GROUPS),  # not our link
    (PX, [PortPolicy('tsg-v-a"a', A.mac, A.address, ("web",))], GROUPS),
    (PX, [PortPolicy("tsg-v-aaaaaaaaaaaa", A.mac, A.address, ("web",))], GROUPS),  # longer than a link name
    (PX, [PortPolicy("tsg-v-a a", A.mac, A.address, ("web",))], GROUPS),
    (PX, [PortPolicy(A.link, "01:00:00:00:00:01", A.address, ("web",))], GROUPS),  # multicast MAC
    (PX, [PortPolicy(A.link, A.mac, "10.241.9.300", ("web",))], GROUPS),
    (PX, [PortPolicy(A.link, A.mac, "0.0.0.0", ("web",))], GROUPS),
    (PX, [PortPolicy(A.link, A.mac, A.address, ("nope",))], GROUPS),  # a group whose rules were not given
    (PX, [PortPolicy(A.link, A.mac, A.address, "web")], GROUPS),  # type: ignore[arg-type]
    (PX, [A, A], GROUPS),  # the same port twice
    (PX, [A], {"web": [{"direction": "ingress", "protocol": "any"}]}),  # not parsed
    (PX, [A], {"Web": WEB, "web": WEB}),
]


@pytest.mark.parametrize(("prefix", "ports", "groups"), BAD_INPUTS)
def test_ruleset_refuses_odd_input(prefix: str, ports: list[Any], groups: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        security_groups_ruleset(prefix, ports, groups)
    with pytest.raises(InvalidInput):  # before running anything
        apply_security_groups(prefix, ports, groups, netns="/nonexistent/netns")


def test_remove_in_a_namespace_that_is_gone_is_success() -> None:
    remove_security_groups(PX, netns="/nonexistent/netns")
    with pytest.raises(InvalidInput):
        remove_security_groups("Bad")


needs_nft = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
    reason="nft -c needs root and nft",
)


@needs_nft
@pytest.mark.parametrize(
    "ports",
    [[], [C], [A], [A, B, C]],
    ids=["nothing", "unfiltered", "one", "all"],
)
def test_the_kernel_accepts_the_generated_ruleset(ports: list[PortPolicy]) -> None:
    """`nft -c` asks the kernel too (the transaction is aborted); in a namespace of its own, gone afterwards."""
    extra = {"web": [("tsg-x-dddddd", "10.241.9.99")]}
    text = security_groups_ruleset(PX, ports, GROUPS, remote_members=extra)
    done = subprocess.run(["unshare", "--net", "nft", "-c", "-f", "-"], input=text, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
