"""Thousands of sidecars connecting at once (a control plane restart) all get their config: none of their streams
is cancelled by gRPC core while the server is busy taking the others in."""

from __future__ import annotations

import asyncio
import threading

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import duration_pb2

from meshvisor.mesh.resources import CLUSTER
from meshvisor.mesh.xds import AdsServer

from .harness import free_port

STREAMS = 3_000  # gRPC core's default: past 1,000 waiting streams it cancels new ones at random, past 3,000 all
PER_CHANNEL = 100
SYNC_TIMEOUT_S = 120.0


async def _sidecars(ads: AdsServer, count: int, failures: list[str], stop: asyncio.Event) -> None:
    """`count` SotW streams opened at once, each subscribing to CDS and ACKing what arrives until `stop`."""

    async def one(stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, node_id: str) -> None:
        call = stub.StreamAggregatedResources(metadata=ads.auth.metadata(node_id))
        try:
            await call.write(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id=node_id), type_url=CLUSTER))
            while not stop.is_set():
                response = await call.read()
                if response is grpc.aio.EOF:
                    return
                await call.write(
                    discovery_pb2.DiscoveryRequest(
                        type_url=CLUSTER, version_info=response.version_info, response_nonce=response.nonce
                    )
                )
        except grpc.aio.AioRpcError as exc:
            if not stop.is_set():
                failures.append(f"{node_id}: {exc.code().name} {exc.details()}")
        finally:
            call.cancel()

    target, options = f"127.0.0.1:{ads.port}", [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target, options=options)]
    tasks = []
    for i in range(count):
        if i and i % PER_CHANNEL == 0:
            channels.append(grpc.aio.insecure_channel(target, options=options))
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channels[-1])
        tasks.append(asyncio.ensure_future(one(stub, f"many-{i}")))
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()


def test_thousands_of_streams_at_once_all_sync() -> None:
    ads = AdsServer("127.0.0.1", free_port())
    ads.start()
    nodes = [f"many-{i}" for i in range(STREAMS)]
    cluster = cluster_pb2.Cluster(name="c", connect_timeout=duration_pb2.Duration(seconds=1))
    ads.set_snapshots({node: {CLUSTER: {"c": cluster}} for node in nodes}, "v1")
    failures: list[str] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    clients = threading.Thread(
        target=loop.run_until_complete, args=(_sidecars(ads, STREAMS, failures, stop),), daemon=True
    )
    clients.start()
    try:
        synced = ads.wait_all_synced(nodes, "v1", SYNC_TIMEOUT_S)
        missing = [n for n in nodes if ads.synced_version(n) != "v1"]
        assert synced, f"{len(missing)} of {STREAMS} sidecars not synced; stream errors: {failures[:5]}"
        assert not failures
        # and a change reaches them all on the streams they have
        changed = cluster_pb2.Cluster(name="c", connect_timeout=duration_pb2.Duration(seconds=2))
        ads.set_snapshots({node: {CLUSTER: {"c": changed}} for node in nodes}, "v2")
        assert ads.wait_all_synced(nodes, "v2", SYNC_TIMEOUT_S)
        assert not failures
    finally:
        loop.call_soon_threadsafe(stop.set)
        clients.join(30)
        ads.stop()
        loop.close()
