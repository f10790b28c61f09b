"""Security groups, the driver layer: per-port stateful filtering of bridged traffic with nftables.

Semantics are those of OpenStack/AWS security groups. A port (one workload's link on a bridge: a container's veth
host end or a VM's tap) with at least one group:
- ingress is denied unless a rule of one of its groups allows it;
- egress is allowed, unless its groups have at least one egress rule, then only what those rules allow;
- replies (conntrack's reply direction, and related ICMP errors) always pass, so filtering is stateful;
- ARP and DHCP always pass (a VM still gets its address), but the port may not act as a DHCP server;
- anti-spoofing: it may send only frames from its own MAC, ARP for its own address, IPv4 from its own address
  (0.0.0.0 only for DHCP), and no other ethertype (so VLAN tags or IPv6 cannot carry anything past the checks).
A port with no group is not filtered at all.

Layout, all in one atomic `nft -f` transaction (the same trick as the forwarding guard):

    table bridge <prefix>-sg
      set g_<group>         ifname . ipv4_addr: where a member's frames enter or leave (its port, or the VXLAN
                            device for a member on another host) and its address
      chain prerouting      hook prerouting -300: clears REPLY_MARK on every frame from the prefix's ports
      chain forward         hook forward (filter): iifname vmap → out_<port>, then oifname vmap → in_<port>
      chain out_<port>      the port's anti-spoofing and egress rules; `return` when allowed, so that the
                            destination's in_<port> still runs
      chain in_<port>       the port's ingress rules; accept or drop
    table inet <prefix>-sg
      chain prerouting      hook prerouting (mangle): sets REPLY_MARK on conntrack replies and related packets

Why two families: the bridge family alone sees which bridge port a frame comes from and goes to, but its `ct`
expression needs nf_conntrack_bridge, which many kernels (this project's CI machines among them) do not have.
With br_netfilter (bridge-nf-call-iptables=1), bridged IPv4 packets are tracked by the ordinary IPv4 conntrack,
whose verdict the inet chain copies into one bit of the packet mark before the bridge's forward hook reads it.
`apply_security_groups` refuses to filter a port where br_netfilter is off, instead of silently dropping replies.

Established connections: only the reply direction is accepted on conntrack's word. Every packet in a
connection's original direction is checked against the rules again, so removing a rule stops new connections
and established ones alike, with no conntrack flush (the old connection stalls; nothing resets it).

Known limit: conntrack is shared by all bridges of a host, so two networks with overlapping CIDRs share its
tuples; a packet in one network that exactly matches (addresses and both ports) a connection tracked in the
other counts as a reply. Per-bridge conntrack zones would close that.

Traffic between a workload and its own host (the gateway address on the bridge: DHCP from dnsmasq, the host's
services) passes the bridge's input and output hooks, not forward, and is not filtered here; the forwarding guard
keeps it from being routed anywhere else.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshvisor.core.errors import InvalidInput, PermanentError
from meshvisor.core.names import LINK_NAME_MAX, validate_name, validate_prefix

from .names import BRIDGE, link_prefix
from .netlink import netns_exists, netns_path
from .spec import validate_mac

DIRECTIONS = ("ingress", "egress")
PROTOCOLS = ("tcp", "udp", "icmp", "any")
RULE_FIELDS = ("direction", "protocol", "port_min", "port_max", "cidr", "group")
REPLY_MARK = 0x00200000  # one bit of the packet mark, only ever set on packets entering the prefix's bridges
LINK_PATTERN = re.compile(r"^[a-z0-9-]+$")
ANYWHERE = "0.0.0.0/0"


@dataclass(frozen=True)
class Rule:
    """One allow rule. `port_min`/`port_max` only for tcp/udp (None: all ports); the peer is `cidr` or `group`
    (neither: anywhere)."""

    direction: str
    protocol: str
    port_min: int | None = None
    port_max: int | None = None
    cidr: str | None = None
    group: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The rule as `parse_rule` takes it, without the fields left out (what the API can store and show)."""
        out: dict[str, Any] = {"direction": self.direction, "protocol": self.protocol}
        for name in ("port_min", "port_max", "cidr", "group"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class PortPolicy:
    """One workload port on a bridge: `link` is its name on the bridge (`<prefix>-v-<id>` or a VM's tap),
    `address` its IPv4 address (a prefix length, as `Attachment.address` has it, is ignored)."""

    link: str
    mac: str
    address: str
    groups: tuple[str, ...] = ()


def parse_rule(obj: Mapping[str, Any]) -> Rule:
    """A rule from its JSON form; InvalidInput naming the field for anything wrong. A lone `port_min` is one
    port; `port_max` needs `port_min`."""
    if not isinstance(obj, Mapping):
        raise InvalidInput(f"a security group rule must be an object, not {type(obj).__name__}")
    unknown = sorted(str(key) for key in obj if key not in RULE_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field(s) in security group rule: {', '.join(unknown)}")
    direction = obj.get("direction")
    if direction not in DIRECTIONS:
        raise InvalidInput(f"invalid direction {direction!r}: use {' or '.join(DIRECTIONS)}")
    protocol = obj.get("protocol")
    if protocol not in PROTOCOLS:
        raise InvalidInput(f"invalid protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    port_min, port_max = obj.get("port_min"), obj.get("port_max")
    if port_min is not None or port_max is not None:
        if protocol not in ("tcp", "udp"):
            raise InvalidInput(f"port_min/port_max are only for tcp and udp, not {protocol}")
        if port_min is None:
            raise InvalidInput("port_max needs port_min")
        port_min = _port(port_min, "port_min")
        port_max = port_min if port_max is None else _port(port_max, "port_max")
        if port_min > port_max:
            raise InvalidInput(f"port_min {port_min} is greater than port_max {port_max}")
    cidr, group = obj.get("cidr"), obj.get("group")
    if cidr is not None and group is not None:
        raise InvalidInput("a rule's peer is either cidr or group, not both")
    if cidr is not None:
        cidr = _cidr(cidr)
    if group is not None:
        group = validate_name(group, "group")
    return Rule(direction, protocol, port_min, port_max, cidr, group)


def _port(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidInput(f"invalid {what} {value!r}: use an integer from 1 to 65535")
    return value


def _cidr(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"invalid cidr {value!r}: use an IPv4 network such as 10.0.0.0/8")
    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except ValueError as exc:  # also host bits set, and IPv6
        raise InvalidInput(f"invalid cidr {value!r}: {exc}") from exc


def table_name(prefix: str) -> str:
    return f"{validate_prefix(prefix)}-sg"


def ruleset(
    prefix: str,
    ports: Sequence[PortPolicy],
    groups: Mapping[str, Sequence[Rule]],
    remote_members: Mapping[str, Iterable[tuple[str, str]]] | None = None,
) -> str:
    """The whole nft script for this host's ports (pure; deterministic for the same input, whatever its order).

    `groups` maps every group a port is in to its rules. A rule's peer group matches its members among `ports`
    and `remote_members` (group → (link, address) for members on other hosts, the link being the network's
    VXLAN device there): a member is matched by where its frames cross the bridge and its address, so the same
    address in another network never counts."""
    table = table_name(prefix)
    ports = _checked_ports(prefix, ports, groups)
    members = _members(prefix, ports, groups, remote_members)
    filtered = [port for port in ports if port.groups]
    out = [f"table bridge {table}\n", f"delete table bridge {table}\n", f"table bridge {table} {{\n"]
    out += _member_sets(members)
    out += _hooks(prefix, filtered)
    for port in filtered:
        rules = sorted({rule for group in port.groups for rule in groups[group]}, key=_rule_key)
        out.append(_egress_chain(port, [r for r in rules if r.direction == "egress"]))
        out.append(_ingress_chain(port, [r for r in rules if r.direction == "ingress"]))
    out.append("}\n")
    out.append(_reply_table(prefix, table))
    return "".join(out)


def _members(
    prefix: str,
    ports: Sequence[PortPolicy],
    groups: Mapping[str, Sequence[Rule]],
    remote_members: Mapping[str, Iterable[tuple[str, str]]] | None,
) -> dict[str, set[tuple[str, str]]]:
    """Every group a port is in or a rule names → its members as (link, address): the ports here and the
    members on other hosts."""
    members: dict[str, set[tuple[str, str]]] = {}
    for group, rules in groups.items():
        validate_name(group, "group")
        members.setdefault(group, set())
        for rule in rules:
            if not isinstance(rule, Rule):
                raise InvalidInput(f"rules of group {group!r} must be parsed rules (parse_rule)")
            if rule.group is not None:
                members.setdefault(rule.group, set())
    for port in ports:
        for group in port.groups:
            members[group].add((port.link, _address(port.address)))
    for group, extra in (remote_members or {}).items():
        for link, address in extra:
            _check_link(prefix, link)
            members.setdefault(validate_name(group, "group"), set()).add((link, _address(address)))
    return members


def _member_sets(members: Mapping[str, set[tuple[str, str]]]) -> list[str]:
    """One nft set per group, `g_<group>`, of its members' (link . address)."""
    out = []
    for group in sorted(members):
        elements = ", ".join(f'"{link}" . {address}' for link, address in sorted(members[group], key=_member_key))
        out.append(f"  set {_set_name(group)} {{\n    type ifname . ipv4_addr\n")
        out.append(f"    elements = {{ {elements} }}\n" if elements else "")
        out.append("  }\n")
    return out


def _hooks(prefix: str, filtered: Sequence[PortPolicy]) -> list[str]:
    """The bridge table's base chains: prerouting clears REPLY_MARK, forward jumps to the ports' own chains."""
    out = [
        "  chain prerouting {\n"
        "    type filter hook prerouting priority -300; policy accept;\n"
        f'    iifname "{link_prefix(prefix)}*" meta mark set meta mark & {~REPLY_MARK & 0xFFFFFFFF:#010x}\n'
        "  }\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy accept;\n"
    ]
    if filtered:
        outs = ", ".join(f'"{p.link}" : jump {_chain(p.link, "out")}' for p in filtered)
        ins = ", ".join(f'"{p.link}" : jump {_chain(p.link, "in")}' for p in filtered)
        out.append(f"    iifname vmap {{ {outs} }}\n    oifname vmap {{ {ins} }}\n")
    out.append("  }\n")
    return out


def _reply_table(prefix: str, table: str) -> str:
    """Conntrack's verdict for the bridge chains (see the module's docstring): only on our bridges' packets."""
    bridges = f"{link_prefix(prefix)}{BRIDGE}-*"
    return (
        f"table inet {table}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        "  chain prerouting {\n"
        "    type filter hook prerouting priority mangle; policy accept;\n"
        f'    iifname "{bridges}" ct direction reply meta mark set meta mark | {REPLY_MARK:#010x}\n'
        f'    iifname "{bridges}" ct state related meta mark set meta mark | {REPLY_MARK:#010x}\n'
        "  }\n"
        "}\n"
    )


def _egress_chain(port: PortPolicy, rules: list[Rule]) -> str:
    """Anti-spoofing first (whatever the rules say), then the egress rules if there are any. `return`, never
    `accept`: the destination port's ingress chain must still see the frame."""
    mac, address = validate_mac(port.mac), _address(port.address)
    lines = [
        f"ether saddr != {mac} drop",
        f"arp saddr ether != {mac} drop",
        f"arp saddr ip != {{ 0.0.0.0, {address} }} drop",  # 0.0.0.0: address probes (RFC 5227)
        "ether type arp return",
        "ether type != ip drop",
        "ip saddr 0.0.0.0 udp sport 68 udp dport 67 return",  # DHCP before the workload has its address
        f"ip saddr != {address} drop",
        "udp sport 67 udp dport 68 drop",  # no rogue DHCP server
    ]
    if rules:
        lines += [
            f"meta mark & {REPLY_MARK:#010x} == {REPLY_MARK:#010x} return",
            "udp sport 68 udp dport 67 return",
            *(f"{_match(rule)} return" for rule in rules),
            "drop",
        ]
    return _chain_text(_chain(port.link, "out"), lines)


def _ingress_chain(port: PortPolicy, rules: list[Rule]) -> str:
    lines = [
        "ether type arp accept",
        f"ether type ip meta mark & {REPLY_MARK:#010x} == {REPLY_MARK:#010x} accept",
        "udp sport 67 udp dport 68 accept",  # DHCP offers from a gateway reached through the tunnel
        *(f"{_match(rule)} accept" for rule in rules),
        "drop",
    ]
    return _chain_text(_chain(port.link, "in"), lines)


def _rule_key(rule: Rule) -> tuple[str, str, int, int, str, str]:
    ports = (rule.port_min or 0, rule.port_max or 0)
    return (rule.direction, rule.protocol, *ports, rule.cidr or "", rule.group or "")


def _match(rule: Rule) -> str:
    """The nft match for a rule; the peer is the source for ingress, the destination for egress."""
    side, link = ("saddr", "iifname") if rule.direction == "ingress" else ("daddr", "oifname")
    parts = []
    if rule.group is not None:
        parts.append(f"{link} . ip {side} @{_set_name(rule.group)}")
    elif rule.cidr is not None and rule.cidr != ANYWHERE:
        parts.append(f"ip {side} {rule.cidr}")
    if rule.protocol == "any":
        parts.append("ether type ip")
    else:
        parts.append(f"ip protocol {rule.protocol}")
    if rule.port_min is not None:
        ports = str(rule.port_min) if rule.port_min == rule.port_max else f"{rule.port_min}-{rule.port_max}"
        parts.append(f"{rule.protocol} dport {ports}")
    return " ".join(parts)


def _chain_text(name: str, lines: list[str]) -> str:
    body = "".join(f"    {line}\n" for line in lines)
    return f"  chain {name} {{\n{body}  }}\n"


def _chain(link: str, kind: str) -> str:
    """`in_`/`out_` and the link name with `_` for `-`: never an nft keyword, and distinct for distinct links
    (link names have no `_`)."""
    return f"{kind}_{link.replace('-', '_')}"


def _set_name(group: str) -> str:
    return f"g_{group.replace('-', '_')}"


def _member_key(member: tuple[str, str]) -> tuple[str, ipaddress.IPv4Address]:
    return member[0], ipaddress.IPv4Address(member[1])


def _address(value: str) -> str:
    try:
        address = ipaddress.IPv4Interface(value).ip
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"invalid port address {value!r}: not an IPv4 address") from exc
    if address.is_unspecified or address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        raise InvalidInput(f"invalid port address {value!r}: not a unicast address")
    return str(address)


def _check_link(prefix: str, link: str) -> str:
    if (
        not isinstance(link, str)
        or not link.startswith(f"{prefix}-")
        or len(link) > LINK_NAME_MAX
        or not LINK_PATTERN.fullmatch(link)
    ):
        raise InvalidInput(f"invalid port link {link!r}: not a link name of prefix {prefix!r}")
    return link


def _checked_ports(
    prefix: str, ports: Sequence[PortPolicy], groups: Mapping[str, Sequence[Rule]]
) -> list[PortPolicy]:
    validate_prefix(prefix)
    seen: set[str] = set()
    out = []
    for port in ports:
        if not isinstance(port, PortPolicy):
            raise InvalidInput(f"ports must be PortPolicy objects, not {type(port).__name__}")
        _check_link(prefix, port.link)
        if port.link in seen:
            raise InvalidInput(f"port {port.link} is listed twice")
        seen.add(port.link)
        if isinstance(port.groups, str):
            raise InvalidInput(f"groups of port {port.link} must be a list of names, not one string")
        for group in port.groups:
            validate_name(group, "group")
            if group not in groups:
                raise InvalidInput(f"port {port.link} is in group {group!r}, whose rules were not given")
        validate_mac(port.mac)
        _address(port.address)
        out.append(PortPolicy(port.link, port.mac.lower(), port.address, tuple(sorted(set(port.groups)))))
    return sorted(out, key=lambda port: port.link)


def apply_security_groups(
    prefix: str,
    ports: Sequence[PortPolicy],
    groups: Mapping[str, Sequence[Rule]],
    netns: str | None = None,
    remote_members: Mapping[str, Iterable[tuple[str, str]]] | None = None,
) -> None:
    """Replace the prefix's whole security group state on this host (or in namespace `netns`) in one atomic
    transaction: the next packet sees the new rules. Idempotent."""
    script = ruleset(prefix, ports, groups, remote_members)
    if any(port.groups for port in ports):
        _require_br_netfilter(netns)
    _nft(script, netns)


def remove_security_groups(prefix: str, netns: str | None = None) -> None:
    """No filtering for this prefix any more; absent tables (or a namespace that is gone) are success."""
    table = table_name(prefix)
    if not netns_exists(netns):
        return
    _nft(
        f"table bridge {table}\ndelete table bridge {table}\ntable inet {table}\ndelete table inet {table}\n",
        netns,
    )


def _in_netns(netns: str | None, argv: list[str]) -> list[str]:
    return argv if netns is None else ["nsenter", f"--net={netns_path(netns)}", "--", *argv]


def _require_br_netfilter(netns: str | None) -> None:
    """Without br_netfilter's IPv4 hook on bridged packets no reply would be marked: refuse, rather than drop
    every reply."""
    done = subprocess.run(
        _in_netns(netns, ["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"]), capture_output=True, text=True
    )
    if done.returncode != 0 or done.stdout.strip() != "1":
        raise PermanentError(
            "security groups need br_netfilter with net.bridge.bridge-nf-call-iptables=1 "
            f"({(done.stderr or done.stdout).strip() or 'it is off'})"
        )


def _nft(script: str, netns: str | None) -> None:
    done = subprocess.run(_in_netns(netns, ["nft", "-f", "-"]), input=script, capture_output=True, text=True)
    if done.returncode != 0:
        raise PermanentError(f"nft refused the security groups: {done.stderr.strip()}")
