"""Storage values without touching a disk: specs, ids, snapshot names, header and mountinfo parsing."""

from __future__ import annotations

import struct

import pytest

from meshvisor.core.errors import InvalidInput
from meshvisor.storage import (
    MAX_SIZE_MB,
    VolumeSpec,
    validate_format,
    validate_size_mb,
    validate_snapshot_name,
    validate_volume_id,
)
from meshvisor.storage.checks import can_grow_online
from meshvisor.storage.headers import parse_ext_size, parse_qcow2_header
from meshvisor.storage.mounts import parse_mountinfo

VID = "0123abcd"


def test_good_specs() -> None:
    assert VolumeSpec(VID, 1, "qcow2", None).size_bytes == 1024 * 1024
    assert VolumeSpec(VID, MAX_SIZE_MB, "raw", "ext4").filesystem == "ext4"
    assert VolumeSpec("a" * 64, 10, "qcow2").filesystem is None


@pytest.mark.parametrize("size", [0, -1, -1024, MAX_SIZE_MB + 1, 2**62, True, 1.5, "10"])
def test_bad_sizes(size: object) -> None:
    with pytest.raises(InvalidInput, match="size"):
        VolumeSpec(VID, size, "qcow2", None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        validate_size_mb(size)  # type: ignore[arg-type]


@pytest.mark.parametrize("format", ["", "vmdk", "QCOW2", "raw ", "../raw"])
def test_unknown_formats(format: str) -> None:
    with pytest.raises(InvalidInput, match="format"):
        VolumeSpec(VID, 10, format, None)
    with pytest.raises(InvalidInput):
        validate_format(format)


@pytest.mark.parametrize("filesystem", [None, "xfs", "", "EXT4"])
def test_raw_needs_a_known_filesystem(filesystem: str | None) -> None:
    with pytest.raises(InvalidInput, match="filesystem"):
        VolumeSpec(VID, 10, "raw", filesystem)


def test_qcow2_has_no_filesystem() -> None:
    with pytest.raises(InvalidInput, match="no filesystem"):
        VolumeSpec(VID, 10, "qcow2", "ext4")


@pytest.mark.parametrize(
    "volume_id",
    ["", "abc12", "ABCDEF01", "0123abcg", "../0123abcd", "/etc/passwd", "0123abcd/..", "a" * 65, "0123 abcd", "..",
     "0123abcd.raw", 123],
)  # fmt: skip
def test_bad_volume_ids(volume_id: object) -> None:
    with pytest.raises(InvalidInput, match="volume id"):
        validate_volume_id(volume_id)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        VolumeSpec(volume_id, 10, "qcow2")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["", "..", ".", "a/b", "../x", "/abs", "Snap", "snap 1", "snap.1", "a" * 41, "snap\n"]
)
def test_bad_snapshot_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="snapshot name"):
        validate_snapshot_name(name)


def test_good_snapshot_names() -> None:
    for name in ("s1", "before-upgrade", "a" * 40):
        assert validate_snapshot_name(name) == name


def test_qcow2_header() -> None:
    backing = b"/images/debian.qcow2"
    header = bytearray(b"QFI\xfb" + struct.pack(">IQIIQ", 3, 104, len(backing), 16, 5 * 2**20))
    header += bytes(104 - len(header)) + backing
    parsed = parse_qcow2_header(bytes(header))
    assert parsed is not None
    assert parsed.size_bytes == 5 * 2**20
    assert parsed.backing_file == "/images/debian.qcow2"
    no_backing = parse_qcow2_header(b"QFI\xfb" + struct.pack(">IQIIQ", 3, 0, 0, 16, 2**20))
    assert no_backing is not None and no_backing.backing_file is None
    assert parse_qcow2_header(b"not a qcow2 header at all, just some bytes") is None


def test_ext_superblock() -> None:
    sb = bytearray(1024)
    struct.pack_into("<I", sb, 4, 16384)  # blocks (low 32 bits)
    struct.pack_into("<I", sb, 24, 2)  # 1024 << 2 = 4 KiB blocks
    struct.pack_into("<H", sb, 56, 0xEF53)
    assert parse_ext_size(bytes(sb)) == 64 * 2**20
    struct.pack_into("<I", sb, 0x60, 0x80)  # 64bit: the high half counts too
    struct.pack_into("<I", sb, 0x150, 1)
    assert parse_ext_size(bytes(sb)) == (2**32 + 16384) * 4096
    assert parse_ext_size(bytes(1024)) is None


def test_mountinfo() -> None:
    text = (
        "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "90 22 7:0 / /var/tmp/p\\040q/mnt ro,nosuid,nodev,relatime shared:50 - ext4 /dev/loop0 rw\n"
        "91 22 7:1 / /srv/x rw,nosuid - ext4 /dev/loop1 rw\n"
    )
    entries = parse_mountinfo(text)
    assert [str(e.mountpoint) for e in entries] == ["/", "/var/tmp/p q/mnt", "/srv/x"]
    assert [e.source for e in entries] == ["/dev/vda", "/dev/loop0", "/dev/loop1"]
    assert [e.read_only for e in entries] == [False, True, False]


def test_can_grow_online_reads_cap_sys_resource() -> None:
    assert can_grow_online("Name:\tx\nCapEff:\t000001ffffffffff\n")
    assert not can_grow_online("Name:\tx\nCapEff:\t000001fffeffffff\n")
    assert not can_grow_online("Name:\tx\n")
