"""The xDS server: state-of-the-world and delta ADS from per-node snapshots (what `ControlPlane` feeds).

cache        Snapshot, Packer and the per-server ResourceCache: resources packed once per distinct content,
             versions that follow content
consistency  a snapshot's EDS and RDS resources are exactly those its clusters and listeners name
wire         the protobuf wire pieces responses are joined from
stream       what both protocols share: per-type state, nonces, ACK/NACK bookkeeping, make-before-break
sotw, delta  the two request handlers (StreamAggregatedResources, DeltaAggregatedResources)
nodes        per-node state on the server's event loop: snapshots, streams, synced versions, waiters
auth         NodeAuth: the per-node credential every stream must carry (HMAC of the node id), checked once
server       AdsServer: the gRPC server's lifecycle in a background thread, snapshots in, observation out;
             TlsListener: its mutual-TLS port for other hosts' relays
relay        XdsRelay: on another host, a local socket for its sidecars, forwarded to that port
"""

from .auth import NodeAuth, Refused
from .cache import Packer, Resource, ResourceCache, Snapshot, content_version
from .consistency import InconsistentSnapshot
from .relay import XdsRelay
from .server import SERVER_OPTIONS, AdsServer, TlsListener, tune_gc
from .stream import Nack

__all__ = [
    "SERVER_OPTIONS",
    "AdsServer",
    "InconsistentSnapshot",
    "Nack",
    "NodeAuth",
    "Packer",
    "Refused",
    "Resource",
    "ResourceCache",
    "Snapshot",
    "TlsListener",
    "XdsRelay",
    "content_version",
    "tune_gc",
]
