"""What an instance of each kind may be asked for: the rules that need nothing but the request itself.

Written once, read by every path that takes an instance: the API and the stack apply (through
`platform.instances.requests`, which adds what needs the host or the database), a stack file's check
(`platform.stacks.spec`) and the libvirt driver (`whole_vcpus`). Each rule answers with problems (sentences for
people), all of them, in a fixed order: a stack file lists them together, the API joins them into one error.

    cpus_problems, memory_problems   sizes by kind (also what a change of size must keep)
    mount_path_problems              where a container mounts a volume
    problems                         the whole request: sizes, what is for VMs or containers only, counts,
                                     bounds on what is stored (env, command, cloud-init), repeats
    secret_env_problems              secret environment names that are also plain ones
    ha_stays                         why an `ha` instance is not restarted elsewhere when its host is gone
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from meshvisor.core.errors import InvalidInput
from meshvisor.core.types import InstanceKind

MIN_CONTAINER_MEMORY_MB = 6  # the Docker engine refuses less
MIN_VM_MEMORY_MB = 128  # the built-in guest's kernel and initramfs need about this much to boot
MAX_DISK_MB = 1024 * 1024  # 1 TiB for a VM's data disk
MAX_NETWORKS = 8  # eth0 … eth7
MAX_VOLUMES = 16
MAX_ENV_VARS = 256
MAX_ENV_NAME = 256  # characters
MAX_ENV_VALUE_BYTES = 32 * 1024  # one value, UTF-8
MAX_ENV_BYTES = 128 * 1024  # every name and value together
MAX_COMMAND_ARGS = 256
MAX_COMMAND_BYTES = 64 * 1024  # every argument together, UTF-8
MAX_CLOUD_INIT_BYTES = 64 * 1024  # as JSON: ssh keys, user data and the rest (OpenStack's user data bound)
MAX_MOUNT_PATH = 255
# What the API document says of these (the checks below are the server's): a mount path is absolute and
# normalised (no empty, `.` or `..` part, no trailing /), and not / itself; an environment variable's name is
# not empty and holds no `=` or NUL.
MOUNT_PATH_PATTERN = r"^(/(?!\.\.?(/|$))[^/\u0000]+)+$"
ENV: dict[str, Any] = {
    "maxProperties": MAX_ENV_VARS,
    "propertyNames": {"minLength": 1, "maxLength": MAX_ENV_NAME, "pattern": "^[^=\u0000]+$"},
}
VM_ONLY = ("max_cpus", "max_memory_mb", "disk_mb", "cloud_init")


class NetworkRef(Protocol):
    @property
    def network(self) -> str: ...


class VolumeRef(Protocol):
    @property
    def volume(self) -> str: ...
    @property
    def path(self) -> str | None: ...


class InstanceAsked(Protocol):
    """What the rules read of a request (the API's, the platform's and a stack file's instance all have it)."""

    @property
    def kind(self) -> str: ...
    @property
    def cpus(self) -> float: ...
    @property
    def memory_mb(self) -> int: ...
    @property
    def command(self) -> Sequence[str]: ...
    @property
    def env(self) -> Mapping[str, str]: ...
    @property
    def networks(self) -> Sequence[NetworkRef]: ...
    @property
    def volumes(self) -> Sequence[VolumeRef]: ...
    @property
    def max_cpus(self) -> int | None: ...
    @property
    def max_memory_mb(self) -> int | None: ...
    @property
    def disk_mb(self) -> int: ...
    @property
    def cloud_init(self) -> dict[str, Any] | None: ...


def cpus_problems(kind: str, cpus: float) -> list[str]:
    if not cpus > 0:  # NaN too
        return [f"cpus must be above 0, not {cpus}"]
    if InstanceKind(kind) is InstanceKind.VM and not float(cpus).is_integer():
        return [_not_whole(cpus)]
    return []


def whole_vcpus(cpus: float) -> int:
    """A VM's vCPUs from its `cpus` (a driver's own check of what it is given)."""
    if not float(cpus).is_integer() or cpus < 1:
        raise InvalidInput(_not_whole(cpus))
    return int(cpus)


def _not_whole(cpus: float) -> str:
    return f"a VM takes a whole number of vCPUs, not {cpus}"


def memory_problems(kind: str, memory_mb: int) -> list[str]:
    vm = InstanceKind(kind) is InstanceKind.VM
    least, what = (MIN_VM_MEMORY_MB, "a VM's guest") if vm else (MIN_CONTAINER_MEMORY_MB, "a container")
    if memory_mb < least:
        return [f"memory_mb must be at least {least} ({what} minimum), not {memory_mb}"]
    return []


def mount_path_problems(path: str) -> list[str]:
    """A container's volume path: absolute, normalised, not its root."""
    fine = path.startswith("/") and not path.startswith("//") and path != "/" and "\0" not in path
    fine = fine and len(path) <= MAX_MOUNT_PATH
    if fine and posixpath.normpath(path) == path:
        return []
    return [
        f"volume path {path!r} must be an absolute, normalised path other than / (of at most {MAX_MOUNT_PATH}"
        " characters)"
    ]


def problems(asked: InstanceAsked) -> list[str]:
    """Every rule `asked` breaks, in a fixed order; [] when it keeps them all."""
    found = cpus_problems(asked.kind, asked.cpus) + memory_problems(asked.kind, asked.memory_mb)
    if InstanceKind(asked.kind) is InstanceKind.VM:
        found += _vm_problems(asked)
    else:
        found += _container_problems(asked)
    return found + _count_problems(asked) + _size_problems(asked) + _repeat_problems(asked)


def _vm_problems(asked: InstanceAsked) -> list[str]:
    found = []
    if asked.command or asked.env:
        found.append("command and env are for containers; a VM runs its image's own init")
    if asked.max_cpus is not None and asked.max_cpus < asked.cpus:
        found.append(f"max_cpus {asked.max_cpus} is below cpus {asked.cpus:g}")
    if asked.max_memory_mb is not None and asked.max_memory_mb < asked.memory_mb:
        found.append(f"max_memory_mb {asked.max_memory_mb} is below memory_mb {asked.memory_mb}")
    if not 0 <= asked.disk_mb <= MAX_DISK_MB:
        found.append(f"disk_mb must be between 0 (no data disk) and {MAX_DISK_MB}, not {asked.disk_mb}")
    return found + [f"volume {v.volume!r}: a VM's volume has no path" for v in asked.volumes if v.path]


def _container_problems(asked: InstanceAsked) -> list[str]:
    found = []
    given = [name for name in VM_ONLY if getattr(asked, name) not in (None, 0)]
    if given:
        found.append(f"{', '.join(VM_ONLY)} are for VMs (given: {', '.join(given)})")
    found += [f"volume {v.volume!r}: a container's volume needs a path" for v in asked.volumes if not v.path]
    return found + [p for v in asked.volumes if v.path for p in mount_path_problems(v.path)]


def _count_problems(asked: InstanceAsked) -> list[str]:
    found = []
    if len(asked.networks) > MAX_NETWORKS:
        found.append(f"an instance joins at most {MAX_NETWORKS} networks")
    if len(asked.volumes) > MAX_VOLUMES:
        found.append(f"an instance takes at most {MAX_VOLUMES} volumes")
    if len(asked.env) > MAX_ENV_VARS:
        found.append(f"at most {MAX_ENV_VARS} environment variables")
    return found


def _size_problems(asked: InstanceAsked) -> list[str]:
    """Bounds on what is stored and handed to the workload as it is: the environment, the command, cloud-init."""
    found = [f"environment variable name {key[:32]!r}... is longer than {MAX_ENV_NAME} characters"
             for key in asked.env if len(key) > MAX_ENV_NAME]  # fmt: skip
    found += [
        f"environment variable {key[:32]!r} has a value of {_utf8(value)} bytes; at most {MAX_ENV_VALUE_BYTES}"
        for key, value in asked.env.items()
        if _utf8(value) > MAX_ENV_VALUE_BYTES
    ]
    env_bytes = sum(_utf8(key) + _utf8(value) for key, value in asked.env.items())
    if env_bytes > MAX_ENV_BYTES:
        found.append(f"the environment takes {env_bytes} bytes; at most {MAX_ENV_BYTES}")
    if len(asked.command) > MAX_COMMAND_ARGS:
        found.append(f"the command has {len(asked.command)} arguments; at most {MAX_COMMAND_ARGS}")
    command_bytes = sum(_utf8(arg) for arg in asked.command)
    if command_bytes > MAX_COMMAND_BYTES:
        found.append(f"the command takes {command_bytes} bytes; at most {MAX_COMMAND_BYTES}")
    cloud_init_bytes = _utf8(json.dumps(asked.cloud_init)) if asked.cloud_init else 0
    if cloud_init_bytes > MAX_CLOUD_INIT_BYTES:
        found.append(f"cloud_init takes {cloud_init_bytes} bytes as JSON; at most {MAX_CLOUD_INIT_BYTES}")
    return found


def _utf8(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _repeat_problems(asked: InstanceAsked) -> list[str]:
    networks = [n.network for n in asked.networks]
    volumes = [v.volume for v in asked.volumes]
    found = [f"network {n!r} is listed twice: an instance has one interface per network" for n in _twice(networks)]
    found += [f"volume {n!r} is listed twice" for n in _twice(volumes)]
    return found + [
        f"invalid environment variable name {key!r}" for key in asked.env if not key or "=" in key or "\0" in key
    ]


def secret_env_problems(env: Mapping[str, str], secret_env: Mapping[str, str]) -> list[str]:
    """A name is plain or secret, not both (the other bounds hold for both together: see `problems`)."""
    return [f"environment variable {key!r} is in both env and secret_env" for key in secret_env if key in env]


def ha_stays(disk_mb: int, has_volumes: bool) -> str | None:
    """Why an `ha` instance is not restarted on another host when its own is gone (None: it is): what it writes
    is on that host."""
    if has_volumes:
        return "its volumes are on its host: it is not restarted elsewhere"
    if disk_mb:
        return "its scratch disk is on its host: it is not restarted elsewhere"
    return None


def _twice(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})
