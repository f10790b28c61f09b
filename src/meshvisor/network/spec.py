"""What one host needs to know about one overlay network, checked once when it is made."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from meshvisor.core.errors import InvalidInput

from .names import validate_id

VXLAN_PORT = 4789  # IANA
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
DEFAULT_MTU = 1500 - VXLAN_OVERHEAD
MIN_MTU = 576  # what every IPv4 host must accept; below it DHCP clients and VMs misbehave
MAX_MTU = 9000 - VXLAN_OVERHEAD
VNI_MAX = 2**24 - 1
ALIAS_MAX = 255  # bytes of a link's alias (IFLA_IFALIAS): where a bridge keeps its network's record stamp
MAC_PATTERN = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def parse_ipv4(value: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"invalid {what} {value!r}: not an IPv4 address") from exc


def validate_mac(mac: str, what: str = "MAC address") -> str:
    """A unicast MAC address in lowercase `aa:bb:cc:dd:ee:ff` form."""
    value = mac.lower() if isinstance(mac, str) else ""
    if not MAC_PATTERN.fullmatch(value):
        raise InvalidInput(f"invalid {what} {mac!r}: use six hex pairs separated by ':'")
    if int(value[:2], 16) & 1 or value == "00:00:00:00:00:00":
        raise InvalidInput(f"invalid {what} {mac!r}: not a unicast address")
    return value


def validate_mtu(mtu: int) -> int:
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU:
        raise InvalidInput(f"invalid MTU {mtu!r}: use {MIN_MTU} to {MAX_MTU}")
    return mtu


def gateway_mac(network_id: str) -> str:
    """The bridge's MAC address, the same on every host: the gateway answers ARP with one address wherever the
    workload runs, so traffic to the gateway never crosses the tunnel (an anycast gateway)."""
    digest = hashlib.sha256(f"meshvisor-gateway:{network_id}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))  # locally administered, unicast


@dataclass(frozen=True)
class NetworkSpec:
    """One overlay network as one host sees it.

    `remotes` are the other hosts' tunnel endpoints (the hosts that have a workload on this network); they are
    kept sorted and without duplicates, so two specs with the same set compare equal.
    """

    network_id: str
    vni: int
    cidr: str
    gateway: str
    local_ip: str
    remotes: tuple[str, ...] = field(default=())
    mtu: int = DEFAULT_MTU
    underlay: str | None = None
    stamp: str = ""  # the network's record stamp, kept as the bridge's alias ("" leaves the alias alone)

    def __post_init__(self) -> None:
        validate_id(self.network_id, "network id")
        if isinstance(self.vni, bool) or not isinstance(self.vni, int) or not 1 <= self.vni <= VNI_MAX:
            raise InvalidInput(f"invalid VNI {self.vni!r}: use 1 to {VNI_MAX}")
        try:
            network = ipaddress.IPv4Network(self.cidr, strict=True)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"invalid CIDR {self.cidr!r}: {exc}") from exc
        if network.prefixlen > 30:
            raise InvalidInput(f"invalid CIDR {self.cidr!r}: leaves no room for a gateway and a workload")
        gateway = parse_ipv4(self.gateway, "gateway")
        if gateway not in network or gateway in (network.network_address, network.broadcast_address):
            raise InvalidInput(f"gateway {self.gateway} is not a host address of {self.cidr}")
        local = parse_ipv4(self.local_ip, "local tunnel address")
        remotes: Iterable[str] = self.remotes
        if isinstance(remotes, str):
            raise InvalidInput("remotes must be a list of addresses, not one string")
        parsed = sorted({parse_ipv4(r, "remote tunnel address") for r in remotes})
        if local in parsed:
            raise InvalidInput(f"the local tunnel address {self.local_ip} cannot also be a remote")
        validate_mtu(self.mtu)
        if self.underlay is not None and not (isinstance(self.underlay, str) and 0 < len(self.underlay) <= 15):
            raise InvalidInput(f"invalid underlay device {self.underlay!r}")
        if not isinstance(self.stamp, str) or len(self.stamp.encode()) > ALIAS_MAX:
            raise InvalidInput(f"a network's stamp takes at most {ALIAS_MAX} bytes")
        object.__setattr__(self, "cidr", str(network))
        object.__setattr__(self, "gateway", str(gateway))
        object.__setattr__(self, "local_ip", str(local))
        object.__setattr__(self, "remotes", tuple(str(r) for r in parsed))

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    @property
    def gateway_mac(self) -> str:
        return gateway_mac(self.network_id)
