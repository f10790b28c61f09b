"""Simulated Envoys for `xds_push`: many state-of-the-world ADS streams in one process (grpc.aio).

    python bench/xds_clients.py PORT NODE_PREFIX COUNT [--per-channel K] [--secret FILE]

Opens COUNT streams to 127.0.0.1:PORT, node ids `<NODE_PREFIX>-<i>`, K streams per gRPC channel (each channel its
own TCP connection). Each stream subscribes the way Envoy does: CDS and LDS wildcard first; then, from what
arrives, EDS for the clusters of type EDS, RDS for the route names of the listeners' HTTP connection managers and
SDS for the secrets their TLS contexts name. Every response is ACKed (version and nonce of the response, the
current names). With `--secret`, each stream carries its node's credential derived from the secret in FILE, as
the control plane's sidecars do (`meshvisor.mesh.xds.auth`). Runs until stdin closes or it is terminated;
prints `started` once every stream is open.

To spend little CPU per response, resource names are read straight from the serialized bytes (field 1, which the
server writes first: it serializes deterministically); a response is decoded in full only when its set of names
changed, i.e. when the subscriptions that follow from it may have changed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from meshvisor.mesh.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from meshvisor.mesh.xds.auth import NodeAuth

_P = "type.googleapis.com/"
HCM = _P + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
UPSTREAM_TLS = _P + tls_pb2.UpstreamTlsContext.DESCRIPTOR.full_name
DOWNSTREAM_TLS = _P + tls_pb2.DownstreamTlsContext.DESCRIPTOR.full_name


def resource_name(value: bytes) -> str:
    """Field 1 (the name of every xDS resource type used here) when it is the first field, else ''."""
    if not value or value[0] != 0x0A:
        return ""
    length, shift, i = 0, 0, 1
    while True:
        byte = value[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            break
        shift += 7
    return value[i : i + length].decode()


def _secret_names(socket: base_pb2.TransportSocket) -> set[str]:
    config = socket.typed_config
    if config.type_url == UPSTREAM_TLS:
        context = tls_pb2.UpstreamTlsContext.FromString(config.value).common_tls_context
    elif config.type_url == DOWNSTREAM_TLS:
        context = tls_pb2.DownstreamTlsContext.FromString(config.value).common_tls_context
    else:
        return set()
    names = {s.name for s in context.tls_certificate_sds_secret_configs}
    validation = context.combined_validation_context.validation_context_sds_secret_config
    if validation.name:
        names.add(validation.name)
    return names


class Client:
    failed = 0  # streams that ended with an error (the first few are printed)

    def __init__(
        self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, node_id: str, auth: NodeAuth | None
    ) -> None:
        self.stub = stub
        self.node_id = node_id
        self.metadata = auth.metadata(node_id) if auth is not None else None
        self.out: list[discovery_pb2.DiscoveryRequest] = []  # to write after the response in hand
        self.names: dict[str, list[str]] = {CLUSTER: [], LISTENER: []}  # what is subscribed, per type
        self.seen: dict[str, frozenset[str]] = {}  # names in the last response, per type
        self.secrets: dict[str, set[str]] = {CLUSTER: set(), LISTENER: set()}

    def _subscribe(self, type_url: str, names: list[str]) -> None:
        if self.names.get(type_url) != names:
            self.names[type_url] = names
            self.out.append(discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names))

    def _follow(self, response: discovery_pb2.DiscoveryResponse) -> None:
        """The subscriptions a changed set of clusters or listeners leads to (Envoy's cluster/listener init)."""
        if response.type_url == CLUSTER:
            eds: list[str] = []
            secrets: set[str] = set()
            for body in response.resources:
                cluster = cluster_pb2.Cluster.FromString(body.value)
                if cluster.type == cluster_pb2.Cluster.EDS:
                    eds.append(cluster.eds_cluster_config.service_name or cluster.name)
                if cluster.HasField("transport_socket"):
                    secrets |= _secret_names(cluster.transport_socket)
            self.secrets[CLUSTER] = secrets
            self._subscribe(ENDPOINT, sorted(eds))
        elif response.type_url == LISTENER:
            routes: list[str] = []
            secrets = set()
            for body in response.resources:
                listener = listener_pb2.Listener.FromString(body.value)
                for chain in listener.filter_chains:
                    if chain.HasField("transport_socket"):
                        secrets |= _secret_names(chain.transport_socket)
                    for network_filter in chain.filters:
                        if network_filter.typed_config.type_url == HCM:
                            manager = hcm_pb2.HttpConnectionManager.FromString(network_filter.typed_config.value)
                            if manager.HasField("rds"):
                                routes.append(manager.rds.route_config_name)
            self.secrets[LISTENER] = secrets
            self._subscribe(ROUTE, sorted(routes))
        else:
            return
        self._subscribe(SECRET, sorted(self.secrets[CLUSTER] | self.secrets[LISTENER]))

    async def run(self) -> None:
        node = base_pb2.Node(id=self.node_id, cluster="sim")
        # Reads and writes from this one task (the call's own write API, not a request iterator).
        call = self.stub.StreamAggregatedResources(metadata=self.metadata)
        try:
            await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=CLUSTER))
            await call.write(discovery_pb2.DiscoveryRequest(type_url=LISTENER))
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    return
                type_url = response.type_url
                names = frozenset(resource_name(r.value) for r in response.resources)
                changed = self.seen.get(type_url) != names
                self.seen[type_url] = names
                self.out.append(
                    discovery_pb2.DiscoveryRequest(
                        type_url=type_url,
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                        resource_names=self.names.get(type_url, []),
                    )
                )
                if changed:
                    self._follow(response)
                requests, self.out = self.out, []
                for request in requests:
                    await call.write(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                Client.failed += 1
                if Client.failed <= 3:
                    print(f"{self.node_id}: {exc.code()} {exc.debug_error_string()}", file=sys.stderr, flush=True)


async def main(port: int, prefix: str, count: int, per_channel: int, auth: NodeAuth | None) -> None:
    channels = []
    tasks = []
    for start in range(0, count, per_channel):
        # A local subchannel pool: every channel gets its own connection, as separate Envoys would.
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}",
            options=[("grpc.use_local_subchannel_pool", 1), ("grpc.lb_policy_name", "pick_first")],
        )
        channels.append(channel)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        for i in range(start, min(start + per_channel, count)):
            tasks.append(asyncio.ensure_future(Client(stub, f"{prefix}-{i}", auth).run()))
    print("started", flush=True)
    loop = asyncio.get_running_loop()
    eof = loop.run_in_executor(None, sys.stdin.read)
    await eof
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close(None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("prefix")
    parser.add_argument("count", type=int)
    parser.add_argument("--per-channel", type=int, default=50)
    parser.add_argument("--secret", type=Path, help="the xDS node secret the server checks credentials with")
    args = parser.parse_args()
    node_auth = NodeAuth.load(args.secret) if args.secret is not None else None
    asyncio.run(main(args.port, args.prefix, args.count, args.per_channel, node_auth))
