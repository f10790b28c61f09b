"""The pure parts of the tiny VM image builder: the cpio "newc" writer, the module load order, the command line,
the guest's files and the recipe digest over them, the ELF checks."""

from __future__ import annotations

import gzip
import io
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshvisor.core.errors import InvalidInput
from meshvisor.guest import TinyImage, TinyImageError
from meshvisor.guest.build import DEFAULT_CMDLINE, recipe_digest
from meshvisor.guest.debs import is_static_executable, read_busybox
from meshvisor.guest.initramfs import CpioWriter, write_initramfs
from meshvisor.guest.kernel import KernelModule, modinfo, module_load_order
from meshvisor.guest.rootfs import GUEST_FILES, guest_file, guest_files


@dataclass
class Entry:
    ino: int
    mode: int
    nlink: int
    mtime: int
    rdev: tuple[int, int]
    data: bytes


def read_newc(archive: bytes) -> dict[str, Entry]:
    """A small independent reader: name -> entry, checking magic, alignment and the trailer."""
    entries: dict[str, Entry] = {}
    pos = 0
    while True:
        assert archive[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(archive[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, _uid, _gid, nlink, mtime, size, _maj, _min, rmaj, rmin, namesize, check = fields
        assert check == 0
        name_start = pos + 110
        name = archive[name_start : name_start + namesize - 1].decode()
        assert archive[name_start + namesize - 1] == 0
        data_start = (name_start + namesize + 3) & ~3
        data = archive[data_start : data_start + size]
        pos = (data_start + size + 3) & ~3
        if name == "TRAILER!!!":
            assert pos == len(archive)
            return entries
        assert name not in entries
        entries[name] = Entry(ino, mode, nlink, mtime, (rmaj, rmin), data)


def sample_archive() -> bytes:
    buf = io.BytesIO()
    with CpioWriter(buf) as cpio:
        cpio.add_dir("etc", 0o755)
        cpio.add_file("/etc/hello.txt", b"hello, world\n", 0o640)  # leading "/" is dropped
        cpio.add_file("bin/tool", b"#!/bin/sh\necho odd-sized\n", 0o755)  # parent "bin" is added automatically
        cpio.add_symlink("bin/sh", "tool")
        cpio.add_char_device("dev/console", 5, 1)
        cpio.add_file("empty", b"")
    return buf.getvalue()


def test_newc_roundtrip() -> None:
    entries = read_newc(sample_archive())
    assert list(entries) == ["etc", "etc/hello.txt", "bin", "bin/tool", "bin/sh", "dev", "dev/console", "empty"]

    assert stat.S_ISDIR(entries["etc"].mode) and stat.S_IMODE(entries["etc"].mode) == 0o755
    assert entries["etc"].nlink == 2
    hello = entries["etc/hello.txt"]
    assert stat.S_ISREG(hello.mode) and stat.S_IMODE(hello.mode) == 0o640
    assert hello.data == b"hello, world\n"
    assert stat.S_IMODE(entries["bin/tool"].mode) == 0o755
    link = entries["bin/sh"]
    assert stat.S_ISLNK(link.mode) and link.data == b"tool"
    console = entries["dev/console"]
    assert stat.S_ISCHR(console.mode) and console.rdev == (5, 1)
    assert entries["empty"].data == b""
    # Unique inode numbers, fixed mtime: the archive is reproducible.
    assert len({e.ino for e in entries.values()}) == len(entries)
    assert {e.mtime for e in entries.values()} == {0}
    assert sample_archive() == sample_archive()


@pytest.mark.skipif(shutil.which("cpio") is None, reason="no cpio binary")
def test_gnu_cpio_reads_it(tmp_path: Path) -> None:
    archive = sample_archive()
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=archive, capture_output=True, check=True)
    assert listing.stdout.decode().split() == [
        "etc", "etc/hello.txt", "bin", "bin/tool", "bin/sh", "dev", "dev/console", "empty",
    ]  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    # Extract all but the device node (mknod may be refused in a container).
    subprocess.run(
        ["cpio", "-id", "--quiet", "--no-absolute-filenames", "etc", "etc/*", "bin", "bin/*", "empty"],
        input=archive,
        cwd=out,
        check=True,
    )
    assert (out / "etc/hello.txt").read_bytes() == b"hello, world\n"
    assert (out / "bin/sh").is_symlink() and (out / "bin/sh").readlink() == Path("tool")
    assert (out / "bin/sh").read_text() == "#!/bin/sh\necho odd-sized\n"
    assert (out / "empty").stat().st_size == 0


def test_writer_rejects_bad_paths_and_duplicates() -> None:
    with CpioWriter(io.BytesIO()) as cpio:
        for bad in ("", "/", "..", "../x", "a/../../x"):
            with pytest.raises(ValueError):
                cpio.add_file(bad, b"")
        cpio.add_file("a", b"1")
        with pytest.raises(ValueError):
            cpio.add_file("a", b"2")
        with pytest.raises(ValueError):
            cpio.add_symlink("b", "")


def test_module_load_order_puts_dependencies_first() -> None:
    deps = {
        "virtio_net": ["net_failover", "virtio", "virtio_ring"],
        "net_failover": ["failover"],
        "failover": [],
        "virtio": [],
        "virtio_ring": [],
        "virtio_pci": ["virtio_pci_modern_dev", "virtio", "virtio_ring"],
        "virtio_pci_modern_dev": [],
        "ext4": [],
    }
    order = module_load_order(["virtio_pci", "virtio_net", "ext4"], lambda name: deps[name])
    assert order == [
        "virtio_pci_modern_dev", "virtio", "virtio_ring", "virtio_pci",
        "failover", "net_failover", "virtio_net",
        "ext4",
    ]  # fmt: skip
    with pytest.raises(TinyImageError, match="cycle"):
        module_load_order(["a"], lambda name: {"a": ["b"], "b": ["a"]}[name])


def test_initramfs_layout(tmp_path: Path) -> None:
    spill = tmp_path / "m.ko"
    spill.write_bytes(b"\x7fELF fake module")
    module = KernelModule("virtio", "lib/modules/6.1.0-1-cloud-amd64/kernel/drivers/virtio/virtio.ko", (), spill)
    raw = io.BytesIO()
    write_initramfs(raw, b"\x7fELF fake busybox", "6.1.0-1-cloud-amd64", [module], compress=True)
    entries = read_newc(gzip.decompress(raw.getvalue()))
    again = io.BytesIO()
    write_initramfs(again, b"\x7fELF fake busybox", "6.1.0-1-cloud-amd64", [module], compress=True)
    assert again.getvalue() == raw.getvalue()  # compressed too, the archive is reproducible

    init = entries["init"]
    assert stat.S_IMODE(init.mode) == 0o755 and init.data.startswith(b"#!/bin/sh\n")
    assert b"meshvisor-tiny: init reached (hostname $NAME)" in init.data
    assert entries["bin/sh"].data == b"busybox" and entries["sbin/init"].data == b"/bin/busybox"
    assert entries["dev/console"].rdev == (5, 1)
    assert stat.S_IMODE(entries["etc/acpi/PWRF/00000080"].mode) == 0o755
    assert entries["etc/meshvisor/modules"].data == f"/{module.path}\n".encode()
    assert entries[module.path].data == b"\x7fELF fake module"
    assert b"::shutdown:/etc/rc.shutdown" in entries["etc/inittab"].data
    for file in GUEST_FILES:  # every file of guest/files/, as shipped, where the table says
        assert entries[file.path].data == guest_file(file.source)
        assert stat.S_IMODE(entries[file.path].mode) == file.mode


def test_kernel_cmdline() -> None:
    image = TinyImage(Path("k"), Path("i"), "6.1", DEFAULT_CMDLINE)
    assert image.kernel_cmdline() == DEFAULT_CMDLINE
    assert image.kernel_cmdline("web-1", "10.0.0.2/24", "10.0.0.1") == (
        f"{DEFAULT_CMDLINE} mv.hostname=web-1 mv.ip=10.0.0.2/24 mv.gw=10.0.0.1"
    )
    for bad in ({"hostname": "a b"}, {"hostname": "-x"}, {"ip": "10.0.0.2"}, {"gw": "x"}):
        with pytest.raises(InvalidInput):
            image.kernel_cmdline(**bad)


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox")
def test_the_guest_scripts_parse() -> None:
    scripts = [f.source for f in GUEST_FILES if guest_file(f.source).startswith(b"#!/bin/sh\n")]
    assert {"init", "rc.shutdown", "acpi-power-button", "udhcpc.script"} <= set(scripts)
    for name in scripts:
        done = subprocess.run(["busybox", "sh", "-n"], input=guest_file(name), capture_output=True, check=False)
        assert done.returncode == 0, (name, done.stderr)


def test_recipe_digest_follows_every_guest_file() -> None:
    files = guest_files()
    assert set(files) == {f.source for f in GUEST_FILES}
    digest = recipe_digest(files)
    assert recipe_digest(dict(files)) == digest
    for name in files:
        assert recipe_digest({**files, name: files[name] + b"\n"}) != digest, name


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox")
def test_busybox_must_be_static(tmp_path: Path) -> None:
    static_busybox = Path(shutil.which("busybox") or "").resolve().read_bytes()
    assert is_static_executable(static_busybox)
    assert not is_static_executable(Path(sys.executable).resolve().read_bytes())  # the interpreter links to libc
    with pytest.raises(TinyImageError, match="not an ELF"):
        is_static_executable(b"#!/bin/sh\n")


@pytest.mark.skipif(shutil.which("busybox") is None or shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_busybox_is_read_from_its_package(tmp_path: Path) -> None:
    def package(name: str, files: dict[str, bytes]) -> Path:
        root = tmp_path / name
        (root / "DEBIAN").mkdir(parents=True)
        control = (
            f"Package: {name}\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@example.org>\nDescription: t\n"
        )
        (root / "DEBIAN/control").write_text(control)
        for path, data in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
        deb = tmp_path / f"{name}.deb"
        subprocess.run(["dpkg-deb", "-Zxz", "-z1", "-b", str(root), str(deb)], check=True, capture_output=True)
        return deb

    static_busybox = Path(shutil.which("busybox") or "").resolve().read_bytes()
    assert read_busybox(package("good", {"bin/busybox": static_busybox, "etc/x": b"x"})) == static_busybox
    dynamic = Path(sys.executable).resolve().read_bytes()
    with pytest.raises(TinyImageError, match="not statically linked"):
        read_busybox(package("dynamic", {"bin/busybox": dynamic}))
    with pytest.raises(TinyImageError, match="has no bin/busybox"):
        read_busybox(package("empty", {"usr/share/doc/x": b"x"}))
    (tmp_path / "broken.deb").write_bytes(b"!<arch>\nnot really")
    with pytest.raises(TinyImageError):
        read_busybox(tmp_path / "broken.deb")


def test_modinfo_errors() -> None:
    with pytest.raises(TinyImageError, match="not an ELF"):
        modinfo(b"not a module")
    with pytest.raises(TinyImageError, match="without a .modinfo"):
        modinfo(Path(sys.executable).resolve().read_bytes())
