"""The gratuitous ARP sent from inside a workload's namespace: what a neighbour on the other end of its link
receives, and a failure reported as such (the frame itself is checked byte by byte in tests/unit)."""

from __future__ import annotations

import socket
import time

import pytest
from pyroute2 import netns

from meshvisor.network.announce import ETH_P_ARP, announce, garp_frame

from .netns_tools import namespaces, veth_between

pytestmark = pytest.mark.integration
MAC, ADDRESS = "02:00:0a:d5:7a:0a", "10.213.122.10"
RECEIVE_TIMEOUT_S = 30


def test_the_announcement_reaches_the_other_end_of_the_link(test_prefix: str) -> None:
    workload, neighbour = f"{test_prefix}-ga", f"{test_prefix}-gb"
    with namespaces(workload, neighbour):
        veth_between(workload, "eth0", neighbour, "peer0")
        listener = netns.create_socket(
            neighbour, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP), flags=0
        )
        with listener:
            listener.bind(("peer0", 0))
            listener.settimeout(RECEIVE_TIMEOUT_S)
            assert announce(f"/var/run/netns/{workload}", "eth0", MAC, ADDRESS, count=2)
            got = [listener.recv(2048)[:42] for _ in range(2)]
        assert got == [garp_frame(MAC, ADDRESS)] * 2
        # A link that is not there: reported (False), never raised, and at once.
        began = time.monotonic()
        assert not announce(f"/var/run/netns/{workload}", "nothere0", MAC, ADDRESS)
        assert time.monotonic() - began < RECEIVE_TIMEOUT_S
