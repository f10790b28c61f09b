"""Envoy sidecars of meshed containers: started in the container's network namespace once its networks are
attached (and ready, i.e. holding its config from the control plane, before the container is reported running),
stopped after the container stops, restarted by the reconcile pass when they died, the container got a new
namespace, or their bootstrap does not hold the xDS credential the control plane expects (written before the
lock, or before the secret was replaced: such a sidecar would never get a config again). Each sidecar's files
(bootstrap, admin socket, pid, logs) are in `<run>/sidecars/<prefix>-<id>/` (0700: the bootstrap holds the
sidecar's xDS credential)."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
from pathlib import Path

from sqlalchemy import select

from meshvisor import network
from meshvisor.core.errors import MeshvisorError, PermanentError, TransientError
from meshvisor.core.names import SHORT_ID_LEN, host_object_name
from meshvisor.core.types import InstanceKind, InstanceState
from meshvisor.mesh import resources, sidecar
from meshvisor.platform.mesh.ca import node_auth
from meshvisor.platform.mesh.services import INGRESS, TRANSPARENT_PORT
from meshvisor.platform.mesh.view import ingress_node_id, node_id
from meshvisor.platform.networks.steps import ensure_here
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import SIDECAR_ROLE, Instance, Network, NetworkAddress

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 20.0


def sidecar_dir(rt: Runtime, instance_id: str) -> Path:
    return rt.settings.sidecars_dir / f"{rt.settings.host_prefix}-{instance_id}"


def running_pid(directory: Path) -> int | None:
    """The pid in the sidecar's pid file, if that process is alive and is this sidecar's Envoy (a pid can be
    reused by another process after a reboot or a crash: never signal one that is not ours)."""
    try:
        pid = int((directory / "envoy.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if str(directory / "bootstrap.json").encode() not in cmdline or not sidecar.alive(pid):
        return None
    return pid


def _same_netns(pid: int, netns: str) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns).st_ino
    except OSError:
        return False


def _holds(directory: Path, token: str) -> bool:
    """The sidecar's bootstrap carries `token`, the credential the control plane expects of it now."""
    try:
        boot = json.loads((directory / "bootstrap.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(boot, dict) and resources.bootstrap_token(boot) == token


def gateway_namespace(rt: Runtime, instance_id: str) -> str:
    """The namespace of a VM's sidecar, named with the host prefix and the VM's id (and, for a host simulated in
    a namespace of its own, the host's name: named namespaces are the machine's, another host's are not ours)."""
    kind = "g" if rt.settings.host_netns is None else f"g.{rt.settings.host_name}"
    return host_object_name(rt.settings.host_prefix, kind, instance_id)


def _is_gateway_namespace(rt: Runtime, name: str) -> bool:
    """`name` is the gateway namespace of some VM on this host (not on another host simulated beside it)."""
    base = gateway_namespace(rt, "")
    return name.startswith(base) and len(name) == len(base) + SHORT_ID_LEN


def _vm_gateway(rt: Runtime, instance: Instance) -> str:
    """A namespace of its own on the VM's first network, with the sidecar's address: the guest calls it for
    upstreams (and routes the services' addresses to it, by DHCP: their connections are redirected to the
    sidecar as they arrive), other sidecars reach the VM's service there. Idempotent."""
    with transaction(rt.sessions) as s:
        row = s.scalar(
            select(NetworkAddress).where(
                NetworkAddress.instance_id == instance.id, NetworkAddress.role == SIDECAR_ROLE
            )
        )
        if row is None:
            raise PermanentError(f"VM {instance.name!r} has no sidecar address")
        net = s.get(Network, row.network_id)
        assert net is not None
        address = f"{row.address}/{ipaddress.IPv4Network(net.cidr).prefixlen}"
        attachment, network_id, gateway, mac, mtu = row.id, net.id, net.gateway, str(row.mac), net.mtu
    name = gateway_namespace(rt, instance.id)
    ensure_here(rt, {network_id})
    network.ensure_namespace(name)
    network.attach_namespace(
        rt.settings.host_prefix, network_id, attachment, name, address, gateway, mac, mtu,
        netns=rt.settings.host_netns, default_route=False,
    )  # fmt: skip
    network.redirect_arriving(rt.settings.host_prefix, name, rt.settings.service_cidr, TRANSPARENT_PORT)
    return f"/run/netns/{name}"


def _workload_netns(rt: Runtime, instance: Instance) -> str:
    if instance.kind == InstanceKind.VM.value:
        return _vm_gateway(rt, instance)
    workload = rt.compute(InstanceKind.CONTAINER).namespace_pid(instance.id)
    if workload is None:
        raise TransientError(f"container of {instance.name!r} is not running: no namespace for its sidecar")
    netns = f"/proc/{workload}/ns/net"
    assert instance.mesh is not None
    transparent = network.Transparent(rt.settings.service_cidr, TRANSPARENT_PORT)
    network.guard_app_port(rt.settings.host_prefix, netns, int(instance.mesh["port"]), transparent)
    return netns


def ensure_sidecar(rt: Runtime, instance: Instance) -> bool:
    """Start the sidecar of a meshed, running instance unless it already runs in the right namespace (the
    container's own; a VM's gateway namespace); returns True when it (re)started one."""
    if not instance.mesh:
        return False
    netns = _workload_netns(rt, instance)
    directory = sidecar_dir(rt, instance.id)
    node = node_id(rt.settings.host_prefix, instance.id)
    token = node_auth(rt.settings).token(node)
    current = running_pid(directory)
    if current is not None and _same_netns(current, netns) and _holds(directory, token):
        return False
    if current is not None:  # the container restarted into a new namespace, or the credential is stale
        sidecar.stop(current)
    admin = directory / "admin.sock"
    admin.unlink(missing_ok=True)
    boot = resources.bootstrap(
        node,
        str(instance.mesh["service"]),
        admin_path=str(admin),
        xds_path=str(rt.settings.sidecar_xds_socket),
        api_type=rt.settings.xds_api,
        xds_token=token,
    )
    try:
        sidecar.start(directory, boot, netns=netns, ready_timeout=READY_TIMEOUT_S)
    except TransientError as exc:
        raise TransientError(
            f"the sidecar of {instance.name!r} got no config: is the mesh control plane (meshvisor xds) running?"
            f" {exc.message}"
        ) from exc
    return True


def ensure_ingress(rt: Runtime) -> bool:
    """This host's ingress gateway: an Envoy in the host's own namespace that exposes services on 127.0.0.1,
    as identity `ingress`. It runs whether or not a service is exposed yet (new listeners come over xDS)."""
    directory = sidecar_dir(rt, INGRESS)
    node = ingress_node_id(rt.settings.host_prefix, rt.settings.host_name)
    token = node_auth(rt.settings).token(node)
    current = running_pid(directory)
    if current is not None and _holds(directory, token):
        return False
    if current is not None:
        sidecar.stop(current)
    admin = directory / "admin.sock"
    admin.unlink(missing_ok=True)
    boot = resources.bootstrap(
        node,
        INGRESS,
        admin_path=str(admin),
        xds_path=str(rt.settings.sidecar_xds_socket),
        api_type=rt.settings.xds_api,
        xds_token=token,
    )
    sidecar.start(directory, boot, ready_timeout=READY_TIMEOUT_S)
    return True


def stop_sidecar(rt: Runtime, instance_id: str) -> None:
    """The sidecar stops (and a VM's gateway namespace goes, its link with it). Absent is success."""
    directory = sidecar_dir(rt, instance_id)
    pid = running_pid(directory)
    if pid is not None:
        sidecar.stop(pid)
    shutil.rmtree(directory, ignore_errors=True)
    network.delete_namespace(gateway_namespace(rt, instance_id))


def reconcile_sidecars(rt: Runtime) -> int:
    """Restart the sidecars of running meshed containers on this host that died (or sit in an old namespace);
    stop those, and remove the VM gateway namespaces, that no instance explains; (re)start the ingress gateway.
    Returns how many it changed."""
    changed = _restart_dead(rt) + _remove_unexplained(rt)
    if rt.settings.host_netns is None and rt.settings.xds_socket.exists():  # a control plane to configure it
        try:
            if ensure_ingress(rt):
                log.warning("reconcile: started the ingress gateway")
                changed += 1
        except MeshvisorError as exc:
            log.warning("reconcile: ingress gateway: %s", exc.message)
    return changed


def _restart_dead(rt: Runtime) -> int:
    with transaction(rt.sessions) as s:
        running = select(Instance).where(
            Instance.host == rt.settings.host_name,
            Instance.state == InstanceState.RUNNING.value,
            Instance.operation_id.is_(None),
        )
        wanted = [i for i in s.scalars(running) if i.mesh]
        for instance in wanted:
            s.expunge(instance)
    changed = 0
    for instance in wanted:
        try:
            if ensure_sidecar(rt, instance):
                log.warning("reconcile: restarted the sidecar of %s", instance.name)
                changed += 1
        except MeshvisorError as exc:
            log.warning("reconcile: sidecar of %s: %s", instance.name, exc.message)
    return changed


def _remove_unexplained(rt: Runtime) -> int:
    """Sidecars and gateway namespaces of this host that no instance explains go. What is on the host is listed
    first and the rows read after: an instance made meanwhile (its sidecar started, its operation ended since)
    is running in the rows read, so its sidecar is never taken for a leftover."""
    prefix = f"{rt.settings.host_prefix}-"
    directories = sorted(rt.settings.sidecars_dir.iterdir()) if rt.settings.sidecars_dir.is_dir() else []
    gateways = [n for n in network.namespaces(rt.settings.host_prefix) if _is_gateway_namespace(rt, n)]
    explained = explained_here(rt)
    changed = 0
    for directory in directories:
        instance_id = directory.name.removeprefix(prefix)
        if directory.name.startswith(prefix) and instance_id not in explained and instance_id != INGRESS:
            stop_sidecar(rt, instance_id)
            log.warning("reconcile: removed the sidecar of %s", instance_id)
            changed += 1
    wanted = {gateway_namespace(rt, i) for i in explained}
    for name in gateways:
        if name not in wanted:
            network.delete_namespace(name)
            log.warning("reconcile: removed gateway namespace %s", name)
            changed += 1
    return changed


def explained_here(rt: Runtime) -> set[str]:
    """The ids of the instances whose sidecar (and a VM's gateway namespace) may be on this host now: meshed,
    here, running or paused; or in the middle of an operation (which makes or removes them itself)."""
    with rt.sessions() as s:
        rows = s.execute(select(Instance.id, Instance.mesh, Instance.host, Instance.state, Instance.operation_id))
        live = (InstanceState.RUNNING.value, InstanceState.PAUSED.value)
        return {
            instance_id
            for instance_id, mesh, host, state, operation_id in rows
            if operation_id is not None or (mesh and host == rt.settings.host_name and state in live)
        }
