"""Only the sidecar reaches a meshed container's app: inside the container's namespace, TCP to the app's port is
accepted from loopback (where the sidecar forwards from) and dropped from every other interface, so no caller
can skip mTLS and the service's `allow` list by dialling the app directly. And the app's own connections to
services' virtual addresses are redirected to its sidecar's transparent listener, which picks the service by
the original destination (`Transparent`)."""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass

from meshvisor.core.errors import InvalidInput, PermanentError

from .netlink import netns_path


def table_name(prefix: str) -> str:
    return f"{prefix}-app"


@dataclass(frozen=True)
class Transparent:
    """TCP the workload opens to `services` (the services' virtual addresses) goes to 127.0.0.1:`port`, its
    sidecar's transparent listener."""

    services: str
    port: int


def ruleset(prefix: str, app_port: int, transparent: Transparent | None = None) -> str:
    """Pure: the nftables script that (re)makes the table, atomically."""
    for port in (app_port, *([transparent.port] if transparent else [])):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise InvalidInput(f"invalid port {port!r}")
    table = table_name(prefix)
    redirect = ""
    if transparent is not None:
        services = ipaddress.IPv4Network(transparent.services)
        redirect = (
            f"  chain transparent {{\n"
            f"    type nat hook output priority -100; policy accept;\n"
            f"    ip daddr {services} meta l4proto tcp redirect to :{transparent.port}\n"
            f"  }}\n"
        )
    return (
        f"table inet {table}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        f"  chain input {{\n"
        f"    type filter hook input priority 0; policy accept;\n"
        f'    iifname "lo" accept\n'
        f"    tcp dport {app_port} drop\n"
        f"  }}\n"
        f"{redirect}"
        f"}}\n"
    )


def guard_app_port(prefix: str, netns: str, app_port: int, transparent: Transparent | None = None) -> None:
    """Idempotent; `netns` is a namespace name or a path such as /proc/<pid>/ns/net."""
    argv = ["nsenter", f"--net={netns_path(netns)}", "--", "nft", "-f", "-"]
    done = subprocess.run(argv, input=ruleset(prefix, app_port, transparent), capture_output=True, text=True)
    if done.returncode != 0:
        raise PermanentError(f"nft refused the app port guard: {done.stderr.strip()}")
