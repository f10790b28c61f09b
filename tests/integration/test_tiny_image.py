"""The built-in `tiny` guest under real libvirt/QEMU (TCG): it boots, formats and mounts its data disk, serves its
page, keeps its data, and powers off cleanly both on the ACPI power button (`virsh shutdown`) and on `poweroff`
typed on the serial console.

libvirt is driven through `virsh` (argument lists only). The packages are cached across runs in
/var/cache/meshvisor-test-deb (or $MESHVISOR_TEST_DEB_CACHE).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pytest

from meshvisor.guest import TinyImage, build_tiny

pytestmark = pytest.mark.integration

DEB_CACHE = Path(os.environ.get("MESHVISOR_TEST_DEB_CACHE", "/var/cache/meshvisor-test-deb"))
VIRSH = ["virsh", "-c", "qemu:///system"]
HOSTNAME = "tiny-test"


def virsh(*args: str, check: bool = True, timeout: float = 180) -> str:
    proc = subprocess.run([*VIRSH, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def domain_xml(name: str, image: TinyImage, cmdline: str, disk: Path, console_log: Path) -> str:
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(image.kernel))}</kernel>
    <initrd>{escape(str(image.initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file={quoteattr(str(disk))}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'>
      <log file={quoteattr(str(console_log))} append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


class Guest:
    """One libvirt domain of the tiny image, its console log and (once opened) its serial console pty."""

    def __init__(self, name: str, console_log: Path) -> None:
        self.name = name
        self.log = console_log
        self.started = 0.0
        self._pty: int | None = None

    def start(self) -> float:
        """Start the domain; returns how long `virsh start` took."""
        self.close_console()
        self.log.unlink(missing_ok=True)
        t0 = time.monotonic()
        virsh("start", self.name)
        self.started = time.monotonic()
        return self.started - t0

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, needle: str, timeout: float, after: str | None = None) -> float:
        """Seconds from the end of `virsh start` until `needle` is in the console log (after `after`, if given)."""
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            text = self.text()
            if after is not None:
                i = text.find(after)
                text = text[i + len(after) :] if i >= 0 else ""
            if needle in text:
                return time.monotonic() - self.started
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{needle!r} not on the console of {self.name} after {timeout}s:\n{self.text()}"
                )
            time.sleep(0.05)

    def type(self, line: str) -> None:
        """Type a line on the serial console (the guest's respawning root shell)."""
        if self._pty is None:
            path = virsh("ttyconsole", self.name)
            self._pty = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            tty.setraw(self._pty)
        os.write(self._pty, line.encode() + b"\r")

    def _drain(self) -> None:
        # What the guest prints also reaches the pty we hold open: read it so that QEMU never blocks on it.
        # The pty is non-blocking: read until it has nothing (no select(), which fails on descriptors >= 1024).
        while self._pty is not None:
            try:
                if not os.read(self._pty, 65536):
                    break
            except OSError:  # BlockingIOError: nothing more for now
                break

    def close_console(self) -> None:
        if self._pty is not None:
            os.close(self._pty)
            self._pty = None

    def state(self) -> str:
        return virsh("domstate", self.name, check=False)

    def wait_state(self, want: str, timeout: float) -> float:
        t0 = time.monotonic()
        while (state := self.state()) != want:
            self._drain()
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"{self.name} still {state!r} after {timeout}s:\n{self.text()}")
            time.sleep(0.1)
        return time.monotonic() - t0


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # World-readable, not under /tmp/pytest-of-root (0700): QEMU runs as its own user and must reach the files.
    path = Path(tempfile.mkdtemp(prefix="meshvisor-tiny-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def image(workdir: Path) -> TinyImage:
    if shutil.which("virsh") is None or shutil.which("qemu-img") is None:
        pytest.skip("virsh and qemu-img are needed")
    t0 = time.monotonic()
    built = build_tiny(workdir / "image", DEB_CACHE)
    print(f"\nbuild_tiny: {time.monotonic() - t0:.1f}s, kernel {built.kernel_version}")
    assert built.kernel.stat().st_size > 1_000_000 and built.initrd.stat().st_size > 100_000
    # A second call finds the image up to date and returns it without rebuilding.
    mtime = built.initrd.stat().st_mtime_ns
    assert build_tiny(workdir / "image", DEB_CACHE) == built
    assert built.initrd.stat().st_mtime_ns == mtime
    return built


@pytest.fixture
def guest(image: TinyImage, workdir: Path, test_prefix: str) -> Iterator[Guest]:
    name = f"{test_prefix}-vm-test-tiny"
    disk = workdir / "data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    console_log = workdir / "console.log"
    xml = workdir / "domain.xml"
    xml.write_text(domain_xml(name, image, image.kernel_cmdline(hostname=HOSTNAME), disk, console_log))
    g = Guest(name, console_log)
    try:
        virsh("define", str(xml))
        yield g
    finally:
        g.close_console()
        virsh("destroy", name, check=False)
        virsh("undefine", name, check=False)
        disk.unlink(missing_ok=True)


def test_tiny_guest_boots_keeps_data_and_powers_off(guest: Guest) -> None:
    # Boot 1: blank disk -> formatted and mounted; the page is served; the ACPI power button powers off.
    start_s = guest.start()
    banner = guest.wait_for(f"meshvisor-tiny: init reached (hostname {HOSTNAME})", 30)
    ready = guest.wait_for("meshvisor-tiny: ready", 30)
    print(f"\nboot 1: virsh start {start_s:.1f}s, banner {banner:.2f}s, ready {ready:.2f}s after start")
    assert "meshvisor-tiny: data disk mounted (/dev/vda on /data, freshly formatted)" in guest.text()
    assert "insmod" not in guest.text()  # no module failed to load

    guest.wait_for("# ", 10, after="meshvisor-tiny: ready")  # the console shell's prompt
    guest.type("wget -qO- http://127.0.0.1/; echo kept-$((6*7)) >/data/marker; sync")
    guest.wait_for(f"<title>{HOSTNAME}</title>", 10)

    t0 = time.monotonic()
    virsh("shutdown", guest.name)  # libvirt's default mode for QEMU: the ACPI power button
    off = guest.wait_state("shut off", 20)
    print(f"boot 1: virsh shutdown -> shut off in {time.monotonic() - t0:.2f}s")
    text = guest.text()
    assert "meshvisor-tiny: power button pressed" in text
    assert "meshvisor-tiny: data disk unmounted" in text
    assert "reboot: Power down" in text
    assert off < 20

    # Boot 2: the file system (and the file) are still there; `poweroff` typed on the console powers off.
    start_s = guest.start()
    ready = guest.wait_for("meshvisor-tiny: ready", 30)
    print(f"boot 2: virsh start {start_s:.1f}s, ready {ready:.2f}s after start")
    assert "meshvisor-tiny: data disk mounted (/dev/vda on /data)" in guest.text()
    assert "formatting" not in guest.text()
    guest.wait_for("# ", 10, after="meshvisor-tiny: ready")
    guest.type("cat /data/marker")
    guest.wait_for("kept-42", 10)
    guest.type("cd /data; poweroff")  # a shell sitting in /data must not keep it from being unmounted
    off = guest.wait_state("shut off", 20)
    print(f"boot 2: poweroff -> shut off in {off:.2f}s")
    text = guest.text()
    assert "meshvisor-tiny: data disk unmounted" in text
    assert "power button" not in text
