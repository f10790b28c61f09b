"""Gratuitous ARP: a workload's address announced from its interface once it is set up, so that neighbours that
hold another MAC for that address (an instance replaced with the same address) take the new one at once, not
after their neighbour cache gives up on the old one (which keeps being confirmed while they retry)."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading

from pyroute2 import netns as pyroute2_netns

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806


def garp_frame(mac: str, ip: str) -> bytes:
    """An Ethernet broadcast ARP request from `mac` for its own `ip` (sender and target address alike): every
    Linux neighbour that has an entry for `ip` updates it."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = ipaddress.IPv4Address(ip).packed
    if len(hw) != 6:
        raise ValueError(f"invalid MAC {mac!r}")
    ethernet = b"\xff" * 6 + hw + ETH_P_ARP.to_bytes(2, "big")
    arp = b"\x00\x01\x08\x00\x06\x04\x00\x01" + hw + addr + b"\x00" * 6 + addr
    return ethernet + arp


def announce(namespace_path: str, ifname: str, mac: str, ip: str, count: int = 2) -> bool:
    """Send the gratuitous ARP from `ifname` inside the namespace at `namespace_path` (a thread of its own enters
    the namespace, so no other thread's namespace changes). Best effort: False (and a log line) when it could
    not be sent. Returns once the frames are sent: closing a packet socket waits for an RCU grace period in the
    kernel (`packet_release` → `synchronize_net`, 8-18 ms here, more than all the rest of an attach's netlink
    work), so the thread closes it after the caller has gone on."""
    frame = garp_frame(mac, ip)
    failed: list[BaseException] = []
    sent = threading.Event()

    def send() -> None:
        try:
            pyroute2_netns.setns(namespace_path, flags=0)
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
                raw.bind((ifname, 0))
                for _ in range(count):
                    raw.send(frame)
                sent.set()
        except (OSError, ValueError) as exc:
            if not sent.is_set():
                failed.append(exc)
        finally:
            sent.set()

    threading.Thread(target=send, name=f"garp-{ifname}", daemon=True).start()
    if not sent.wait(5) or failed:
        log.warning("could not announce %s on %s in %s: %s", ip, ifname, namespace_path, failed or "timed out")
        return False
    return True
