"""Operation kinds: the typed names of what an operation does to what, and the facts each kind carries.

An operation row stores its resource type and its action as plain strings (the database and the REST API keep
those values); here they get their types, and every (resource, action) pair a request may write is one kind:

    ResourceType    instance, image, network, volume, stack, host; per type (`RESOURCES`): the model whose
                    `operation_id` column is the lock, and whether it lives on one host (its operations then
                    run on that host's queue, and a worker of that host resumes them)
    OperationAction create, delete, start, ..., apply
    OperationKind   one member per (resource, action), with its failure policy (`OnFailure`)
    Handler         the steps a worker runs for one kind

The handler of each kind is named by the reconciler's table (`reconciler.HANDLERS`), above the families that
hold the steps; this module is the part of the table that the layers below it read: the requests that write
operations, the dispatcher that queues them and the worker that resumes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import TYPE_CHECKING

from meshvisor.platform.state.models import Host, Image, Instance, Network, Operation, Stack, Volume

if TYPE_CHECKING:
    from meshvisor.platform.runtime import Runtime

Lockable = type[Instance] | type[Image] | type[Network] | type[Volume] | type[Stack] | type[Host]
Handler = Callable[["Runtime", Operation], None]


class ResourceType(StrEnum):
    INSTANCE = "instance"
    IMAGE = "image"
    NETWORK = "network"
    VOLUME = "volume"
    STACK = "stack"
    HOST = "host"

    @property
    def lock(self) -> Lockable:
        """The model whose `operation_id` column is this resource's lock."""
        return RESOURCES[self].lock

    @property
    def host_bound(self) -> bool:
        """True when the resource lives on one host: its operations run there."""
        return RESOURCES[self].host_bound


@dataclass(frozen=True)
class ResourceFacts:
    lock: Lockable
    host_bound: bool


RESOURCES: Mapping[ResourceType, ResourceFacts] = {
    ResourceType.INSTANCE: ResourceFacts(Instance, host_bound=True),
    ResourceType.IMAGE: ResourceFacts(Image, host_bound=False),
    ResourceType.NETWORK: ResourceFacts(Network, host_bound=False),
    ResourceType.VOLUME: ResourceFacts(Volume, host_bound=True),
    ResourceType.STACK: ResourceFacts(Stack, host_bound=False),
    ResourceType.HOST: ResourceFacts(Host, host_bound=False),  # run on the platform's queue, about a host
}


class OperationAction(StrEnum):
    CREATE = "create"
    DELETE = "delete"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    PAUSE = "pause"
    RESUME = "resume"
    UPDATE = "update"
    RESIZE = "resize"
    SNAPSHOT = "snapshot"
    REVERT = "revert"
    DELETE_SNAPSHOT = "delete-snapshot"
    ATTACH_NETWORK = "attach-network"
    DETACH_NETWORK = "detach-network"
    ATTACH_VOLUME = "attach-volume"
    DETACH_VOLUME = "detach-volume"
    PUSH = "push"
    APPLY = "apply"
    MIGRATE = "migrate"
    EVACUATE = "evacuate"
    FORWARD = "forward"


class OnFailure(Enum):
    """What a failed operation leaves on its resource; its lock is released in every case."""

    INSTANCE_ERROR = "the instance goes to `error`, with the message"
    OBJECT_ERROR = "the object goes to `error`, with the message"
    UNLOCK = "nothing more: the object stays as the steps left it"


class OperationKind(Enum):
    """One kind of operation: its value is the (resource type, action) pair its row stores."""

    resource: ResourceType
    action: OperationAction
    on_failure: OnFailure

    def __new__(cls, resource: ResourceType, action: OperationAction, on_failure: OnFailure) -> OperationKind:
        kind = object.__new__(cls)
        kind._value_ = (resource, action)
        kind.resource, kind.action, kind.on_failure = resource, action, on_failure
        return kind

    NETWORK_CREATE = ResourceType.NETWORK, OperationAction.CREATE, OnFailure.OBJECT_ERROR
    NETWORK_DELETE = ResourceType.NETWORK, OperationAction.DELETE, OnFailure.OBJECT_ERROR
    INSTANCE_CREATE = ResourceType.INSTANCE, OperationAction.CREATE, OnFailure.INSTANCE_ERROR
    INSTANCE_START = ResourceType.INSTANCE, OperationAction.START, OnFailure.INSTANCE_ERROR
    INSTANCE_STOP = ResourceType.INSTANCE, OperationAction.STOP, OnFailure.INSTANCE_ERROR
    INSTANCE_RESTART = ResourceType.INSTANCE, OperationAction.RESTART, OnFailure.INSTANCE_ERROR
    INSTANCE_PAUSE = ResourceType.INSTANCE, OperationAction.PAUSE, OnFailure.INSTANCE_ERROR
    INSTANCE_RESUME = ResourceType.INSTANCE, OperationAction.RESUME, OnFailure.INSTANCE_ERROR
    INSTANCE_UPDATE = ResourceType.INSTANCE, OperationAction.UPDATE, OnFailure.INSTANCE_ERROR
    INSTANCE_SNAPSHOT = ResourceType.INSTANCE, OperationAction.SNAPSHOT, OnFailure.INSTANCE_ERROR
    INSTANCE_REVERT = ResourceType.INSTANCE, OperationAction.REVERT, OnFailure.INSTANCE_ERROR
    INSTANCE_DELETE_SNAPSHOT = ResourceType.INSTANCE, OperationAction.DELETE_SNAPSHOT, OnFailure.INSTANCE_ERROR
    INSTANCE_DELETE = ResourceType.INSTANCE, OperationAction.DELETE, OnFailure.INSTANCE_ERROR
    INSTANCE_ATTACH_NETWORK = ResourceType.INSTANCE, OperationAction.ATTACH_NETWORK, OnFailure.INSTANCE_ERROR
    INSTANCE_DETACH_NETWORK = ResourceType.INSTANCE, OperationAction.DETACH_NETWORK, OnFailure.INSTANCE_ERROR
    INSTANCE_ATTACH_VOLUME = ResourceType.INSTANCE, OperationAction.ATTACH_VOLUME, OnFailure.INSTANCE_ERROR
    INSTANCE_DETACH_VOLUME = ResourceType.INSTANCE, OperationAction.DETACH_VOLUME, OnFailure.INSTANCE_ERROR
    # A port forward of the instance made or removed on its host (the forward's row says which); one its host
    # refuses goes, and the operation says why: the instance is as it was.
    INSTANCE_FORWARD = ResourceType.INSTANCE, OperationAction.FORWARD, OnFailure.UNLOCK
    # A migration that fails puts the instance back on its host itself (`instances.migration`).
    INSTANCE_MIGRATE = ResourceType.INSTANCE, OperationAction.MIGRATE, OnFailure.UNLOCK
    VOLUME_CREATE = ResourceType.VOLUME, OperationAction.CREATE, OnFailure.OBJECT_ERROR
    VOLUME_RESIZE = ResourceType.VOLUME, OperationAction.RESIZE, OnFailure.UNLOCK
    VOLUME_SNAPSHOT = ResourceType.VOLUME, OperationAction.SNAPSHOT, OnFailure.UNLOCK
    VOLUME_REVERT = ResourceType.VOLUME, OperationAction.REVERT, OnFailure.UNLOCK
    VOLUME_DELETE_SNAPSHOT = ResourceType.VOLUME, OperationAction.DELETE_SNAPSHOT, OnFailure.UNLOCK
    VOLUME_DELETE = ResourceType.VOLUME, OperationAction.DELETE, OnFailure.OBJECT_ERROR
    IMAGE_CREATE = ResourceType.IMAGE, OperationAction.CREATE, OnFailure.OBJECT_ERROR
    IMAGE_PUSH = ResourceType.IMAGE, OperationAction.PUSH, OnFailure.UNLOCK
    IMAGE_DELETE = ResourceType.IMAGE, OperationAction.DELETE, OnFailure.OBJECT_ERROR
    STACK_APPLY = ResourceType.STACK, OperationAction.APPLY, OnFailure.UNLOCK
    HOST_EVACUATE = ResourceType.HOST, OperationAction.EVACUATE, OnFailure.UNLOCK

    @classmethod
    def find(cls, resource_type: str, action: str) -> OperationKind | None:
        """The kind of an operation row (plain strings compare equal to the typed names), or None."""
        return _BY_NAMES.get((resource_type, action))

    @classmethod
    def of(cls, resource_type: str, action: str) -> OperationKind:
        """The kind of (resource type, action), which must be one (ValueError otherwise)."""
        kind = _BY_NAMES.get((resource_type, action))
        if kind is None:
            raise ValueError(f"no operation kind {resource_type} {action}")
        return kind

    @property
    def lock(self) -> Lockable:
        return self.resource.lock

    @property
    def host_bound(self) -> bool:
        return self.resource.host_bound


_BY_NAMES: Mapping[tuple[str, str], OperationKind] = {(kind.resource, kind.action): kind for kind in OperationKind}
