"""The gratuitous ARP frame, byte by byte (sending it is covered by the integration tests that replace an
instance and keep its address)."""

from __future__ import annotations

import pytest

from meshvisor.network.announce import garp_frame


def test_a_garp_is_a_broadcast_arp_request_for_the_senders_own_address() -> None:
    frame = garp_frame("02:00:0a:d5:6a:0a", "10.213.106.10")
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == bytes.fromhex("02000ad56a0a")
    assert frame[12:14] == b"\x08\x06"  # ARP
    assert frame[14:22] == bytes.fromhex("0001080006040001")  # Ethernet/IPv4, a request
    assert frame[22:28] == bytes.fromhex("02000ad56a0a") and frame[28:32] == bytes([10, 213, 106, 10])
    assert frame[32:38] == b"\x00" * 6 and frame[38:42] == bytes([10, 213, 106, 10])


@pytest.mark.parametrize(("mac", "ip"), [("02:00:0a", "10.0.0.1"), ("02:00:0a:d5:6a:0a", "10.0.0.300")])
def test_bad_addresses_are_refused(mac: str, ip: str) -> None:
    with pytest.raises(ValueError):
        garp_frame(mac, ip)
