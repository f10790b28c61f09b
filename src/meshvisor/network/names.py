"""Names of the links the overlay creates: `<prefix>-<kind>-<id…>`, within the kernel's 15-character limit.

Kinds are one letter so that every valid host prefix (up to 6 characters) leaves room for 6 id digits.
"""

from __future__ import annotations

import re

from meshvisor.core.errors import InvalidInput
from meshvisor.core.names import link_name, validate_prefix

BRIDGE = "b"  # the network's Linux bridge (VMs' taps and containers' veths are its ports)
VXLAN = "x"  # the network's VXLAN device, a port of the bridge
VETH = "v"  # the host end of a container's veth pair
TAP = "t"  # a VM's tap, named by us in its domain XML (libvirt's own `vnetN` names say nothing of whose it is)

KINDS = (BRIDGE, VXLAN, VETH, TAP)
ID_PATTERN = re.compile(r"^[0-9a-f]{6,64}$")


def validate_id(object_id: str, what: str = "id") -> str:
    """Network and attachment ids are lowercase hex (the platform's ids are uuid4 hex), at least 6 digits."""
    if not isinstance(object_id, str) or not ID_PATTERN.fullmatch(object_id):
        raise InvalidInput(f"invalid {what} {object_id!r}: use 6 to 64 lowercase hex digits")
    return object_id


def link_prefix(prefix: str) -> str:
    """What every link of this host prefix starts with."""
    return f"{validate_prefix(prefix)}-"


def bridge_name(prefix: str, network_id: str) -> str:
    """The bridge of a network: what a VM's `<interface type='bridge'>` names as its source."""
    return link_name(validate_prefix(prefix), BRIDGE, validate_id(network_id, "network id"))


def vxlan_name(prefix: str, network_id: str) -> str:
    return link_name(validate_prefix(prefix), VXLAN, validate_id(network_id, "network id"))


def veth_name(prefix: str, attachment_id: str) -> str:
    """The host end of a container attachment's veth pair."""
    return link_name(validate_prefix(prefix), VETH, validate_id(attachment_id, "attachment id"))


def tap_name(prefix: str, attachment_id: str) -> str:
    """The tap of a VM attachment: libvirt creates it under this name (`<target dev=…/>`), or the platform does
    for a hypervisor that cannot (`taps.py`), so the bridge port, the attachment row and an orphan left by a
    crash can all be told apart by name."""
    return link_name(validate_prefix(prefix), TAP, validate_id(attachment_id, "attachment id"))
