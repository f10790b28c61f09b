"""One instance shape: the fields an instance has, as one Pydantic model family (pure: no database, no driver).

    InstanceBase        what is asked for and shown alike: kind, image, sizes, command, env, mesh, VM maxima
    InstanceFields      + how it is attached and placed: networks, volumes, cloud_init, host, placement
                        (a stack file's instance, `stacks.spec.Instance`, derives from it)
    PlacementConstraints  where the scheduler may put it: affinity and anti-affinity groups, host labels
    InstanceRequest     + its name, its secret environment values and `privileged` (the API's alone): what
                        `requests.create` takes (the API's body, `InstanceCreate`, is one)
    InstanceChange      a change of size, restart policy or security groups (PATCH)

These models hold types and defaults only; the rules of kinds and counts are `meshvisor.core.instance_rules`
(which the stack file applies in its validation and `requests.check_create` applies with what needs the host
and the database). The API's answer, `InstancePublic`, derives from `InstanceBase`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from meshvisor.core import instance_rules as rules
from meshvisor.core.names import NAME_SCHEMA
from meshvisor.core.types import InstanceKind, RestartPolicy

# A platform name as the API's document describes it (the request code checks it, answering 400 with its rule).
Name = Annotated[str, Field(json_schema_extra=NAME_SCHEMA)]


def _lower(value: object) -> object:
    """Enumerations are compared without case (`VM` is `vm`); the platform stores them in lower case."""
    return value.lower() if isinstance(value, str) else value


Lower = BeforeValidator(_lower)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetworkAttachment(Strict):
    network: Name
    ip: str | None = None
    project: Name | None = Field(
        default=None, description="the network's project when it is another's that shares it (`shared_with`)"
    )


class VolumeAttachment(Strict):
    volume: Name
    path: str | None = Field(
        default=None,
        description="containers: where it is mounted, absolute and normalised, not / (VMs: none)",
        json_schema_extra={"pattern": rules.MOUNT_PATH_PATTERN, "maxLength": rules.MAX_MOUNT_PATH},
    )
    read_only: StrictBool = False


class InstanceBase(BaseModel):
    kind: Annotated[InstanceKind, Field(strict=False), Lower] = InstanceKind.CONTAINER
    image: str
    cpus: float = Field(default=1.0, json_schema_extra={"exclusiveMinimum": 0})
    memory_mb: int = Field(default=256, json_schema_extra={"minimum": rules.MIN_CONTAINER_MEMORY_MB})
    command: list[str] = Field(
        default_factory=list, description="containers only", json_schema_extra={"maxItems": rules.MAX_COMMAND_ARGS}
    )
    env: dict[str, str] = Field(default_factory=dict, description="containers only", json_schema_extra=rules.ENV)
    restart_policy: Annotated[RestartPolicy, Field(strict=False), Lower] = RestartPolicy.NO
    mesh: dict[str, Any] | None = None
    security_groups: list[str] = Field(default_factory=list, description="names of its security groups")
    max_cpus: int | None = Field(default=None, description="VMs: vCPUs it may grow to while running")
    max_memory_mb: int | None = Field(default=None, description="VMs: memory it may grow to while running")
    disk_mb: int = Field(
        default=0,
        description="VMs: size of a scratch data disk (/dev/vda); 0 for none",
        json_schema_extra={"minimum": 0, "maximum": rules.MAX_DISK_MB},
    )
    ha: StrictBool = Field(default=False, description="restarted on another host when its own is offline for long")


class PlacementConstraints(Strict):
    """Where an instance without `host` may go (OpenStack's server groups, Nomad's constraints)."""

    affinity: str | None = Field(default=None, description="a group whose members all run on one host")
    anti_affinity: str | None = Field(default=None, description="a group no two members of share a host")
    host_labels: dict[str, str] = Field(default_factory=dict, description="labels the host must carry")


class InstanceFields(InstanceBase):
    networks: Sequence[NetworkAttachment] = Field(
        default_factory=list, json_schema_extra={"maxItems": rules.MAX_NETWORKS}
    )
    volumes: Sequence[VolumeAttachment] = Field(
        default_factory=list, json_schema_extra={"maxItems": rules.MAX_VOLUMES}
    )
    cloud_init: dict[str, Any] | None = Field(default=None, description="VMs: ssh_keys, user_data, ...")
    host: str | None = Field(default=None, description="the host to run on (GET /v1/hosts); default: scheduled")
    placement: PlacementConstraints | None = Field(default=None, description="where the scheduler may put it")


class InstanceRequest(InstanceFields):
    model_config = ConfigDict(extra="forbid")

    name: Name
    privileged: StrictBool = Field(
        default=False,
        description="containers: run outside the user namespace (root inside is the host's) with Docker's default"
        " capabilities (platform admins only; not in stack files)",
    )
    secret_env: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra=rules.ENV,
        description="containers only: environment values stored sealed and shown as `(secret)`; names not in env",
    )

    def whole_env(self) -> InstanceRequest:
        """This request with its secret values in `env`: the environment's rules and bounds hold for all of it."""
        return self.model_copy(update={"env": {**self.env, **self.secret_env}})


class InstanceChange(Strict):
    cpus: float | None = Field(default=None, json_schema_extra={"exclusiveMinimum": 0})
    memory_mb: int | None = Field(default=None, json_schema_extra={"minimum": rules.MIN_CONTAINER_MEMORY_MB})
    restart_policy: RestartPolicy | None = None
    security_groups: list[str] | None = Field(default=None, description="replaces the list; [] leaves all")
    ha: StrictBool | None = Field(
        default=None, description="restart it on another host when its own is gone for long"
    )
