"""The guest's kernel: which modules it needs, in which order to load them, and what the kernel package holds.

Kernel modules are ELF files; pyelftools reads their `.modinfo` section (name, dependencies).
"""

from __future__ import annotations

import io
import posixpath
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from meshvisor.guest.debs import deb_members
from meshvisor.guest.errors import TinyImageError

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


@dataclass(frozen=True)
class KernelModule:
    name: str
    path: str  # lib/modules/VERSION/kernel/...ko, as in the package
    depends: tuple[str, ...]
    spill: Path  # where its bytes wait during the build


@dataclass
class KernelPackage:
    version: str
    config: dict[str, str]
    builtin: set[str]
    modules: dict[str, KernelModule]

    def depends(self, name: str) -> tuple[str, ...]:
        """What module `name` needs loaded first; nothing when it is built in."""
        module = self.modules.get(name)
        if module is not None:
            return module.depends
        if name in self.builtin:
            return ()
        raise TinyImageError(f"kernel {self.version} has no module {name!r}")

    def guest_modules(self) -> list[KernelModule]:
        """The modules of `GUEST_MODULES` and their dependencies, in load order (built-in ones left out)."""
        order = module_load_order(GUEST_MODULES, self.depends)
        return [self.modules[name] for name in order if name in self.modules]


def modinfo(data: bytes) -> dict[str, list[str]]:
    """The `.modinfo` section of a kernel module: key -> values (`name`, `depends`, `alias`, ...)."""
    try:
        elf = ELFFile(io.BytesIO(data))
        section = elf.get_section_by_name(".modinfo")
        raw = section.data() if section is not None else None
    except ELFError as e:
        raise TinyImageError(f"kernel module is not an ELF file: {e}") from e
    if raw is None:
        raise TinyImageError("kernel module without a .modinfo section")
    info: dict[str, list[str]] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


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


def read_kernel(deb: Path, vmlinuz_out: Path, spill_dir: Path) -> KernelPackage:
    """Write the kernel to `vmlinuz_out` and every module to `spill_dir`; index the modules by name."""
    kernel = KernelPackage("", {}, set(), {})
    for name, reader in deb_members(deb):
        if re.fullmatch(r"boot/vmlinuz-[^/]+", name):
            kernel.version = name.removeprefix("boot/vmlinuz-")
            with open(vmlinuz_out, "wb") as f:
                shutil.copyfileobj(reader, f)
        elif re.fullmatch(r"boot/config-[^/]+", name):
            for line in reader.read().decode(errors="replace").splitlines():
                key, sep, value = line.partition("=")
                if sep and key.startswith("CONFIG_"):
                    kernel.config[key.removeprefix("CONFIG_")] = value
        elif re.fullmatch(r"lib/modules/[^/]+/modules\.builtin", name):
            kernel.builtin.update(_module_name(line) for line in reader.read().decode().splitlines())
        elif re.fullmatch(r"lib/modules/[^/]+/kernel/.+\.ko", name):
            module = _spill_module(name, reader.read(), spill_dir / f"{len(kernel.modules):05d}.ko")
            kernel.modules[module.name] = module
    if not kernel.version:
        raise TinyImageError(f"{deb.name} has no boot/vmlinuz-*")
    missing = [opt for opt in REQUIRED_CONFIG if kernel.config.get(opt) != "y"]
    if missing:
        raise TinyImageError(f"kernel {kernel.version} lacks built-in CONFIG_{', CONFIG_'.join(missing)}")
    return kernel


def _spill_module(path: str, data: bytes, spill: Path) -> KernelModule:
    info = modinfo(data)
    name = (info.get("name") or [_module_name(path)])[0]
    depends = tuple(d for d in ",".join(info.get("depends", [])).split(",") if d)
    spill.write_bytes(data)
    return KernelModule(name, path, depends, spill)


def _module_name(path: str) -> str:
    return posixpath.basename(path).removesuffix(".ko").replace("-", "_")
