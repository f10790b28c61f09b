"""Only the sidecar reaches a meshed container's app: inside the container's namespace, TCP to the app's port is
accepted from loopback (where the sidecar forwards from) and dropped from every other interface, so no caller
can skip mTLS and the service's `allow` list by dialling the app directly. And the app's own connections to
services' virtual addresses are redirected to its sidecar's transparent listener, which picks the service by
the original destination (`Transparent`). A VM's sidecar sits in a gateway namespace of its own, which the guest
routes the services' addresses to: there they are redirected as they arrive (`redirect_arriving`); and its app
port is guarded on the host's bridges, where a frame leaves for the VM's tap: TCP to the app's port from any
address but its sidecar's is dropped (`guard_vm_app_ports`, one table for the host's meshed VMs)."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from meshvisor.core.errors import InvalidInput, PermanentError
from meshvisor.core.names import validate_prefix

from .netlink import netns_exists, netns_path
from .spec import parse_ipv4

LINK = re.compile(r"[a-z0-9-]{1,15}")


def table_name(prefix: str) -> str:
    return f"{prefix}-app"


def vm_table_name(prefix: str) -> str:
    return f"{validate_prefix(prefix)}-vmapp"


@dataclass(frozen=True, order=True)
class VmAppPort:
    """A meshed VM's app port: reached through `link` (its tap on its sidecar's network) only from `sidecar`."""

    link: str
    port: int
    sidecar: str


@dataclass(frozen=True)
class Transparent:
    """TCP to `services` (the services' virtual addresses) goes to the sidecar's transparent listener on `port`:
    opened by the workload in this namespace (a container), or `arriving` from it (a VM's gateway namespace)."""

    services: str
    port: int
    arriving: bool = False


def ruleset(prefix: str, app_port: int | None, transparent: Transparent | None = None) -> str:
    """Pure: the nftables script that (re)makes the table, atomically (no app port: no guard)."""
    for port in ([] if app_port is None else [app_port]) + ([transparent.port] if transparent else []):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise InvalidInput(f"invalid port {port!r}")
    table = table_name(prefix)
    guard = redirect = ""
    if app_port is not None:
        guard = (
            f"  chain input {{\n"
            f"    type filter hook input priority 0; policy accept;\n"
            f'    iifname "lo" accept\n'
            f"    tcp dport {app_port} drop\n"
            f"  }}\n"
        )
    if transparent is not None:
        services = ipaddress.IPv4Network(transparent.services)
        hook = "prerouting" if transparent.arriving else "output"
        redirect = (
            f"  chain transparent {{\n"
            f"    type nat hook {hook} priority -100; policy accept;\n"
            f"    ip daddr {services} meta l4proto tcp redirect to :{transparent.port}\n"
            f"  }}\n"
        )
    return f"table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n{guard}{redirect}}}\n"


def guard_app_port(prefix: str, netns: str, app_port: int, transparent: Transparent | None = None) -> None:
    """Idempotent; `netns` is a namespace name or a path such as /proc/<pid>/ns/net."""
    _apply(netns, ruleset(prefix, app_port, transparent))


def redirect_arriving(prefix: str, netns: str, services: str, port: int) -> None:
    """In a VM's gateway namespace: TCP arriving for `services` goes to the sidecar's `port`. Idempotent."""
    _apply(netns, ruleset(prefix, None, Transparent(services, port, arriving=True)))


def _apply(netns: str | None, script: str) -> None:
    argv = ["nft", "-f", "-"]
    if netns is not None:
        argv = ["nsenter", f"--net={netns_path(netns)}", "--", *argv]
    done = subprocess.run(argv, input=script, capture_output=True, text=True)
    if done.returncode != 0:
        raise PermanentError(f"nft refused the app port guard: {done.stderr.strip()}")


def vm_ruleset(prefix: str, guarded: Sequence[VmAppPort]) -> str:
    """Pure: the bridge table that (re)makes the guards of this host's meshed VMs, atomically."""
    table = vm_table_name(prefix)
    rules = []
    for guard in sorted(set(guarded)):
        if not guard.link.startswith(f"{prefix}-") or not LINK.fullmatch(guard.link):
            raise InvalidInput(f"invalid link {guard.link!r}: not a link of prefix {prefix!r}")
        if isinstance(guard.port, bool) or not isinstance(guard.port, int) or not 1 <= guard.port <= 65535:
            raise InvalidInput(f"invalid port {guard.port!r}")
        sidecar = parse_ipv4(guard.sidecar, "sidecar address")
        rules.append(f'    oifname "{guard.link}" tcp dport {guard.port} ip saddr != {sidecar} drop\n')
    return (
        f"table bridge {table}\ndelete table bridge {table}\ntable bridge {table} {{\n"
        f"  chain forward {{\n    type filter hook forward priority filter - 10; policy accept;\n"
        f"{''.join(rules)}  }}\n}}\n"
    )


def guard_vm_app_ports(prefix: str, guarded: Sequence[VmAppPort], netns: str | None = None) -> None:
    """Exactly `guarded` on this host (in `netns`, a host simulated in a namespace): none removes the table.
    Idempotent; a namespace that is gone is success."""
    if not netns_exists(netns):
        return
    table = vm_table_name(prefix)
    script = vm_ruleset(prefix, guarded) if guarded else f"table bridge {table}\ndelete table bridge {table}\n"
    _apply(netns, script)
