"""The ADS server against a scripted gRPC client: nonces, ACK/NACK, push order, make-before-break, delta."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import duration_pb2
from google.rpc import status_pb2

from meshvisor.mesh.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SECRET
from meshvisor.mesh.xds import AdsServer, Nack, Packer, ResourceCache, Snapshot

from .harness import free_port


def _cluster(name: str, timeout_s: int = 1) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(name=name, connect_timeout=duration_pb2.Duration(seconds=timeout_s))


def _resources(clusters: dict[str, int], tag: str = "") -> dict[str, dict[str, Any]]:
    return {
        CLUSTER: {n: _cluster(n, t) for n, t in clusters.items()},
        ENDPOINT: {
            n: endpoint_pb2.ClusterLoadAssignment(
                cluster_name=n,
                policy=endpoint_pb2.ClusterLoadAssignment.Policy(
                    overprovisioning_factor={"value": 100 + len(tag)}
                ),
            )
            for n in clusters
        },
        LISTENER: {"l1": listener_pb2.Listener(name="l1", stat_prefix=tag)},
        ROUTE: {"r1": route_pb2.RouteConfiguration(name="r1", validate_clusters={"value": bool(tag)})},
        SECRET: {"s1": secret_pb2.Secret(name="s1", generic_secret={"secret": {"inline_string": tag}})},
    }


class Client:
    """One ADS stream, driven step by step."""

    def __init__(
        self, port: int, metadata: tuple[tuple[str, str], ...], delta: bool, channel: grpc.Channel | None = None
    ) -> None:
        self.channel = channel or grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self._out: queue.Queue[Any] = queue.Queue()
        self._in: queue.Queue[Any] = queue.Queue()
        call = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
        self._responses = call(iter(self._out.get, None), metadata=metadata)
        self.error: grpc.RpcError | None = None  # how the stream ended, if the server ended it
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self._responses:
                self._in.put(response)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.ended.set()

    def send(self, request: Any) -> None:
        self._out.put(request)

    def recv(self, timeout: float = 5.0) -> Any:
        return self._in.get(timeout=timeout)

    def quiet(self, timeout: float = 0.3) -> bool:
        try:
            self._in.get(timeout=timeout)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        self._out.put(None)
        self.channel.close()


@pytest.fixture
def server() -> Iterator[AdsServer]:
    nacks: list[Nack] = []
    # The resources of these tests are fragments (load assignments and a route that nothing names).
    ads = AdsServer("127.0.0.1", free_port(), on_nack=nacks.append, check_consistency=False)
    ads.start()
    ads.seen = nacks  # type: ignore[attr-defined]
    try:
        yield ads
    finally:
        ads.stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def _node(name: str) -> Any:
    from envoy.config.core.v3 import base_pb2

    return base_pb2.Node(id=name)


def _names(response: Any) -> list[str]:
    return sorted(_unpacked_name(r) for r in response.resources)


def _unpacked_name(resource: Any) -> str:
    for cls in (cluster_pb2.Cluster, listener_pb2.Listener, route_pb2.RouteConfiguration, secret_pb2.Secret):
        if resource.Is(cls.DESCRIPTOR):
            out = cls()
            resource.Unpack(out)
            return str(out.name)
    out = endpoint_pb2.ClusterLoadAssignment()
    resource.Unpack(out)
    return str(out.cluster_name)


NAMES: dict[str, list[str]] = {
    CLUSTER: [],
    ENDPOINT: ["c1", "c2", "c3"],
    LISTENER: [],
    ROUTE: ["r1"],
    SECRET: ["s1"],
}


def _sotw_subscribe_all(client: Client, node: str) -> dict[str, Any]:
    """Subscribe to everything (wildcard CDS/LDS, named EDS/RDS/SDS) and ACK; the last response per type."""
    names = NAMES
    last: dict[str, Any] = {}
    for i, type_url in enumerate(PUSH_ORDER):
        client.send(
            discovery_pb2.DiscoveryRequest(
                node=_node(node) if i == 0 else None, type_url=type_url, resource_names=names[type_url]
            )
        )
        response = client.recv()
        assert response.type_url == type_url
        client.send(
            discovery_pb2.DiscoveryRequest(
                type_url=type_url,
                version_info=response.version_info,
                response_nonce=response.nonce,
                resource_names=names[type_url],
            )
        )
        last[type_url] = response
    return last


def test_sotw_ack_order_and_make_before_break(server: AdsServer, clients: list[Client]) -> None:
    server.set_snapshot("n1", _resources({"c1": 1, "c2": 1}), "v1")
    client = Client(server.port, server.auth.metadata("n1"), delta=False)
    clients.append(client)
    first = _sotw_subscribe_all(client, "n1")
    assert _names(first[CLUSTER]) == ["c1", "c2"] and first[CLUSTER].version_info == "v1"
    assert _names(first[ENDPOINT]) == ["c1", "c2"]  # only what exists of the names asked for
    assert server.wait_synced("n1", "v1", 5)
    assert server.acks["n1"] == 5 and server.nacks["n1"] == 0

    # v2: c1 goes, c3 comes, everything else changes. New things first, in CDS EDS LDS RDS SDS order...
    server.set_snapshot("n1", _resources({"c2": 1, "c3": 1}, tag="x"), "v2")
    seen = []
    for _ in range(5):
        response = client.recv()
        seen.append(response.type_url)
        if response.type_url == CLUSTER:
            assert _names(response) == ["c1", "c2", "c3"]  # c1 is kept until the rest is in place
        if response.type_url == ENDPOINT:
            assert _names(response) == ["c1", "c2", "c3"]
        client.send(
            discovery_pb2.DiscoveryRequest(
                type_url=response.type_url,
                version_info="v2",
                response_nonce=response.nonce,
                resource_names=NAMES[response.type_url],
            )
        )
    assert seen == list(PUSH_ORDER)
    # ...and the stale cluster (and its load assignment) go only after every new resource was ACKed.
    for type_url in (CLUSTER, ENDPOINT):
        prune = client.recv()
        assert prune.type_url == type_url and _names(prune) == ["c2", "c3"]
        client.send(
            discovery_pb2.DiscoveryRequest(
                type_url=type_url, version_info="v2", response_nonce=prune.nonce, resource_names=NAMES[type_url]
            )
        )
    assert client.quiet()
    assert server.wait_synced("n1", "v2", 5)


def test_sotw_unchanged_types_are_skipped_but_requests_still_answered(
    server: AdsServer, clients: list[Client]
) -> None:
    server.set_snapshot("n1", _resources({"c1": 1, "c2": 1}), "v1")
    client = Client(server.port, server.auth.metadata("n1"), delta=False)
    clients.append(client)
    first = _sotw_subscribe_all(client, "n1")
    assert server.wait_synced("n1", "v1", 5)
    # The same content again: nothing to send, and the node counts as synced at the new version.
    server.set_snapshot("n1", _resources({"c1": 1, "c2": 1}), "v2")
    assert client.quiet()
    assert server.wait_synced("n1", "v2", 5)
    # Envoy asking again with the last nonce (an updated cluster warming) gets the answer again.
    eds = first[ENDPOINT]
    client.send(
        discovery_pb2.DiscoveryRequest(
            type_url=ENDPOINT,
            version_info=eds.version_info,
            response_nonce=eds.nonce,
            resource_names=NAMES[ENDPOINT],
        )
    )
    again = client.recv()
    assert again.type_url == ENDPOINT and _names(again) == ["c1", "c2"]
    client.send(
        discovery_pb2.DiscoveryRequest(
            type_url=ENDPOINT, version_info="v2", response_nonce=again.nonce, resource_names=NAMES[ENDPOINT]
        )
    )
    # A changed subscription is answered with what it now covers, though the snapshot did not change.
    client.send(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, version_info="v2", resource_names=["c1"]))
    narrowed = client.recv()
    assert narrowed.type_url == ENDPOINT and _names(narrowed) == ["c1"]
    client.send(
        discovery_pb2.DiscoveryRequest(
            type_url=ENDPOINT, version_info="v2", response_nonce=narrowed.nonce, resource_names=["c1"]
        )
    )
    assert client.quiet()
    # And a real change after all that is pushed as usual.
    server.set_snapshot("n1", _resources({"c1": 3, "c2": 1}), "v3")
    changed = client.recv()
    assert changed.type_url == CLUSTER and changed.version_info == "v3"


def test_sotw_nack_is_recorded_and_not_retried(server: AdsServer, clients: list[Client]) -> None:
    server.set_snapshot("n1", _resources({"c1": 1}), "v1")
    client = Client(server.port, server.auth.metadata("n1"), delta=False)
    clients.append(client)
    _sotw_subscribe_all(client, "n1")
    assert server.wait_synced("n1", "v1", 5)
    server.set_snapshot("n1", _resources({"c1": 0}), "v2")  # a change only in CDS
    response = client.recv()
    assert response.type_url == CLUSTER and response.version_info == "v2"
    client.send(
        discovery_pb2.DiscoveryRequest(
            type_url=CLUSTER,
            version_info="v1",  # the last good one
            response_nonce=response.nonce,
            error_detail=status_pb2.Status(code=3, message="connect_timeout: value must be greater than 0s"),
        )
    )
    nack = server.wait_nack("n1", timeout=60)
    assert nack == Nack("n1", CLUSTER, "v2", "connect_timeout: value must be greater than 0s")
    assert server.seen == [nack]  # type: ignore[attr-defined]
    assert server.nacks["n1"] == 1
    assert client.quiet()  # the same rejected content is not pushed again
    assert server.synced_version("n1") is None
    # The next good snapshot goes out and is ACKed as usual.
    server.set_snapshot("n1", _resources({"c1": 2}), "v3")
    response = client.recv()
    client.send(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info="v3", response_nonce=response.nonce))
    assert server.wait_synced("n1", "v3", 5)


def test_sotw_stale_nonce_is_ignored_and_unknown_node_waits(server: AdsServer, clients: list[Client]) -> None:
    client = Client(server.port, server.auth.metadata("late"), delta=False)
    clients.append(client)
    client.send(discovery_pb2.DiscoveryRequest(node=_node("late"), type_url=CLUSTER))
    assert client.quiet()  # no snapshot yet: nothing to say
    server.set_snapshot("late", _resources({"c1": 1}), "v1")
    response = client.recv()
    assert _names(response) == ["c1"]
    client.send(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info="v0", response_nonce="999"))
    assert client.quiet()
    assert server.acks["late"] == 0 and server.nacks["late"] == 0


def _delta_request(type_url: str, **kwargs: Any) -> discovery_pb2.DeltaDiscoveryRequest:
    return discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, **kwargs)


def test_delta_per_resource_versions_subscriptions_and_removal(server: AdsServer, clients: list[Client]) -> None:
    server.set_snapshot("d1", _resources({"c1": 1, "c2": 1}), "v1")
    client = Client(server.port, server.auth.metadata("d1"), delta=True)
    clients.append(client)
    client.send(_delta_request(CLUSTER, node=_node("d1")))  # empty first request: wildcard
    response = client.recv()
    assert sorted(r.name for r in response.resources) == ["c1", "c2"]
    assert all(r.version for r in response.resources) and response.system_version_info == "v1"
    versions = {r.name: r.version for r in response.resources}
    client.send(_delta_request(CLUSTER, response_nonce=response.nonce))

    client.send(_delta_request(ENDPOINT, resource_names_subscribe=["c1"]))
    response = client.recv()
    assert [r.name for r in response.resources] == ["c1"]
    client.send(_delta_request(ENDPOINT, response_nonce=response.nonce, resource_names_subscribe=["c2"]))
    response = client.recv()
    assert [r.name for r in response.resources] == ["c2"]  # only the newly subscribed one
    client.send(_delta_request(ENDPOINT, response_nonce=response.nonce, resource_names_unsubscribe=["c1"]))
    assert client.quiet()
    client.send(_delta_request(ENDPOINT, resource_names_subscribe=["nope"]))
    response = client.recv()  # a name that does not exist is reported as removed, once
    assert (list(response.removed_resources), list(response.resources)) == (["nope"], [])
    client.send(_delta_request(ENDPOINT, response_nonce=response.nonce, resource_names_unsubscribe=["nope"]))
    assert client.quiet()

    # c1 changes, c2 goes away, c3 comes: updates first, removal after they are ACKed.
    server.set_snapshot("d1", _resources({"c1": 5, "c3": 1}), "v2")
    response = client.recv()
    assert response.type_url == CLUSTER and sorted(r.name for r in response.resources) == ["c1", "c3"]
    assert {r.name: r.version for r in response.resources}["c1"] != versions["c1"]
    assert not response.removed_resources
    client.send(_delta_request(CLUSTER, response_nonce=response.nonce))
    removals = {}
    for _ in range(2):
        response = client.recv()
        removals[response.type_url] = list(response.removed_resources)
        assert not response.resources
        client.send(_delta_request(response.type_url, response_nonce=response.nonce))
    assert removals == {CLUSTER: ["c2"], ENDPOINT: ["c2"]}

    # NACK of a delta response.
    server.set_snapshot("d1", _resources({"c1": 0, "c3": 1}), "v3")
    response = client.recv()
    assert [r.name for r in response.resources] == ["c1"]
    client.send(
        _delta_request(
            CLUSTER, response_nonce=response.nonce, error_detail=status_pb2.Status(code=3, message="bad")
        )
    )
    assert server.wait_nack("d1", timeout=60) == Nack("d1", CLUSTER, "v3", "bad")


def test_delta_reconnect_with_initial_versions_sends_only_changes(
    server: AdsServer, clients: list[Client]
) -> None:
    server.set_snapshot("d2", _resources({"c1": 1, "c2": 1}), "v1")
    client = Client(server.port, server.auth.metadata("d2"), delta=True)
    clients.append(client)
    client.send(_delta_request(CLUSTER, node=_node("d2"), resource_names_subscribe=["*"]))
    response = client.recv()
    versions = {r.name: r.version for r in response.resources}
    client.send(_delta_request(CLUSTER, response_nonce=response.nonce))
    client.close()

    server.set_snapshot("d2", _resources({"c1": 1, "c2": 7}), "v2")
    again = Client(server.port, server.auth.metadata("d2"), delta=True)
    clients.append(again)
    again.send(
        _delta_request(
            CLUSTER, node=_node("d2"), resource_names_subscribe=["*"], initial_resource_versions=versions
        )
    )
    response = again.recv()
    assert [r.name for r in response.resources] == ["c2"]


def test_snapshot_type_mismatch_is_rejected() -> None:
    ads = AdsServer()
    with pytest.raises(ValueError, match="filed under"):
        ads.set_snapshot("n", {LISTENER: {"c": _cluster("c")}}, "v1")


def test_a_packer_serializes_a_shared_message_once_and_versions_follow_content(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = _cluster("c")
    packer = Packer()
    calls: list[str] = []
    real = ResourceCache.pack
    monkeypatch.setattr(ResourceCache, "pack", lambda self, t, n, m: calls.append(n) or real(self, t, n, m))
    one = packer.snapshot({CLUSTER: {"c": shared, "d": _cluster("d")}})
    two = packer.snapshot({CLUSTER: {"c": shared, "d": _cluster("d")}})
    assert calls == ["c", "d", "d"]  # the shared object once, each fresh one on its own
    assert one.resources[CLUSTER]["c"] is two.resources[CLUSTER]["c"]
    assert (
        one.version == two.version == Snapshot.build({CLUSTER: {"c": _cluster("c"), "d": _cluster("d")}}).version
    )
    changed = _cluster("c")
    changed.connect_timeout.FromMilliseconds(7_000)
    assert packer.snapshot({CLUSTER: {"c": changed, "d": _cluster("d")}}).version != one.version
    assert packer.snapshot({CLUSTER: {"c": shared, "d": _cluster("d")}}, "v9").version == "v9"
