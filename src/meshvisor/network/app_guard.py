"""Only the sidecar reaches a meshed container's app: inside the container's namespace, TCP to the app's port is
accepted from loopback (where the sidecar forwards from) and dropped from every other interface, so no caller
can skip mTLS and the service's `allow` list by dialling the app directly."""

from __future__ import annotations

import subprocess

from meshvisor.core.errors import InvalidInput, PermanentError

from .netlink import netns_path


def table_name(prefix: str) -> str:
    return f"{prefix}-app"


def ruleset(prefix: str, app_port: int) -> str:
    """Pure: the nftables script that (re)makes the table, atomically."""
    if isinstance(app_port, bool) or not isinstance(app_port, int) or not 1 <= app_port <= 65535:
        raise InvalidInput(f"invalid app port {app_port!r}")
    table = table_name(prefix)
    return (
        f"table inet {table}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        f"  chain input {{\n"
        f"    type filter hook input priority 0; policy accept;\n"
        f'    iifname "lo" accept\n'
        f"    tcp dport {app_port} drop\n"
        f"  }}\n"
        f"}}\n"
    )


def guard_app_port(prefix: str, netns: str, app_port: int) -> None:
    """Idempotent; `netns` is a namespace name or a path such as /proc/<pid>/ns/net."""
    argv = ["nsenter", f"--net={netns_path(netns)}", "--", "nft", "-f", "-"]
    done = subprocess.run(argv, input=ruleset(prefix, app_port), capture_output=True, text=True)
    if done.returncode != 0:
        raise PermanentError(f"nft refused the app port guard: {done.stderr.strip()}")
