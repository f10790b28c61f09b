"""Overlay networks, the driver layer: VXLAN between hosts, a Linux bridge per network on each host, veth pairs
into containers, the bridge's name for VMs, and dnsmasq per network (static DHCP for VMs, DNS for all). Netlink
through pyroute2.

Public surface:
- `NetworkSpec`, `ensure_network`, `delete_network`, `remotes_of` (overlay.py, spec.py)
- `attach_container`, `attach_namespace`, `detach`, `Attachment` (attach.py)
- `bridge_name`, `vxlan_name`, `veth_name`, `tap_name` (names.py): a VM's `<interface type='bridge'>` names
  `bridge_name` as its source and `tap_name` as its target
- `ensure_tap`, `remove_tap` (taps.py): a VM's tap made by the platform, for a hypervisor that cannot make taps
- `DhcpServer`, `DnsSpec`, `dns_name`, `service_dns_name`, `DNS_DOMAIN`, `stop_stale` (dhcp.py): a network's
  dnsmasq (the static leases of VMs, the names of every instance and service)
- `ensure_guard`, `remove_guard`, `Edge`, `PortForward`, `interface_setting`, `ensure_interface_settings`
  (guard.py): nothing is routed into or out of the bridges but what the edge lets cross (egress NAT, port forwards)
- `default_uplink`, `local_addresses`, `port_free` (uplink.py): what NAT and forwards are checked against
- `list_links`, `LinkInfo`, `link_names` (netlink.py): every link of a host prefix (in full, or its name only),
  for orphan clean-up
- `ensure_namespace`, `delete_namespace`, `namespaces` (namespaces.py): named namespaces of a host prefix
- `guard_app_port`, `redirect_arriving` (app_guard.py): a meshed container's app is reached only through its
  sidecar, and its connections to services' virtual addresses go to its sidecar (`Transparent`); a VM's, as
  they arrive in its gateway namespace; `guard_vm_app_ports`, `VmAppPort`: a meshed VM's app port takes TCP
  from its sidecar only
- `Rule`, `parse_rule`, `PortPolicy`, `apply_security_groups`, `remove_security_groups`,
  `security_groups_ruleset` (security_groups.py): stateful per-port filtering on the bridges

Addresses (IPAM), which hosts are remotes of a network, and the records of networks and attachments belong to
the platform layer; this package only makes one host look like what it is told.
"""

from .app_guard import Transparent, VmAppPort, guard_app_port, guard_vm_app_ports, redirect_arriving
from .app_guard import vm_ruleset as vm_app_ruleset
from .attach import Attachment, attach_container, attach_namespace, detach
from .dhcp import DNS_DOMAIN, SERVICES_LABEL, DhcpServer, DnsSpec, dns_name, service_dns_name, stop_stale
from .guard import Edge, PortForward, ensure_guard, ensure_interface_settings, interface_setting, remove_guard
from .names import bridge_name, tap_name, veth_name, vxlan_name
from .namespaces import delete_namespace, ensure_namespace, namespaces
from .netlink import LinkInfo, link_names, list_links, remove_links
from .overlay import NetworkLinks, delete_network, ensure_network, remotes_of
from .security_groups import PortPolicy, Rule, apply_security_groups, parse_rule, remove_security_groups
from .security_groups import ruleset as security_groups_ruleset
from .spec import DEFAULT_MTU, VXLAN_PORT, NetworkSpec, gateway_mac
from .taps import ensure_tap, remove_tap
from .uplink import default_uplink, local_addresses, port_free

__all__ = [
    "DEFAULT_MTU",
    "VXLAN_PORT",
    "Attachment",
    "DNS_DOMAIN",
    "DhcpServer",
    "DnsSpec",
    "dns_name",
    "service_dns_name",
    "SERVICES_LABEL",
    "Edge",
    "PortForward",
    "default_uplink",
    "ensure_interface_settings",
    "interface_setting",
    "local_addresses",
    "port_free",
    "stop_stale",
    "LinkInfo",
    "NetworkLinks",
    "NetworkSpec",
    "PortPolicy",
    "Rule",
    "apply_security_groups",
    "attach_container",
    "Transparent",
    "guard_app_port",
    "redirect_arriving",
    "guard_vm_app_ports",
    "VmAppPort",
    "vm_app_ruleset",
    "delete_namespace",
    "ensure_namespace",
    "namespaces",
    "attach_namespace",
    "bridge_name",
    "delete_network",
    "detach",
    "ensure_guard",
    "ensure_network",
    "ensure_tap",
    "gateway_mac",
    "list_links",
    "link_names",
    "parse_rule",
    "remotes_of",
    "remove_guard",
    "remove_links",
    "remove_security_groups",
    "remove_tap",
    "security_groups_ruleset",
    "tap_name",
    "veth_name",
    "vxlan_name",
]
