"""cloud-init NoCloud seed data for VMs booted from distribution disk images: the files (pure) and the ISO.

The seed is an ISO 9660 volume labelled `cidata` holding `meta-data` and `user-data`; cloud-init in the guest
finds it by that label. User data given by the caller is used as it is; otherwise a `#cloud-config` sets the
hostname and the SSH keys.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import pycdlib

from meshvisor.core.errors import InvalidInput

MAX_USER_DATA = 64 * 1024
KEY_TYPES = ("ssh-rsa", "ssh-ed25519", "ecdsa-sha2-", "sk-ssh-ed25519", "sk-ecdsa-sha2-", "ssh-dss")


@dataclass(frozen=True)
class CloudInit:
    ssh_keys: tuple[str, ...] = ()
    user_data: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def parse(value: dict[str, object] | None) -> CloudInit:
    """Check what a request says about cloud-init: `{"ssh_keys": [...], "user_data": "#cloud-config ..."}`."""
    if value is None:
        return CloudInit()
    unknown = set(value) - {"ssh_keys", "user_data"}
    if unknown:
        raise InvalidInput(f"cloud_init takes ssh_keys and user_data, not {', '.join(sorted(unknown))}")
    keys = value.get("ssh_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) and k.startswith(KEY_TYPES) for k in keys):
        raise InvalidInput("cloud_init.ssh_keys must be a list of public keys (ssh-ed25519 AAAA…, ssh-rsa …)")
    if any("\n" in k for k in keys):
        raise InvalidInput("an SSH key is one line")
    user_data = value.get("user_data")
    if user_data is not None and (not isinstance(user_data, str) or len(user_data.encode()) > MAX_USER_DATA):
        raise InvalidInput(f"cloud_init.user_data must be text of at most {MAX_USER_DATA} bytes")
    return CloudInit(ssh_keys=tuple(keys), user_data=user_data)


def seed_files(instance_id: str, hostname: str, config: CloudInit) -> dict[str, bytes]:
    meta = f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"
    if config.user_data is not None:
        user = config.user_data
    else:
        lines = ["#cloud-config", f"hostname: {hostname}", "manage_etc_hosts: true"]
        if config.ssh_keys:
            lines.append("ssh_authorized_keys:")
            lines += [f"  - {key}" for key in config.ssh_keys]
        user = "\n".join(lines) + "\n"
    return {"meta-data": meta.encode(), "user-data": user.encode()}


def write_seed_iso(path: Path, files: dict[str, bytes]) -> Path:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, data in files.items():
        short = name.upper().replace("-", "_")[:8] + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), f"/{short}", rr_name=name, joliet_path=f"/{name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    iso.write(str(tmp))
    iso.close()
    tmp.replace(path)
    return path


def read_seed_iso(path: Path) -> dict[str, bytes]:
    """The files of a seed ISO by their Joliet names (tests and diagnostics)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out: dict[str, bytes] = {}
        for child in iso.list_children(joliet_path="/"):
            name = child.file_identifier().decode("utf-16-be") if child.file_identifier() else ""
            if name in ("", ".", "..", "\x00", "\x01") or child.is_dir():
                continue
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, joliet_path=f"/{name}")
            out[name] = buf.getvalue()
        label = iso.pvd.volume_identifier.decode().strip()
        out[":label"] = label.encode()
        return out
    finally:
        iso.close()
