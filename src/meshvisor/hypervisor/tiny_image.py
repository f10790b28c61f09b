"""The built-in `tiny` VM guest: a stock Debian cloud kernel and a busybox initramfs that boot in seconds (TCG).

`build_tiny(out_dir)` downloads two Debian packages with `apt-get download` (cached in `cache_dir`), takes the
kernel, the few kernel modules the guest needs and a static busybox out of them, and writes

    out_dir/vmlinuz             the kernel (direct boot: libvirt <os><kernel>)
    out_dir/initramfs.cpio.gz   the initramfs (cpio "newc", gzip), written here in pure Python

The guest is configured on the kernel command line (see `TinyImage.kernel_cmdline`):

    mv.hostname=NAME            host name (default "tiny"); also served at http://GUEST/ by busybox httpd
    mv.ip=ADDR/PREFIX           static IPv4 address for eth0; without it eth0 (if any) runs DHCP (udhcpc)
    mv.gw=GW                    default gateway for the static address

Every other NIC, including one hot-plugged while the guest runs, is brought up and runs DHCP (a watch polls
/sys/class/net every second); only eth0 takes the default route and the resolver from its lease. Each lease is
printed as `meshvisor-tiny: ethN ADDR/MASK (dhcp bound)`; a NIC that is unplugged as `meshvisor-tiny: ethN
removed`.

It prints `meshvisor-tiny: ...` lines on the serial console (ttyS0): `init reached (hostname NAME)` first,
`data disk mounted ...` when /dev/vda (formatted with mke2fs if blank) is on /data, then `ready`.

Every other virtio disk (and /dev/vda too when it has a serial: a disk with a serial is never the data disk) is a
volume: mounted, never formatted, read-only when the device is (/sys/block/vdX/ro), at /mnt/SERIAL
(/sys/block/vdX/serial), or /mnt/vdX without a serial: `meshvisor-tiny: disk vdX mounted at /mnt/NAME` (with
` (read-only)`), or `disk vdX has no file system to mount`. The disks the VM boots with are mounted before
`ready`; the watch mounts hot-plugged ones within a second and, when one is unplugged, unmounts it lazily and
prints `meshvisor-tiny: disk vdX removed`. httpd serves them too: http://GUEST/mnt/NAME/FILE, and
http://GUEST/cgi-bin/call?ADDR:PORT/PATH makes the guest itself GET http://ADDR:PORT/PATH (its mesh sidecar's
upstreams, for instance) and answers with the whole response. The ACPI power
button (`virsh shutdown`) and `poweroff` typed on the console both shut it down cleanly: busybox acpid runs
/etc/acpi/PWRF/00000080, which asks busybox init to power off; init runs /etc/rc.shutdown (sync, unmount /data),
kills every process and powers the machine off (the domain then needs `<features><acpi/></features>`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import posixpath
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol

from meshvisor.core.errors import InvalidInput, PermanentError

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
DEFAULT_CMDLINE = "console=ttyS0 quiet panic=-1"
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initramfs.cpio.gz"
STAMP_FILE = "tiny-image.json"

# What the guest needs from the kernel. Each one is loaded (with its dependencies, in order) when the kernel
# ships it as a module, and skipped when it is built in (the Debian cloud kernel builds in ext4, the 8250 serial
# console, ACPI and devtmpfs, and has virtio, the ACPI button and evdev as modules).
GUEST_MODULES = (
    "virtio_pci",  # the virtio PCI transport
    "virtio_net",  # eth0
    "virtio_blk",  # /dev/vda
    "virtio_console",  # virtio serial ports (the console itself is the built-in 8250 ttyS0)
    "ext4",  # /data (ext4 also mounts ext2, which busybox mke2fs makes)
    "button",  # the ACPI power button, an input device ...
    "evdev",  # ... that busybox acpid reads through /dev/input/event*
)
# Kernel options the guest cannot do without (built in, never modules).
REQUIRED_CONFIG = ("BLK_DEV_INITRD", "RD_GZIP", "DEVTMPFS", "SERIAL_8250_CONSOLE", "ACPI", "INPUT", "TMPFS")

_KERNEL_DEB = re.compile(r"^linux-image-(\d[^_]*-cloud-amd64)_[^_]+_amd64\.deb$")
_BUSYBOX_DEB = re.compile(r"^busybox-static_[^_]+_amd64\.deb$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$")
_IPV4_CIDR = re.compile(r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


class _Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class TinyImageError(PermanentError):
    """The tiny image could not be built (package download, unexpected package contents, missing module)."""


@dataclass(frozen=True)
class TinyImage:
    kernel: Path  # vmlinuz
    initrd: Path  # initramfs (cpio newc, gzip)
    kernel_version: str
    cmdline: str  # default kernel command line

    def kernel_cmdline(self, hostname: str | None = None, ip: str | None = None, gw: str | None = None) -> str:
        """The default command line plus the guest's settings (`mv.hostname`, `mv.ip`, `mv.gw`)."""
        args = [self.cmdline]
        if hostname is not None:
            if not _HOSTNAME.match(hostname):
                raise InvalidInput(f"invalid guest host name {hostname!r}")
            args.append(f"mv.hostname={hostname}")
        if ip is not None:
            if not _IPV4_CIDR.match(ip):
                raise InvalidInput(f"invalid guest address {ip!r} (want ADDR/PREFIX)")
            args.append(f"mv.ip={ip}")
        if gw is not None:
            if not _IPV4.match(gw):
                raise InvalidInput(f"invalid guest gateway {gw!r}")
            args.append(f"mv.gw={gw}")
        return " ".join(args)


# --- the guest's scripts ---------------------------------------------------------------------------------------

INIT_SCRIPT = r"""#!/bin/sh
# /init of the meshvisor "tiny" guest. It is PID 1 until it hands over to busybox init (which respawns the
# console shell and runs /etc/rc.shutdown on poweroff).
export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root
/bin/busybox mount -t proc -o nosuid,nodev,noexec proc /proc
/bin/busybox mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
/bin/busybox mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
/bin/busybox --install -s
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts -o mode=0620,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run

# A power-off request (busybox `poweroff` signals PID 1) that arrives before busybox init runs is kept for later.
POWEROFF=
trap 'POWEROFF=1' USR2 TERM

NAME=tiny ADDR= GW=
set -f
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    mv.hostname=*) NAME=${arg#mv.hostname=} ;;
    mv.ip=*) ADDR=${arg#mv.ip=} ;;
    mv.gw=*) GW=${arg#mv.gw=} ;;
  esac
done
set +f
case "$NAME" in ''|-*|*[!A-Za-z0-9.-]*) NAME=tiny ;; esac
hostname "$NAME"
echo "$NAME" >/etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$NAME" >/etc/hosts
echo "meshvisor-tiny: init reached (hostname $NAME)"

while read -r ko; do
  [ -n "$ko" ] || continue
  insmod "$ko" || echo "meshvisor-tiny: insmod $ko failed"
done </etc/meshvisor/modules

# --- network ---
# eth0 as the command line says; every other NIC, and any NIC plugged in later (a hot-plug), asks DHCP. The watch
# below polls /sys/class/net: /run/nics/<name> holds the pid of its udhcpc ("static" for a static eth0), and a
# NIC that goes away (a hot-unplug) loses both, so one plugged in again under the same name starts over.
ip link set lo up
mkdir -p /run/nics
dhcp() {
  ip link set "$1" up
  udhcpc -f -i "$1" -s /etc/udhcpc/default.script -x "hostname:$NAME" >/dev/null 2>&1 &
  echo $! >"/run/nics/$1"
}
if [ -e /sys/class/net/eth0 ]; then
  if [ -n "$ADDR" ]; then
    ip link set eth0 up
    ip addr add "$ADDR" dev eth0 && echo "meshvisor-tiny: eth0 $ADDR (static)"
    [ -z "$GW" ] || ip route add default via "$GW" dev eth0
    echo static >/run/nics/eth0
  else
    dhcp eth0
  fi
fi
# --- disks ---
# /dev/vda without a serial is the VM's scratch data disk (below). Every other virtio disk, and any disk plugged
# in later, is a volume: mounted (never formatted; read-only when the device is) at /mnt/<serial>, or /mnt/<vdX>
# without one. /run/disks/<vdX> holds "<sysfs inode> <where it is mounted>" ("-": nowhere), so a disk that goes
# away, or comes back under the same name, is noticed by the watch below.
mkdir -p /run/disks /mnt
disk_id() { stat -L -c %i "/sys/block/$1" 2>/dev/null; }
mount_disk() {
  dev=$1
  i=0
  while [ ! -b "/dev/$dev" ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
  name=$(cat "/sys/block/$dev/serial" 2>/dev/null)
  case "$name" in ''|*[!A-Za-z0-9_-]*) name=$dev ;; esac
  grep -q " /mnt/$name " /proc/mounts && name=$dev  # a second disk with one serial: by its own name
  opts=noatime how=
  [ "$(cat "/sys/block/$dev/ro" 2>/dev/null)" = 1 ] && opts=ro,noatime how=" (read-only)"
  mkdir -p "/mnt/$name"
  # A read-only ext3/4 whose journal needs replaying mounts only without it (noload).
  if mount -o "$opts" "/dev/$dev" "/mnt/$name" 2>/dev/null \
    || { [ -n "$how" ] && mount -t ext4 -o "$opts,noload" "/dev/$dev" "/mnt/$name" 2>/dev/null; }; then
    echo "$(disk_id "$dev") /mnt/$name" >"/run/disks/$dev"
    echo "meshvisor-tiny: disk $dev mounted at /mnt/$name$how"
  else
    rmdir "/mnt/$name" 2>/dev/null
    echo "$(disk_id "$dev") -" >"/run/disks/$dev"
    echo "meshvisor-tiny: disk $dev has no file system to mount"
  fi
}
watch_disks() {
  for state in /run/disks/*; do
    dev=${state##*/}
    [ -e "$state" ] || continue
    read -r id where <"$state"
    [ -e "/sys/block/$dev" ] && [ "$(disk_id "$dev")" = "$id" ] && continue
    rm -f "$state"
    case "$where" in /mnt/*) umount -l "$where" 2>/dev/null; rmdir "$where" 2>/dev/null ;; esac
    echo "meshvisor-tiny: disk $dev removed"
  done
  for dev in /sys/block/vd*; do
    dev=${dev##*/}
    [ -e "/sys/block/$dev" ] && [ ! -e "/run/disks/$dev" ] && mount_disk "$dev"
  done
}

watch() {
  while :; do
    for dev in /sys/class/net/eth*; do
      nic=${dev##*/}
      if [ -e "$dev" ] && [ ! -e "/run/nics/$nic" ]; then
        echo "meshvisor-tiny: $nic appeared"
        dhcp "$nic"
      fi
    done
    for state in /run/nics/*; do
      nic=${state##*/}
      [ -e "$state" ] && [ ! -e "/sys/class/net/$nic" ] || continue
      pid=$(cat "$state")
      rm -f "$state"
      case "$pid" in
        ''|*[!0-9]*) ;;
        *) grep -q udhcpc "/proc/$pid/cmdline" 2>/dev/null && kill "$pid" ;;
      esac
      echo "meshvisor-tiny: $nic removed"
    done
    [ ! -e /run/disks.boot ] || watch_disks  # once the boot's own disks are done
    sleep 1
  done
}
watch </dev/null >/dev/console 2>&1 &

# --- data disk ---
i=0
while [ -e /sys/block/vda ] && [ ! -b /dev/vda ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
if [ -b /dev/vda ] && [ -z "$(cat /sys/block/vda/serial 2>/dev/null)" ]; then
  echo "$(disk_id vda) /data" >/run/disks/vda
  mkdir -p /data
  how=
  # Blank (the first MiB is all zeros: no partition table, no superblock): make an ext2 file system.
  if [ "$(dd if=/dev/vda bs=65536 count=16 2>/dev/null | tr -d '\000' | wc -c)" -eq 0 ]; then
    echo "meshvisor-tiny: formatting blank data disk /dev/vda"
    mke2fs -L data /dev/vda >/dev/null 2>&1 && how=", freshly formatted"
  fi
  if mount -o noatime /dev/vda /data; then
    echo "meshvisor-tiny: data disk mounted (/dev/vda on /data$how)"
  else
    echo "meshvisor-tiny: data disk /dev/vda could not be mounted"
  fi
fi

watch_disks  # the volumes the VM was made with, before `ready`
: >/run/disks.boot

# --- ACPI power button: busybox acpid reads the input devices and runs /etc/acpi/PWRF/00000080 ---
i=0
while [ ! -e /dev/input/event0 ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /var/log
acpid -c /etc/acpi -l /var/log/acpid.log

# --- web page ---
mkdir -p /www
cat >/www/index.html <<EOF
<!DOCTYPE html>
<html><head><title>$NAME</title></head><body><h1>$NAME</h1><p>meshvisor tiny guest</p></body></html>
EOF
ln -s /mnt /www/mnt  # GET /mnt/<serial>/<file> serves a file of a volume
# GET /cgi-bin/call?ADDR:PORT/PATH: the guest itself makes an HTTP request (to its mesh sidecar, say) and answers
# with what came back. The request side stays open a moment: a proxy may drop a request half-closed too early.
mkdir -p /www/cgi-bin
cat >/www/cgi-bin/call <<'CGI'
#!/bin/sh
target=${QUERY_STRING%%/*}
path=/${QUERY_STRING#*/}
[ "$path" = "/$QUERY_STRING" ] && path=/
host=${target%%:*} port=${target##*:}
printf 'Content-Type: text/plain\r\n\r\n'
case "$host:$port" in *[!0-9.:]*|:*|*:) echo "bad target"; exit 0 ;; esac
case "$path" in *[!A-Za-z0-9/._-]*) echo "bad path"; exit 0 ;; esac
request='GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n'
(printf "$request" "$path" "$host"; sleep 1) | nc -w 3 "$host" "$port"
CGI
chmod 755 /www/cgi-bin/call
httpd -p 80 -h /www

echo "meshvisor-tiny: ready"
if [ -n "$POWEROFF" ]; then
  /etc/rc.shutdown
  poweroff -f
fi
trap - USR2 TERM
exec /sbin/init
"""

INITTAB = """\
ttyS0::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/rc.shutdown
"""

RC_SHUTDOWN = r"""#!/bin/sh
# Run by busybox init before it kills every process and powers off (or reboots).
echo "meshvisor-tiny: shutting down"
sync
if grep -q ' /data ' /proc/mounts; then
  # Busy (a shell sitting in /data, say)? End every other process (init kills them next anyway) and retry.
  if ! umount /data 2>/dev/null; then
    kill -TERM -1 2>/dev/null
    sleep 0.5
    umount /data 2>/dev/null || { kill -KILL -1 2>/dev/null; sleep 0.2; umount /data 2>/dev/null; }
  fi
  if ! grep -q ' /data ' /proc/mounts; then
    echo "meshvisor-tiny: data disk unmounted"
  elif mount -o remount,ro /data; then
    echo "meshvisor-tiny: data disk busy, remounted read-only"
  fi
fi
for where in $(grep -o ' /mnt/[^ ]*' /proc/mounts); do
  umount "$where" 2>/dev/null || mount -o remount,ro "$where" 2>/dev/null
done
sync
"""

ACPI_POWER_BUTTON = r"""#!/bin/sh
# busybox acpid runs this for the ACPI power button (virsh shutdown).
echo "meshvisor-tiny: power button pressed" >/dev/console
exec /bin/busybox poweroff
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
# busybox udhcpc hook: $1 is the event, the lease comes in the environment.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-${subnet:-24}}" dev "$interface"
    # Only eth0 (the first NIC) sets the default route and the resolver: a second network is reached through
    # its connected route and never takes the guest's way out.
    if [ "$interface" = eth0 ]; then
      if [ -n "$router" ]; then
        while ip route del default dev "$interface" 2>/dev/null; do :; done
        for r in $router; do ip route add default via "$r" dev "$interface" && break; done
      fi
      : >/etc/resolv.conf
      [ -z "$domain" ] || echo "search $domain" >>/etc/resolv.conf
      for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    fi
    echo "meshvisor-tiny: $interface $ip/${mask:-$subnet} (dhcp $1)" >/dev/console
    ;;
esac
exit 0
"""

PROFILE = """\
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export HOME=/root
export PS1='# '
cd /root
"""

# Bumped whenever the layout of the image changes without a change in the scripts above.
_RECIPE_VERSION = "1"


# --- cpio "newc" ---------------------------------------------------------------------------------------------

_S_IFDIR = 0o040000
_S_IFREG = 0o100000
_S_IFLNK = 0o120000
_S_IFCHR = 0o020000
_NEWC_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


class CpioWriter:
    """Writes a cpio archive in the "newc" (SVR4, no CRC) format, the one the kernel unpacks as initramfs.

    Paths are relative to the archive root (a leading "/" is dropped); missing parent directories are added
    automatically. Every entry gets the same mtime (0 by default) so that archives are reproducible.
    """

    def __init__(self, stream: _Writable, mtime: int = 0) -> None:
        self._stream = stream
        self._mtime = mtime
        self._ino = 0
        self._names: set[str] = set()
        self._closed = False

    def __enter__(self) -> CpioWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        name = self._name(path)
        if name in self._names:
            return
        self._entry(name, _S_IFDIR | (mode & 0o7777), b"", nlink=2)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(self._name(path), _S_IFREG | (mode & 0o7777), data)

    def add_symlink(self, path: str, target: str) -> None:
        if not target:
            raise ValueError("empty symlink target")
        self._entry(self._name(path), _S_IFLNK | 0o777, target.encode())

    def add_char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(self._name(path), _S_IFCHR | (mode & 0o7777), b"", rdev=(major, minor))

    def close(self) -> None:
        """Write the trailer. The stream itself stays open."""
        if not self._closed:
            self._write(_TRAILER, 0, b"", nlink=1, ino=0)
            self._closed = True

    def _name(self, path: str) -> str:
        name = posixpath.normpath(path.lstrip("/"))
        if name in ("", ".") or name == ".." or name.startswith("../"):
            raise ValueError(f"bad archive path {path!r}")
        return name

    def _entry(self, name: str, mode: int, data: bytes, nlink: int = 1, rdev: tuple[int, int] = (0, 0)) -> None:
        if self._closed:
            raise ValueError("archive already closed")
        if name in self._names:
            raise ValueError(f"duplicate archive path {name!r}")
        parent = posixpath.dirname(name)
        if parent and parent not in self._names:
            self.add_dir(parent)
        self._ino += 1
        self._write(name, mode, data, nlink=nlink, ino=self._ino, rdev=rdev)
        self._names.add(name)

    def _write(
        self, name: str, mode: int, data: bytes, nlink: int, ino: int, rdev: tuple[int, int] = (0, 0)
    ) -> None:
        encoded = name.encode() + b"\0"
        if len(data) >= 1 << 32:
            raise ValueError(f"{name!r} is too large for cpio newc")
        fields = (ino, mode, 0, 0, nlink, self._mtime, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = _NEWC_MAGIC + b"".join(b"%08X" % f for f in fields)
        self._stream.write(header + encoded + _pad4(len(header) + len(encoded)))
        self._stream.write(data + _pad4(len(data)))


# --- ELF (kernel modules, busybox) ------------------------------------------------------------------------------


def _elf_check(data: bytes, what: str) -> None:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise TinyImageError(f"{what} is not a 64-bit little-endian ELF file")


def elf_section(data: bytes, wanted: str) -> bytes | None:
    """The contents of one section of an ELF64 little-endian file, or None."""
    _elf_check(data, "file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_off, names_size = headers[shstrndx][4], headers[shstrndx][5]
    names = data[names_off : names_off + names_size]
    for name_off, _type, _flags, _addr, offset, size in headers:
        end = names.find(b"\0", name_off)
        if names[name_off:end].decode(errors="replace") == wanted:
            return data[offset : offset + size]
    return None


def elf_is_static(data: bytes) -> bool:
    """True when the ELF executable has no program interpreter (it is statically linked)."""
    _elf_check(data, "file")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    pt_interp = 3
    return all(struct.unpack_from("<I", data, phoff + i * phentsize)[0] != pt_interp for i in range(phnum))


def modinfo(data: bytes) -> dict[str, list[str]]:
    """The `.modinfo` section of a kernel module: key -> values (`name`, `depends`, `alias`, ...)."""
    section = elf_section(data, ".modinfo")
    if section is None:
        raise TinyImageError("kernel module without a .modinfo section")
    info: dict[str, list[str]] = {}
    for item in section.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


@dataclass(frozen=True)
class KernelModule:
    name: str
    path: str  # lib/modules/VERSION/kernel/...ko, as in the package
    depends: tuple[str, ...]
    spill: Path  # where its bytes wait during the build


def module_load_order(wanted: Iterable[str], depends: Callable[[str], Iterable[str]]) -> list[str]:
    """`wanted` and everything they depend on, dependencies first (each once)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise TinyImageError(f"kernel module dependency cycle at {name}")
        visiting.add(name)
        for dep in depends(name):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


# --- Debian packages ---------------------------------------------------------------------------------------------


def _run(args: list[str], cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TinyImageError(f"{args[0]} failed: {e}") from e
    if proc.returncode != 0:
        raise TinyImageError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def _cached(cache_dir: Path, pattern: re.Pattern[str]) -> Path | None:
    found = [p for p in cache_dir.iterdir() if pattern.match(p.name) and p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _download(cache_dir: Path, package: str, pattern: re.Pattern[str]) -> Path:
    """`apt-get download PACKAGE` into a scratch directory, then move the .deb into the cache."""
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache_dir) as scratch:
        _run(["apt-get", "download", "-q", package], cwd=Path(scratch))
        debs = [p for p in Path(scratch).iterdir() if pattern.match(p.name)]
        if len(debs) != 1:
            raise TinyImageError(f"apt-get download {package} gave {sorted(p.name for p in debs)}")
        target = cache_dir / debs[0].name
        os.replace(debs[0], target)
        return target


def _kernel_package() -> str:
    """The versioned kernel package the `linux-image-cloud-amd64` meta package currently points at."""
    out = _run(["apt-cache", "depends", "--important", KERNEL_META_PACKAGE])
    for line in out.splitlines():
        m = re.match(r"^\s*\|?Depends:\s*(linux-image-\S+-cloud-amd64)\s*$", line)
        if m:
            return m.group(1)
    raise TinyImageError(f"cannot tell which kernel {KERNEL_META_PACKAGE} depends on: {out.strip()}")


def fetch_debs(cache_dir: Path) -> tuple[Path, Path]:
    """The kernel and busybox-static packages, from the cache or else downloaded into it."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    kernel = _cached(cache_dir, _KERNEL_DEB) or _download(cache_dir, _kernel_package(), _KERNEL_DEB)
    busybox = _cached(cache_dir, _BUSYBOX_DEB) or _download(cache_dir, BUSYBOX_PACKAGE, _BUSYBOX_DEB)
    return kernel, busybox


def _deb_members(deb: Path) -> Iterator[tuple[str, IO[bytes]]]:
    """(normalised path, reader) for every regular file of a package, streamed once through `dpkg-deb`."""
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=errors
            )
        except OSError as e:
            raise TinyImageError(f"dpkg-deb failed: {e}") from e
        assert proc.stdout is not None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    reader = tar.extractfile(member) if member.isfile() else None
                    if reader is not None:
                        yield posixpath.normpath(member.name).lstrip("/"), reader
            proc.stdout.read()
        except tarfile.TarError as e:
            raise TinyImageError(f"cannot read {deb.name}: {e}") from e
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace").strip()
            raise TinyImageError(f"dpkg-deb --fsys-tarfile {deb.name} failed ({rc}): {message}")


def _read_busybox(deb: Path) -> bytes:
    for name, reader in _deb_members(deb):
        if name == "bin/busybox":
            data = reader.read()
            if not elf_is_static(data):
                raise TinyImageError(f"bin/busybox of {deb.name} is not statically linked")
            return data
    raise TinyImageError(f"{deb.name} has no bin/busybox")


@dataclass
class _KernelPackage:
    version: str
    config: dict[str, str]
    builtin: set[str]
    modules: dict[str, KernelModule]


def _read_kernel(deb: Path, vmlinuz_out: Path, spill_dir: Path) -> _KernelPackage:
    """Write the kernel to `vmlinuz_out` and every module to `spill_dir`; index the modules by name."""
    version = ""
    config: dict[str, str] = {}
    builtin: set[str] = set()
    modules: dict[str, KernelModule] = {}
    for name, reader in _deb_members(deb):
        if re.fullmatch(r"boot/vmlinuz-[^/]+", name):
            version = name.removeprefix("boot/vmlinuz-")
            with open(vmlinuz_out, "wb") as f:
                shutil.copyfileobj(reader, f)
        elif re.fullmatch(r"boot/config-[^/]+", name):
            for line in reader.read().decode(errors="replace").splitlines():
                key, sep, value = line.partition("=")
                if sep and key.startswith("CONFIG_"):
                    config[key.removeprefix("CONFIG_")] = value
        elif re.fullmatch(r"lib/modules/[^/]+/modules\.builtin", name):
            for line in reader.read().decode().splitlines():
                builtin.add(_module_name(line))
        elif re.fullmatch(r"lib/modules/[^/]+/kernel/.+\.ko", name):
            data = reader.read()
            info = modinfo(data)
            mod_name = (info.get("name") or [_module_name(name)])[0]
            depends = tuple(d for d in ",".join(info.get("depends", [])).split(",") if d)
            spill = spill_dir / f"{len(modules):05d}.ko"
            spill.write_bytes(data)
            modules[mod_name] = KernelModule(mod_name, name, depends, spill)
    if not version:
        raise TinyImageError(f"{deb.name} has no boot/vmlinuz-*")
    missing = [opt for opt in REQUIRED_CONFIG if config.get(opt) != "y"]
    if missing:
        raise TinyImageError(f"kernel {version} lacks built-in CONFIG_{', CONFIG_'.join(missing)}")
    return _KernelPackage(version, config, builtin, modules)


def _module_name(path: str) -> str:
    return posixpath.basename(path).removesuffix(".ko").replace("-", "_")


# --- the image ---------------------------------------------------------------------------------------------------


def _recipe_digest() -> str:
    h = hashlib.sha256(_RECIPE_VERSION.encode())
    for text in (INIT_SCRIPT, INITTAB, RC_SHUTDOWN, ACPI_POWER_BUTTON, UDHCPC_SCRIPT, PROFILE, DEFAULT_CMDLINE):
        h.update(b"\0" + text.encode())
    h.update(repr(GUEST_MODULES).encode())
    return h.hexdigest()


def write_initramfs(stream: _Writable, busybox: bytes, kernel_version: str, modules: list[KernelModule]) -> None:
    """The guest's root file system as a cpio newc archive (uncompressed) on `stream`."""
    with CpioWriter(stream) as cpio:
        for d in ("dev", "proc", "sys", "run", "tmp", "root", "etc", "bin", "sbin", "usr/bin", "usr/sbin"):
            cpio.add_dir(d, 0o1777 if d == "tmp" else 0o755)
        cpio.add_symlink("var/run", "/run")
        cpio.add_char_device("dev/console", 5, 1)
        cpio.add_char_device("dev/null", 1, 3, 0o666)
        cpio.add_file("bin/busybox", busybox, 0o755)
        cpio.add_symlink("bin/sh", "busybox")
        cpio.add_symlink("sbin/init", "/bin/busybox")
        cpio.add_file("init", INIT_SCRIPT.encode(), 0o755)
        cpio.add_file("etc/inittab", INITTAB.encode())
        cpio.add_file("etc/rc.shutdown", RC_SHUTDOWN.encode(), 0o755)
        cpio.add_file("etc/acpi/PWRF/00000080", ACPI_POWER_BUTTON.encode(), 0o755)
        cpio.add_file("etc/udhcpc/default.script", UDHCPC_SCRIPT.encode(), 0o755)
        cpio.add_file("etc/profile", PROFILE.encode())
        cpio.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        cpio.add_file("etc/group", b"root:x:0:\n")
        for module in modules:
            cpio.add_file(module.path, module.spill.read_bytes())
        listing = "".join(f"/{m.path}\n" for m in modules)
        cpio.add_file("etc/meshvisor/modules", listing.encode())
        cpio.add_file("etc/meshvisor/kernel-version", f"{kernel_version}\n".encode())


def build_tiny(out_dir: Path, cache_dir: Path | None = None) -> TinyImage:
    """Build kernel + initramfs into out_dir (idempotent: reuse the downloaded .deb in cache_dir).

    `cache_dir` defaults to `out_dir/debs`. When `out_dir` already holds an image built from the same packages
    by the same recipe, it is returned as is. Files are replaced atomically and are world-readable (QEMU runs
    as its own user).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel_deb, busybox_deb = fetch_debs(cache_dir if cache_dir is not None else out_dir / "debs")
    kernel_path, initrd_path, stamp_path = out_dir / KERNEL_FILE, out_dir / INITRD_FILE, out_dir / STAMP_FILE
    stamp = {"kernel_deb": kernel_deb.name, "busybox_deb": busybox_deb.name, "recipe": _recipe_digest()}

    try:
        previous = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        previous = None
    if isinstance(previous, dict) and kernel_path.is_file() and initrd_path.is_file():
        version = previous.pop("kernel_version", None)
        if previous == stamp and isinstance(version, str):
            return TinyImage(kernel_path, initrd_path, version, DEFAULT_CMDLINE)

    busybox = _read_busybox(busybox_deb)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir) as scratch:
        work = Path(scratch)
        spill = work / "modules"
        spill.mkdir()
        new_kernel = work / KERNEL_FILE
        kernel = _read_kernel(kernel_deb, new_kernel, spill)

        def depends(name: str) -> tuple[str, ...]:
            module = kernel.modules.get(name)
            if module is not None:
                return module.depends
            if name in kernel.builtin:
                return ()
            raise TinyImageError(f"kernel {kernel.version} has no module {name!r}")

        order = module_load_order(GUEST_MODULES, depends)
        modules = [kernel.modules[name] for name in order if name in kernel.modules]

        new_initrd = work / INITRD_FILE
        with open(new_initrd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
            write_initramfs(gz, busybox, kernel.version, modules)
        for path in (new_kernel, new_initrd):
            path.chmod(0o644)
        os.replace(new_kernel, kernel_path)
        os.replace(new_initrd, initrd_path)
        stamp_tmp = work / STAMP_FILE
        stamp_tmp.write_text(json.dumps({**stamp, "kernel_version": kernel.version}, indent=2) + "\n")
        os.replace(stamp_tmp, stamp_path)
    return TinyImage(kernel_path, initrd_path, kernel.version, DEFAULT_CMDLINE)
