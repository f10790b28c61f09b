"""The forwarding guard: nothing is routed into or out of the platform's bridges, except what the edge lets cross.

Workloads talk inside their own network (bridged, never routed) and with this host. The host may forward IP
traffic for other reasons (dockerd turns forwarding on), so without this table a workload could reach another
network, or leave the machine, through the gateway address on its bridge.

The edge (`Edge`) is what may cross, all in the same table so that one file replaces it atomically:

    workload ── bridge ──(forward: new from a `nat` network's CIDR, replies back)── uplink ── outside
                  │         postrouting: masquerade what leaves the uplink from a `nat` network
                  ▲
    outside / this host ── prerouting and output: a forward's listen address and port DNATed to the instance
                           forward: that DNATed connection, both ways, and nothing else
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from meshvisor.core.errors import PermanentError

from .names import link_prefix
from .namespaces import in_namespace
from .netlink import netns_exists, netns_path

PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class PortForward:
    """A listen address (None: every address of the host) and port DNATed to `address:port` on `bridge`."""

    protocol: str
    listen_address: str | None
    listen_port: int
    bridge: str
    address: str
    port: int


@dataclass(frozen=True)
class Edge:
    """What may cross the guard on this host: `nat` maps a bridge to the CIDR masqueraded out of `uplink`."""

    uplink: str | None = None
    nat: Mapping[str, str] = field(default_factory=dict)
    forwards: Sequence[PortForward] = ()

    @property
    def localnet(self) -> list[str]:
        """The bridges with a forward on every address of the host, 127.0.0.1 included."""
        return sorted({fw.bridge for fw in self.forwards if fw.listen_address is None})

    @property
    def routes(self) -> bool:
        """True when something is routed at all (the uplink and those bridges then forward)."""
        return bool(self.forwards) or (bool(self.nat) and self.uplink is not None)


def table_name(prefix: str) -> str:
    return f"{prefix}-guard"


def ruleset(prefix: str, bridges: Sequence[str], edge: Edge | None = None) -> str:
    """Bridged frames pass (with br_netfilter they reach this hook with the same bridge in and out); what the edge
    allows is accepted; anything else routed into or out of one of our bridges is dropped."""
    edge = edge or Edge()
    table = table_name(prefix)
    drops = "".join(
        f'    iifname "{bridge}" oifname != "{bridge}" drop\n    oifname "{bridge}" iifname != "{bridge}" drop\n'
        for bridge in sorted(bridges)
    )
    # `table` first so that `delete` always has something to delete: the whole file applies atomically.
    return (
        f"table inet {table}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        f"  chain forward {{\n"
        f"    type filter hook forward priority -10; policy accept;\n"
        f"{_edge_accepts(edge)}{drops}"
        f"  }}\n"
        f"{_nat_chains(edge)}"
        f"}}\n"
    )


def _edge_accepts(edge: Edge) -> str:
    rules = []
    if edge.uplink is not None:
        for bridge, cidr in sorted(edge.nat.items()):
            rules.append(f'iifname "{bridge}" oifname "{edge.uplink}" ip saddr {cidr} accept')
            rules.append(
                f'iifname "{edge.uplink}" oifname "{bridge}" ip daddr {cidr} ct state established,related accept'
            )
    for fw in edge.forwards:
        rules.append(
            f'oifname "{fw.bridge}" ip daddr {fw.address} {fw.protocol} dport {fw.port} ct status dnat accept'
        )
        rules.append(
            f'iifname "{fw.bridge}" ip saddr {fw.address} {fw.protocol} sport {fw.port} ct status dnat accept'
        )
    return "".join(f"    {rule}\n" for rule in rules)


def _nat_chains(edge: Edge) -> str:
    dnat = "".join(f"    {_dnat(fw)}\n" for fw in edge.forwards)
    masquerade = "".join(
        f'    oifname "{edge.uplink}" ip saddr {cidr} masquerade\n'
        for _, cidr in (sorted(edge.nat.items()) if edge.uplink is not None else [])
    )
    # this host's own 127.0.0.1 reaches a forward too (the bridge lets it leave: `route_localnet`); the workload
    # answers its gateway, so the source is rewritten to it
    masquerade += "".join(
        f'    oifname "{bridge}" ip saddr 127.0.0.0/8 ct status dnat masquerade\n' for bridge in edge.localnet
    )
    chains = ""
    if dnat:  # from outside (prerouting) and from this host itself (output)
        chains += (
            f"  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{dnat}  }}\n"
        )
        chains += f"  chain output {{\n    type nat hook output priority -100; policy accept;\n{dnat}  }}\n"
    if masquerade:
        chains += (
            f"  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n"
            f"{masquerade}  }}\n"
        )
    return chains


def _dnat(fw: PortForward) -> str:
    to = "fib daddr type local" if fw.listen_address is None else f"ip daddr {fw.listen_address}"
    return f"{to} {fw.protocol} dport {fw.listen_port} dnat ip to {fw.address}:{fw.port}"


def ensure_guard(prefix: str, bridges: Sequence[str], netns: str | None = None, edge: Edge | None = None) -> None:
    """The guard for exactly these bridges (all of this prefix's networks on this host, or in `netns`), and what
    the edge lets cross them."""
    edge = edge or Edge()
    for bridge in [*bridges, *edge.nat, *(fw.bridge for fw in edge.forwards)]:
        if not bridge.startswith(link_prefix(prefix)) or '"' in bridge:
            raise PermanentError(f"{bridge!r} is not a bridge of prefix {prefix!r}")
    _check_edge(edge)
    _nft(ruleset(prefix, bridges, edge), netns)


def _check_edge(edge: Edge) -> None:
    """Every value that goes into the ruleset is what it says (an interface name, a CIDR, an address, a port)."""
    try:
        _check_values(edge)
    except ValueError as exc:
        raise PermanentError(f"not an edge of the guard: {exc}") from None


def _check_values(edge: Edge) -> None:
    if edge.uplink is not None and (not edge.uplink or len(edge.uplink) > 15 or '"' in edge.uplink):
        raise PermanentError(f"{edge.uplink!r} is not an interface name")
    for cidr in edge.nat.values():
        ipaddress.IPv4Network(cidr)
    for fw in edge.forwards:
        if fw.protocol not in PROTOCOLS or not all(0 < p < 65536 for p in (fw.listen_port, fw.port)):
            raise PermanentError(f"not a forward: {fw}")
        ipaddress.IPv4Address(fw.address)
        if fw.listen_address is not None:
            ipaddress.IPv4Address(fw.listen_address)


SETTINGS = ("forwarding", "route_localnet")  # per interface, IPv4


def interface_setting(device: str, name: str, netns: str | None = None) -> bool | None:
    """An IPv4 setting of `device` (None: no such device): `forwarding` (packets that come in through it may be
    routed), `route_localnet` (packets from 127.0.0.0/8 may leave through it)."""
    path = _setting_path(device, name)

    def read() -> bool | None:
        try:
            with open(path) as f:
                return f.read().strip() == "1"
        except FileNotFoundError:
            return None

    return in_namespace(netns, read)


def ensure_interface_settings(wanted: Mapping[str, Mapping[str, bool]], netns: str | None = None) -> None:
    """Each device's settings (`SETTINGS`) as `wanted` has them, writing only what differs; a device that is not
    there is left alone. Idempotent."""
    paths = [(_setting_path(device, name), on) for device, found in wanted.items() for name, on in found.items()]

    def apply() -> None:
        for path, on in paths:
            try:
                with open(path) as f:
                    if (f.read().strip() == "1") == on:
                        continue
                with open(path, "w") as f:
                    f.write("1" if on else "0")
            except FileNotFoundError:
                continue

    in_namespace(netns, apply)


def _setting_path(device: str, name: str) -> str:
    if not device or "/" in device or device in (".", "..") or len(device) > 15 or name not in SETTINGS:
        raise PermanentError(f"no setting {name!r} of an interface {device!r}")
    return f"/proc/sys/net/ipv4/conf/{device}/{name}"


def remove_guard(prefix: str, netns: str | None = None) -> None:
    if not netns_exists(netns):
        return
    table = table_name(prefix)
    _nft(f"table inet {table}\ndelete table inet {table}\n", netns)


def _nft(script: str, netns: str | None) -> None:
    argv = ["nft", "-f", "-"]
    if netns is not None:
        argv = ["nsenter", f"--net={netns_path(netns)}", "--", *argv]
    done = subprocess.run(argv, input=script, capture_output=True, text=True)
    if done.returncode != 0:
        raise PermanentError(f"nft refused the forwarding guard: {done.stderr.strip()}")
