"""Request bodies (Pydantic 2). Types and shapes here; rules that need the database or host live in platform."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from meshvisor.core.types import InstanceKind, RestartPolicy


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetworkAttachment(Strict):
    network: str
    ip: str | None = None


class VolumeAttachment(Strict):
    volume: str
    path: str


class InstanceCreate(Strict):
    name: str
    kind: InstanceKind = InstanceKind.CONTAINER
    image: str
    cpus: float = 1.0
    memory_mb: int = 256
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    restart_policy: RestartPolicy = RestartPolicy.NO
    networks: list[NetworkAttachment] = Field(default_factory=list)
    volumes: list[VolumeAttachment] = Field(default_factory=list)
    mesh: dict[str, Any] | None = None


class InstancePatch(Strict):
    cpus: float | None = None
    memory_mb: int | None = None
    restart_policy: RestartPolicy | None = None


class ActionRequest(Strict):
    action: str
    timeout: float = 10
    force: bool = False


class ExecRequest(Strict):
    command: list[str]


class ImageCreate(Strict):
    name: str
    kind: InstanceKind = InstanceKind.CONTAINER
    source: dict[str, Any]


class ImageAction(Strict):
    action: Literal["push"]
    target: str
