"""The forwarding guard: nothing is routed into or out of the platform's bridges.

Workloads talk inside their own network (bridged, never routed) and with this host. The host may forward IP
traffic for other reasons (dockerd turns forwarding on), so without this table a workload could reach another
network, or leave the machine, through the gateway address on its bridge.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from meshvisor.core.errors import PermanentError

from .names import link_prefix
from .netlink import netns_exists, netns_path


def table_name(prefix: str) -> str:
    return f"{prefix}-guard"


def ruleset(prefix: str, bridges: Sequence[str]) -> str:
    """Bridged frames pass (with br_netfilter they reach this hook with the same bridge in and out); anything
    routed into or out of one of our bridges is dropped."""
    table = table_name(prefix)
    rules = "".join(
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
        f"{rules}"
        f"  }}\n"
        f"}}\n"
    )


def ensure_guard(prefix: str, bridges: Sequence[str], netns: str | None = None) -> None:
    """The guard for exactly these bridges (all of this prefix's networks on this host, or in `netns`)."""
    for bridge in bridges:
        if not bridge.startswith(link_prefix(prefix)) or '"' in bridge:
            raise PermanentError(f"{bridge!r} is not a bridge of prefix {prefix!r}")
    _nft(ruleset(prefix, bridges), netns)


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
