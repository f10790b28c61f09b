"""The xDS relay of a host that does not run the control plane (`mesh/xds/relay.py`), set up from the settings:
this host's sidecars reach `settings.xds_relay_socket`; it forwards to `MESHVISOR_XDS_ADDRESS` with this host's
certificate, and expects the control plane's host (`MESHVISOR_XDS_HOST`) there."""

from __future__ import annotations

from meshvisor.mesh.ca import DEFAULT_TRUST_DOMAIN, host_dns_name
from meshvisor.mesh.xds import XdsRelay
from meshvisor.platform.hosts.identity import HostIdentity
from meshvisor.platform.settings import Settings


def start(settings: Settings, ident: HostIdentity) -> XdsRelay:
    if not settings.xds_address:
        raise ValueError("no control plane address (MESHVISOR_XDS_ADDRESS) to relay to")
    relay = XdsRelay(
        settings.xds_relay_socket,
        settings.xds_address,
        host_dns_name(DEFAULT_TRUST_DOMAIN, settings.xds_host),
        ident.key.read_bytes(),
        ident.cert.read_bytes(),
        ident.bundle.read_bytes(),
    )
    relay.start()
    return relay
