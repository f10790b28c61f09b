"""Rows of the failpoint table beyond one per kind: a container with a mesh sidecar (create, delete), and the
image kinds by source (built-in container and VM images, root filesystem and qcow2 imports, a Dockerfile
build) and a container image's delete. Like the VM rows, each is killed only after the first of each distinct
driver call.

Left out: a `pull` source and `image.push` need a registry (a pull from a remote one needs the network); a VM
image's delete only removes its directory (no driver call: no failpoint to kill at)."""

from __future__ import annotations

import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from meshvisor.containers import busybox_rootfs_tar
from meshvisor.platform.state.operation_kinds import OperationKind

from .crash_run import NET, Case, Run, body
from .host_leftovers import envoys_of, sidecar_instances

MESH = {"service": "ft-svc", "port": 8080}
DOCKERFILE = "FROM busybox\nRUN echo ft > /ft\n"


def _meshed(run: Run) -> httpx.Response:
    return run.api.post("/v1/instances", json=body(run) | {"networks": [{"network": NET}], "mesh": MESH})


def _meshed_network(run: Run) -> None:
    """The network; the service the meshed create makes goes with the run's other things at its end."""
    run.network()
    run.made.insert(0, f"/v1/services/{MESH['service']}")  # removed last, after the network's instance


def _meshed_instance(run: Run) -> None:
    _meshed_network(run)
    run.ok(_meshed(run))


def _sidecar_dir(run: Run) -> Path:
    instance_id = run.get()["id"]
    return run.platform.run_dir / "local" / "sidecars" / f"{run.platform.prefix}-{instance_id}"


def _running_with_one_sidecar(run: Run) -> None:
    """Running, its Envoy up (started with its own bootstrap, its admin socket there) and only one."""
    assert run.get()["state"] == "running", run.get()
    directory = _sidecar_dir(run)
    envoys = envoys_of(run.platform, directory)
    assert len(envoys) == 1, f"{len(envoys)} Envoy processes for {directory.name}: {envoys}"
    assert (directory / "admin.sock").exists()


def _gone_with_its_sidecar(run: Run) -> None:
    """Gone, and with it the only sidecar of the run: no directory, no Envoy, bar the host's ingress gateway."""
    assert run.api.get(f"/v1/instances/{run.name}").status_code == 404
    ingress = f"{run.platform.prefix}-ingress"
    left = [d for d in (run.platform.run_dir / "local" / "sidecars").glob("*") if d.name != ingress]
    assert not left, left
    assert sidecar_instances(run.platform) <= {"ingress"}


def _image(run: Run, name: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = run.api.get(f"/v1/images/{name or run.name}").json()
    return found


def _ready(name: str | None = None) -> Any:
    def check(run: Run) -> None:
        image = _image(run, name)
        assert image["state"] == "ready", image
        if image["kind"] == "vm":
            assert {p.name for p in Path(image["ref"]).iterdir()} & {"boot.json", "disk.qcow2"}, image
        else:
            assert image["ref"] in run.platform.docker.images.get(image["ref"]).tags, image

    return check


def _image_gone(run: Run) -> None:
    assert run.api.get(f"/v1/images/{run.name}").status_code == 404
    assert not run.platform.docker.images.list(filters={"reference": f"{run.platform.prefix}/{run.name}"})


def _without(name: str) -> Any:
    """A built-in image's row: the platform's own copy goes first (no instance uses it between rows)."""

    def setup(run: Run) -> None:
        if run.api.get(f"/v1/images/{name}").status_code == 200:
            run.ok(run.api.delete(f"/v1/images/{name}"))

    return setup


def _builtin(name: str) -> Any:
    def submit(run: Run) -> httpx.Response:
        return run.api.post("/v1/images", json={"name": name, "source": {"type": "builtin"}})

    return submit


def _made(run: Run) -> None:
    run.made.append(f"/v1/images/{run.name}")


@cache
def _disk() -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
        return path.read_bytes()


def _import(run: Run, kind: str = "container") -> httpx.Response:
    data = _disk() if kind == "vm" else busybox_rootfs_tar()
    headers = {"Content-Type": "application/octet-stream"}
    return run.api.post(
        "/v1/images/import", params={"name": run.name, "kind": kind}, content=data, headers=headers
    )


def _build(run: Run) -> httpx.Response:
    return run.api.post(
        "/v1/images", json={"name": run.name, "source": {"type": "dockerfile", "dockerfile": DOCKERFILE}}
    )


def _imported(run: Run) -> None:
    _made(run)
    run.ok(_import(run))


K = OperationKind
MORE_ROWS: dict[str, tuple[OperationKind, Case]] = {
    "instance_create-meshed": (
        K.INSTANCE_CREATE,
        Case(_meshed_network, _meshed, _running_with_one_sidecar, ("container",), first_of_each=True),
    ),
    "instance_delete-meshed": (
        K.INSTANCE_DELETE,
        Case(
            _meshed_instance,
            lambda r: r.api.delete(f"/v1/instances/{r.name}"),
            _gone_with_its_sidecar,
            ("container",),
            first_of_each=True,
        ),
    ),
    "image_create-busybox": (
        K.IMAGE_CREATE,
        Case(_without("busybox"), _builtin("busybox"), _ready("busybox"), ("",), first_of_each=True),
    ),
    "image_create-import": (K.IMAGE_CREATE, Case(_made, _import, _ready(), ("",), first_of_each=True)),
    "image_create-qcow2": (
        K.IMAGE_CREATE,
        Case(_made, lambda r: _import(r, "vm"), _ready(), ("",), first_of_each=True),
    ),
    "image_create-dockerfile": (K.IMAGE_CREATE, Case(_made, _build, _ready(), ("",), first_of_each=True)),
    "image_delete-container": (
        K.IMAGE_DELETE,
        Case(_imported, lambda r: r.api.delete(f"/v1/images/{r.name}"), _image_gone, ("",), first_of_each=True),
    ),
    "image_create-tiny": (  # last: the VM rows before it use the session's `tiny`, rebuilt here
        K.IMAGE_CREATE,
        Case(_without("tiny"), _builtin("tiny"), _ready("tiny"), ("",), first_of_each=True),
    ),
}
