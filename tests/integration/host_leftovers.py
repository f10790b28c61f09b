"""What exists on the host, of a test platform's prefix, that no database row explains: containers, libvirt
domains, links (here and in host B's namespace), nftables tables and the links their rules name, namespaces,
loop mounts and loop devices, volume files, VM directories, dnsmasq and Envoy processes and sidecar directories,
Docker images (tagged with the prefix, or labelled with it), image directories, uploads and build scratch
directories. One check for every crash test: after a worker died anywhere and another finished its work,
`wait_explained` must come back empty."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from meshvisor.core.names import host_object_name
from meshvisor.network import bridge_name, list_links, namespaces, tap_name, veth_name, vxlan_name
from meshvisor.platform.state import models
from meshvisor.platform.state.db import make_engine, make_sessionmaker
from meshvisor.storage import loop_devices_for, mounts_under

from .conftest import Platform

UNENDED = ("pending", "running")  # operation statuses
TABLES = ("guard", "sg", "vmapp")  # a prefix's nftables tables (inet `-guard`, bridge `-sg`, `-vmapp`), one a host


@dataclass(frozen=True)
class Rows:
    """The ids of what the database says exists."""

    instances: dict[str, str]  # id → kind
    meshed: set[str]
    networks: set[str]
    attachments: set[str]  # network attachments of instances (veths, taps)
    volumes: set[str]
    mounted: set[str]  # volume attachments of containers (each one loop mount)
    images: dict[str, str]  # id → name
    operations: set[str]  # operations not ended (their uploads are theirs)


def rows(platform: Platform) -> Rows:
    engine = make_engine(f"sqlite:///{platform.data_dir / 'meshvisor.db'}")
    try:
        with make_sessionmaker(engine)() as s:
            instances = {i.id: i for i in s.scalars(select(models.Instance))}
            address = models.NetworkAddress
            attachments = s.scalars(select(address.id).where(address.instance_id.is_not(None)))
            mounted = s.execute(select(models.VolumeAttachment.id, models.VolumeAttachment.instance_id))
            return Rows(
                instances={i.id: i.kind for i in instances.values()},
                meshed={i.id for i in instances.values() if i.mesh},
                networks=set(s.scalars(select(models.Network.id))),
                attachments=set(attachments),
                volumes=set(s.scalars(select(models.Volume.id))),
                mounted={
                    a for a, i in mounted if instances.get(i) is not None and instances[i].kind == "container"
                },
                images={i.id: i.name for i in s.scalars(select(models.Image))},
                operations=set(s.scalars(select(models.Operation.id).where(models.Operation.status.in_(UNENDED)))),
            )
    finally:
        engine.dispose()


def explained_links(platform: Platform, r: Rows) -> set[str]:
    p = platform.prefix
    return (
        {bridge_name(p, i) for i in r.networks}
        | {vxlan_name(p, i) for i in r.networks}
        | {veth_name(p, i) for i in r.attachments}
        | {tap_name(p, i) for i in r.attachments}
    )


def _nft(platform: Platform, *argv: str, netns: str | None = None) -> str:
    """nft's answer; empty when what it lists went meanwhile (a table removed between listing and reading)."""
    command = ["nft", *argv] if netns is None else ["ip", "netns", "exec", netns, "nft", *argv]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout


def _nft_leftovers(platform: Platform, links: set[str]) -> set[str]:
    """Tables of the prefix that are none of its own, and links named by its rules that nothing explains."""
    found = set()
    link = re.compile(rf"{re.escape(platform.prefix)}-[a-z]+-[0-9a-f]+")
    for netns in (None, platform.host_b):
        for line in _nft(platform, "list", "tables", netns=netns).splitlines():  # one `table <family> <name>`
            _, family, table = line.split()
            if not table.startswith(f"{platform.prefix}-"):
                continue
            if table.removeprefix(f"{platform.prefix}-") not in TABLES:
                found.add(f"table {family} {table}")
                continue
            named = set(link.findall(_nft(platform, "list", "table", family, table, netns=netns)))
            found |= {f"{table} ({netns or 'root namespace'}) names {name}" for name in named - links}
    return found


def _processes(marker: str) -> dict[int, list[str]]:
    """Live processes whose command line holds `marker`, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(marker in arg for arg in argv):
            found[int(entry.name)] = argv
    return found


def _served_networks(platform: Platform) -> set[str]:
    """The networks a dnsmasq of this platform serves (its pid file is `<dhcp dir>/<network id>.pid`)."""
    served = set()
    for argv in _processes(f"--pid-file={platform.run_dir}/").values():
        for arg in argv:
            if arg.startswith("--pid-file="):
                served.add(Path(arg.removeprefix("--pid-file=")).stem)
    return served


def envoys_of(platform: Platform, directory: Path) -> list[int]:
    """The Envoy processes started with the bootstrap of the sidecar directory `directory`."""
    return sorted(pid for pid, argv in _processes(str(directory / "bootstrap.json")).items() if "envoy" in argv[0])


def sidecar_instances(platform: Platform) -> set[str]:
    """The instances an Envoy of this platform runs for (its bootstrap is in `sidecars/<prefix>-<id>/`)."""
    found = set()
    for argv in _processes(f"{platform.run_dir}/").values():
        for arg in argv:
            path = Path(arg)
            if path.name == "bootstrap.json" and path.parent.parent.name == "sidecars":
                found.add(path.parent.name.removeprefix(f"{platform.prefix}-"))
    return found


def _sidecar_dirs(platform: Platform) -> set[str]:
    """The instances a sidecar directory of this platform is for, on any host (`<host>/sidecars/<prefix>-<id>`)."""
    return {d.name.removeprefix(f"{platform.prefix}-") for d in platform.run_dir.glob("*/sidecars/*")}


def _docker_images(platform: Platform, r: Rows) -> set[str]:
    """Images of the engine tagged `<prefix>/<name>` with no image row of that name (or labelled as another
    row's), and untagged images labelled with the prefix (a build's steps, an import a retry did again)."""
    p = platform.prefix
    refs = {f"{p}/{name}:latest": image_id for image_id, name in r.images.items()}
    found = set()
    for image in platform.docker.images.list(filters={"reference": f"{p}/*"}):
        owner = image.labels.get("meshvisor.id")
        found |= {tag for tag in image.tags if tag not in refs or owner not in (None, refs[tag])}
    for image in platform.docker.images.list(filters={"label": f"meshvisor.prefix={p}", "dangling": True}):
        found.add(f"{image.short_id} (untagged, labelled {image.labels.get('meshvisor.id')})")
    return found


def _image_files(platform: Platform, r: Rows) -> set[str]:
    """Image directories with no row, build scratch directories in any (`.build-*`: a build cut short), and
    uploads no pending operation waits for (`<operation id>.tar`; `*.part` while a request streams one)."""
    images = platform.data_dir / "images"
    found = {d.name for d in images.glob("*") if d.name not in r.images}
    found |= {f"{d.parent.name}/{d.name}" for d in images.glob("*/.build-*")}
    uploads = platform.data_dir / "uploads"
    return found | {f"uploads/{f.name}" for f in uploads.glob("*") if f.name.split(".")[0] not in r.operations}


def unexplained(platform: Platform) -> dict[str, set[str]]:
    """Every host object of the platform's prefix that no row explains, by what it is (empty when none)."""
    r = rows(platform)
    p = platform.prefix
    links = explained_links(platform, r)
    pool = platform.data_dir / "pools" / "default"
    gateways = {host_object_name(p, "g", i) for i in r.meshed if r.instances[i] == "vm"}
    found = {
        "containers": {c.labels.get("meshvisor.id", c.name) for c in platform.containers()} - set(r.instances),
        "domains": {d.name() for d in platform.domains()}
        - {host_object_name(p, "vm", i) for i, kind in r.instances.items() if kind == "vm"},
        "links": {link.name for ns in (None, platform.host_b) for link in list_links(p, ns)} - links,
        "nftables": _nft_leftovers(platform, links),
        "namespaces": set(namespaces(p)) - {platform.host_b} - gateways,
        "mounts": {m.name for m in mounts_under(platform.data_dir / "mounts")} - {f"{p}-{a}" for a in r.mounted},
        "loop devices": set(loop_devices_for(pool)) if len(loop_devices_for(pool)) > len(r.mounted) else set(),
        "volume files": {f.name for f in pool.glob("*") if f.is_file() and f.name.split(".")[0] not in r.volumes},
        "vm directories": {d.name for d in (platform.data_dir / "vms").glob("*") if d.name not in r.instances},
        "dnsmasq": _served_networks(platform) - r.networks,
        "sidecars": sidecar_instances(platform) - r.meshed - {"ingress"},  # each host's ingress gateway
        "sidecar directories": _sidecar_dirs(platform) - r.meshed - {"ingress"},
        "docker images": _docker_images(platform, r),
        "image files": _image_files(platform, r),
    }
    return {what: names for what, names in found.items() if names}


def wait_explained(platform: Platform, timeout: float = 60) -> None:
    """Wait until nothing of the prefix is unexplained (the periodic pass removes what a crash orphaned); fail
    naming what is left."""
    deadline = time.monotonic() + timeout
    while left := unexplained(platform):
        assert time.monotonic() < deadline, f"left on the host, explained by no row: {left}"
        time.sleep(0.5)
