"""Removing a host that is gone for good: only an offline host that holds nothing any more. Whether a host runs
VMs: where its libvirt daemon runs."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from pyroute2 import netns as pyroute2_netns
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from meshvisor.core.errors import Conflict, NotFound
from meshvisor.core.names import new_id
from meshvisor.core.types import InstanceKind, OperationStatus
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events
from meshvisor.platform.state.db import insert_or_find, make_engine, make_sessionmaker, migrate, transaction
from meshvisor.platform.state.models import Host, Instance, Operation, StoragePool, utcnow
from meshvisor.platform.volumes import pools

from .conftest import add_ready_image


def other_host(runtime: Runtime, name: str, tunnel_ip: str, seen_ago_s: float) -> None:
    with transaction(runtime.sessions) as s:
        s.add(
            Host(
                id=new_id(),
                name=name,
                tunnel_ip=tunnel_ip,
                netns=f"{runtime.settings.host_prefix}-{name}",
                vm_capable=False,
                cpus=2,
                memory_mb=1024,
                last_seen=utcnow() - timedelta(seconds=seen_ago_s),
            )
        )


def test_only_an_offline_host_holding_nothing_is_removed(runtime: Runtime) -> None:
    other_host(runtime, "alive", "10.213.140.2", 0)
    other_host(runtime, "gone", "10.213.140.3", 0)
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        made, _ = instances.create(
            s, InstanceRequest(name="left", kind=InstanceKind.CONTAINER, image="busybox", host="gone")
        )
        left = made.id
        last = events.latest_id(s)
    with transaction(runtime.sessions) as s:  # its agent made the instance, then went away
        for op in s.scalars(select(Operation).where(Operation.host == "gone")):
            op.status = OperationStatus.SUCCEEDED
        gone = s.scalar(select(Host).where(Host.name == "gone"))
        assert gone is not None
        gone.last_seen = utcnow() - timedelta(hours=1)
    for name, error, message in (
        ("nowhere", NotFound, "host 'nowhere' not found"),
        (runtime.settings.host_name, Conflict, "this platform's own host"),
        ("alive", Conflict, "online"),
        ("gone", Conflict, "1 instance"),
    ):
        with pytest.raises(error, match=message), transaction(runtime.sessions) as s:
            hosts.remove(s, name, runtime.settings)
    with runtime.sessions() as s:
        assert [h.name for h in hosts.all_hosts(s)] == sorted(["alive", "gone", runtime.settings.host_name])
        assert hosts.remote_endpoints(s, runtime.settings.host_name) == ("10.213.140.2", "10.213.140.3")
    with transaction(runtime.sessions) as s:
        s.delete(s.get(Instance, left))
        s.add(
            Operation(
                id=new_id(),
                host="gone",
                resource_type="network",
                resource_id=new_id(),
                resource_name="late",
                action="create",
            )
        )
    with pytest.raises(Conflict, match="1 operation"), transaction(runtime.sessions) as s:
        hosts.remove(s, "gone", runtime.settings)  # queued for it: it would never run
    with transaction(runtime.sessions) as s:
        for op in s.scalars(select(Operation).where(Operation.host == "gone")):
            op.status = OperationStatus.CANCELLED
    with transaction(runtime.sessions) as s:  # the default pool its agent made goes with it
        elsewhere = runtime.settings.data_dir / "g"
        gone = runtime.settings.model_copy(update={"host_name": "gone", "data_dir": elsewhere})
        assert pools.ensure_default_pool(s, gone) is not None
    with transaction(runtime.sessions) as s:
        hosts.remove(s, "gone", runtime.settings)
    with runtime.sessions() as s:
        assert "gone" not in [h.name for h in hosts.all_hosts(s)]
        assert s.scalar(select(StoragePool).where(StoragePool.host == "gone")) is None
        # The other hosts' next pass drops its tunnel endpoint from every network's flood list.
        assert hosts.remote_endpoints(s, runtime.settings.host_name) == ("10.213.140.2",)
        seen = [(e.resource_type, e.resource_name, e.data["state"]) for e in events.since(s, last)]
        assert ("host", "gone", "deleted") in seen


def test_an_insert_that_lost_a_race_takes_the_winners_row_and_keeps_the_rest(postgres_url: str) -> None:
    """The API and its host's worker start together on a fresh database: both look, find nothing, and insert the
    host (and the default pool). The loser's insert clashes: it gets the winner's row, and the rest of its
    transaction stands (before, its rollback took the admin token and the host with it, and the API died)."""
    migrate(postgres_url)
    engine = make_engine(postgres_url)
    sessions = make_sessionmaker(engine)
    try:
        late = sessions()
        late.add(Host(id=new_id(), name="witness", tunnel_ip="10.227.9.10"))  # the rest of its transaction
        late.flush()
        with transaction(sessions) as first:  # the winner, between the loser's look and its insert
            first.add(Host(id=new_id(), name="race", tunnel_ip="10.227.9.9"))

        def find() -> Host | None:
            return late.scalar(select(Host).where(Host.name == "race"))

        mine = Host(id=new_id(), name="race", tunnel_ip="10.227.9.9")
        got = insert_or_find(late, mine, find)
        assert got is not mine and got.name == "race"
        late.commit()
        late.close()
        with sessions() as check:
            names = sorted(check.scalars(select(Host.name).where(Host.name.in_(["race", "witness"]))))
            assert names == ["race", "witness"]
            other = Host(id=new_id(), name="other", tunnel_ip="10.227.9.9")  # a clash on another key
            with pytest.raises(IntegrityError):
                insert_or_find(check, other, lambda: None)
            check.rollback()
            check.query(Host).filter(Host.name.in_(["race", "witness"])).delete()
            check.commit()
    finally:
        engine.dispose()


@contextmanager
def listener_in(netns: str, path: Path) -> Iterator[None]:
    """A process inside `netns` listening on the unix socket `path`, as a libvirt daemon started there would."""
    script = (
        "import socket, sys\n"
        f"s = socket.socket(socket.AF_UNIX); s.bind({str(path)!r}); s.listen(16)\n"
        "print('listening', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"listening\n"
        yield
    finally:
        proc.kill()
        proc.wait()


def test_a_host_in_a_namespace_runs_vms_only_on_a_libvirt_daemon_inside_it(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Its bridges and taps are in its namespace: a daemon elsewhere (the machine's, or one in the root namespace)
    could not put its VMs on them."""
    netns = f"{runtime.settings.host_prefix}-vmhost"
    pyroute2_netns.create(netns)
    try:
        inside, outside = tmp_path / "inside-sock", tmp_path / "outside-sock"
        with listener_in(netns, inside), socket.socket(socket.AF_UNIX) as root_listener:
            root_listener.bind(str(outside))
            root_listener.listen(1)
            for uri, expected in (
                (f"qemu+unix:///session?socket={inside}", True),
                (f"qemu+unix:///session?socket={outside}", False),
                (f"qemu+unix:///session?socket={tmp_path / 'nobody-sock'}", False),
                ("qemu:///system", False),
            ):
                settings = runtime.settings.model_copy(
                    update={
                        "host_name": "vmhost",
                        "tunnel_ip": "10.213.141.2",
                        "host_netns": netns,
                        "libvirt_uri": uri,
                    }
                )
                assert hosts.runs_vms(settings) is expected, uri
                with transaction(runtime.sessions) as s:
                    assert hosts.register(s, settings).vm_capable is expected, uri
    finally:
        pyroute2_netns.remove(netns)
    assert hosts.runs_vms(runtime.settings)  # a host in the root namespace: the machine's daemon
