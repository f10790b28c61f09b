"""The xDS relay of a host that does not run the control plane (`mesh/xds/relay.py`), set up from the settings:
this host's sidecars reach `settings.xds_relay_socket`; it forwards to `MESHVISOR_XDS_ADDRESS` with this host's
certificate, and expects the control plane's host (`MESHVISOR_XDS_HOST`) there.

It runs as a process of its own (`meshvisor xds-relay`), which the agent starts and starts again if it ends: gRPC's
threads must not live in the agent, whose netlink calls into namespaces fork it (a forked child of a process with
gRPC running died with SIGABRT). It ends when the agent that started it does.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

from meshvisor.mesh.ca import DEFAULT_TRUST_DOMAIN, host_dns_name
from meshvisor.mesh.xds import XdsRelay
from meshvisor.platform.hosts import identity
from meshvisor.platform.settings import Settings

log = logging.getLogger(__name__)
RESTART_AFTER_S = 1.0


def run(settings: Settings, parent: int | None = None) -> None:
    """`meshvisor xds-relay`: serve until the parent process (the agent, `parent`: its pid as the agent passed
    it, since an agent killed while the relay starts is no longer its parent when it asks) is gone."""
    if not settings.xds_address:
        raise ValueError("no control plane address (MESHVISOR_XDS_ADDRESS) to relay to")
    parent = os.getppid() if parent is None else parent
    if os.getppid() != parent:
        return
    ident = identity.paths(settings)
    relay = XdsRelay(
        settings.xds_relay_socket,
        settings.xds_address,
        host_dns_name(DEFAULT_TRUST_DOMAIN, settings.xds_host),
        ident.key.read_bytes(),
        ident.cert.read_bytes(),
        ident.bundle.read_bytes(),
    )
    relay.start()
    try:
        while os.getppid() == parent:
            threading.Event().wait(1.0)
    finally:
        relay.stop()


def keep_running(settings: Settings) -> threading.Thread:
    """Start `meshvisor xds-relay` beside the agent, and again whenever it ends; stopped with the agent."""

    def supervise() -> None:
        while True:
            relay = subprocess.Popen(
                [sys.executable, "-m", "meshvisor", "xds-relay", "--host", settings.host_name]
                + ["--parent", str(os.getpid())]
            )
            code = relay.wait()
            log.warning("the xDS relay ended (%s); starting it again", code)
            threading.Event().wait(RESTART_AFTER_S)

    thread = threading.Thread(target=supervise, name="xds-relay-supervisor", daemon=True)
    thread.start()
    return thread
