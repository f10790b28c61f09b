"""Stacks on the platform: a stack file planned against the stack's recorded state, refreshed from what the
platform observes now (the database rows the reconcile pass keeps true to the drivers), saved so that apply can
execute exactly that plan. The planning itself is the pure `stacks` package; `host_limits` adds what only the
platform knows (an address another instance holds, a volume this host cannot grow while mounted), so that a plan
the apply could not carry out is refused when it is made."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.core.names import new_id, validate_name
from meshvisor.platform import stacks
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.mesh import gateway, services
from meshvisor.platform.networks import forwards, security_groups
from meshvisor.platform.networks import requests as networks
from meshvisor.platform.settings import Settings
from meshvisor.platform.stacks import spec as stack_spec
from meshvisor.platform.state.models import (
    GatewayRoute,
    Instance,
    Network,
    SecurityGroup,
    Service,
    Stack,
    StackPlan,
    Volume,
)
from meshvisor.platform.state.paging import find_named, get_named, page_by_name
from meshvisor.platform.volumes import requests as volumes

FORMATS = ("yaml", "json", "hcl")
KEY_FILE = "stack.key"


def secret_key(settings: Settings) -> bytes:
    """The platform's key for the hashes that stand for secret values in plans and state (made once)."""
    path = settings.data_path / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
    return path.read_bytes()


def _fernet(settings: Settings) -> Fernet:
    derived = hashlib.sha256(b"meshvisor stack seal\0" + secret_key(settings)).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def seal(settings: Settings, source: dict[str, Any]) -> str:
    """A saved plan's stack file, variables included, encrypted: the worker needs the secret values to apply it,
    and nobody reading the database should see them."""
    return _fernet(settings).encrypt(json.dumps(source).encode()).decode()


def unseal(settings: Settings, sealed: str) -> dict[str, Any]:
    try:
        found: dict[str, Any] = json.loads(_fernet(settings).decrypt(sealed.encode()))
    except InvalidToken:
        raise InvalidInput("the saved plan cannot be read with this platform's key: plan again") from None
    return found


def spec_of(source: Mapping[str, Any]) -> stacks.Stack:
    """The stack a saved plan was made for (a destroy plan's is empty)."""
    if source.get("destroy"):
        return stacks.Stack(resources={})
    return load_spec(source["text"], source["format"], source["variables"])


def load_spec(text: object, fmt: object, variables: object) -> stacks.Stack:
    """The stack file, validated whole: every problem in one 400."""
    if not isinstance(text, str):
        raise InvalidInput("spec must be the stack file's text")
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not isinstance(variables, dict):
        raise InvalidInput("variables must be an object of name -> value")
    try:
        return stacks.load(text, str(fmt), variables)
    except stacks.StackSpecError as exc:
        raise InvalidInput(str(exc)) from None


Shower = Callable[[Session, list[Any]], list[dict[str, Any]]]

# Per kind: the model, and how the API shows a batch of its rows (a plan reads thousands of them at once).
KINDS: Mapping[str, tuple[Any, Shower]] = {
    "network": (Network, lambda _s, rows: [networks.to_dict(r) for r in rows]),
    "security_group": (SecurityGroup, lambda s, rows: [security_groups.to_dict(s, r) for r in rows]),
    "volume": (Volume, lambda s, rows: [volumes.to_dict(s, r) for r in rows]),
    # An instance as last recorded, whether or not its host is online now: a plan compares what was asked.
    "instance": (Instance, lambda s, rows: _instances(s, rows)),
    # A plan compares a service's policy and ingress port only: its members and callers are not read here.
    "service": (
        Service,
        lambda _s, rows: [
            {
                "id": r.id,
                "name": r.name,
                "policy": r.policy,
                "ingress_port": r.ingress_port,
                "protocol": r.protocol,
            }
            for r in rows
        ],  # fmt: skip
    ),
    "gateway_route": (GatewayRoute, lambda _s, rows: [gateway.to_dict(r) for r in rows]),
}


def _instances(session: Session, rows: list[Instance]) -> list[dict[str, Any]]:
    """Instances as the API shows them, with their port forwards (which the API lists on their own)."""
    forwarded = forwards.asked_by_instance(session, [r.id for r in rows])
    return [{**instances.to_dict(r, {}), "forwards": forwarded.get(r.id, [])} for r in rows]


def observe(session: Session, addresses: list[str], project: str = "default") -> dict[str, dict[str, Any] | None]:
    """Each address's object as the API shows it now (None: it does not exist): a few queries per kind."""
    found: dict[str, dict[str, Any] | None] = dict.fromkeys(addresses)
    wanted: dict[str, list[str]] = {}
    for address in addresses:
        kind, _, name = address.partition(".")
        if kind in KINDS:
            wanted.setdefault(kind, []).append(name)
    for kind, names in wanted.items():
        model, show = KINDS[kind]
        rows: list[Any] = []
        for start in range(0, len(names), services.IN_CHUNK):
            chunk = names[start : start + services.IN_CHUNK]
            rows += session.scalars(select(model).where(model.project == project, model.name.in_(chunk)))
        for row, shown in zip(rows, show(session, rows), strict=True):
            found[f"{kind}.{row.name}"] = shown
    return found


def get(session: Session, name: str, project: str = "default") -> Stack:
    return get_named(session, Stack, name, project)


def page(
    session: Session, limit: int, cursor: str | None, project: str = "default"
) -> tuple[list[Stack], str | None]:
    return page_by_name(session, Stack, limit, cursor, project)


def _stack_row(session: Session, name: str, project: str) -> Stack:
    found = find_named(session, Stack, name, project)
    if found is not None:
        return found
    row = Stack(id=new_id(), project=project, name=name, serial=0, state={}, version=1)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"stack {name!r} was just made by another request; plan again") from None
    return row


def state_of(row: Stack) -> stacks.StackState:
    if not row.state:
        return stacks.StackState(name=row.name, serial=row.serial)
    return stacks.StackState.from_json({**row.state, "name": row.name, "serial": row.serial})


def make_plan(
    session: Session,
    settings: Settings,
    name: str,
    text: object,
    fmt: object = "yaml",
    variables: object = None,
    adopt: object = None,
    project: str = "default",
    destroy: bool = False,
) -> tuple[StackPlan, stacks.Plan]:
    """Plan `text` for stack `name` (made, empty, on its first plan) and save the plan. A plan that cannot be
    applied (a protected resource would go, an object exists outside the stack) is a 400 naming each problem.
    `destroy`: plan the removal of everything the stack owns (the file is not needed)."""
    validate_name(name, "stack name")
    variables = variables if variables is not None else {}
    if destroy:
        source: dict[str, Any] = {"destroy": True}
        if find_named(session, Stack, name, project) is None:
            raise NotFound(f"stack {name!r} not found")
        spec = spec_of(source)
    else:
        spec = load_spec(text, fmt, variables)  # every problem in the file, before anything else
        source = {"text": text, "format": fmt, "variables": variables}
    if adopt is not None and (not isinstance(adopt, list) or not all(isinstance(a, str) for a in adopt)):
        raise InvalidInput("adopt must be a list of resource addresses such as network.front")
    row = _stack_row(session, name, project)
    planned = plan_for(session, settings, row, spec, adopt or ())
    if planned.errors:
        raise InvalidInput(f"{len(planned.errors)} error(s) in the plan:\n" + "\n".join(planned.errors))
    saved = StackPlan(
        id=new_id(),
        stack_id=row.id,
        base_serial=row.serial,
        body=planned.to_json(),
        sealed=seal(settings, source),
    )
    saved.body = {**saved.body, "id": saved.id, "serial": row.serial}
    session.add(saved)
    session.flush()
    return saved, planned


def plan_for(
    session: Session, settings: Settings, row: Stack, spec: stacks.Stack, adopt: Iterable[str] = ()
) -> stacks.Plan:
    """`spec` planned against the stack's state, refreshed from what the platform shows now."""
    state = state_of(row)
    addresses = sorted(set(spec.resources) | set(state.resources))
    observed = observe(session, addresses, row.project)
    planned = stacks.plan(spec, state, observed, key=secret_key(settings), adopt=adopt)
    refused = host_limits(session, planned, spec, row.project)
    return replace(planned, errors=planned.errors + tuple(refused)) if refused else planned


def host_limits(session: Session, planned: stacks.Plan, spec: stacks.Stack, project: str) -> list[str]:
    """What the pure plan cannot know: a change that would fail on this platform now is refused at plan time."""
    replaced = {c.address for c in planned.changes if c.replaces}
    out = []
    for change in planned.changes:
        res = spec.resources.get(change.address)
        if change.kind == "volume" and change.action == "update" and "size_mb" in change.because("live"):
            out += _volume_grows(session, change, project)
        elif isinstance(res, stack_spec.Instance) and change.action != "delete":
            out += _fixed_addresses_free(session, change, res, replaced, project)
    return out


def _volume_grows(session: Session, change: stacks.Change, project: str) -> list[str]:
    """A volume that a container mounts grows here only if this host may grow a mounted filesystem."""
    why = volumes.grow_refusal(session, change.name, project)
    return [f"{change.address}: size_mb: {why}"] if why is not None else []


def _fixed_addresses_free(
    session: Session, change: stacks.Change, res: stack_spec.Instance, replaced: set[str], project: str
) -> list[str]:
    """Each fixed address the instance asks for is free, or its own (on a network this plan keeps)."""
    mine = find_named(session, Instance, change.name, project)
    out = []
    for net in res.networks:
        if net.ip is None or f"network.{net.network}" in replaced:
            continue
        holder = networks.address_holder(session, net.network, net.ip, project)
        if holder is not None and (mine is None or holder != mine.id):
            who = session.get(Instance, holder)
            out.append(
                f"{change.address}: ip {net.ip} on network {net.network!r} is held by instance"
                f" {who.name if who else holder!r} now: free it first (apply that), or choose another address"
            )
    return out


def plan_to_dict(saved: StackPlan, planned: stacks.Plan) -> dict[str, Any]:
    """The saved plan as the API shows it: a plan saved in an older format is shown in this one."""
    body = saved.body
    if body.get("format_version") != stacks.FORMAT_VERSION:
        body = {**planned.to_json(), "id": saved.id, "serial": saved.base_serial}
    return {**body, "exit_code": planned.exit_code(), "text": stacks.render(planned).plain}


def to_dict(row: Stack) -> dict[str, Any]:
    state = state_of(row)
    lock = None
    if row.operation_id is not None:  # held by an apply; it expires unless the apply goes on recording steps
        expires = row.lock_expires_at.isoformat() if row.lock_expires_at else None
        lock = {"owner": row.lock_owner, "expires_at": expires, "operation": row.operation_id}
    return {
        "id": row.id,
        "name": row.name,
        "project": row.project,
        "serial": row.serial,
        "resources": sorted(state.resources),
        "lock": lock,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def recent_plans(session: Session, row: Stack, limit: int) -> list[dict[str, Any]]:
    """The stack's saved plans, newest first, as `POST .../plan` answered them (with `current`: still
    applicable, made against the stack's serial now)."""
    query = (
        select(StackPlan)
        .where(StackPlan.stack_id == row.id)
        .order_by(StackPlan.created_at.desc(), StackPlan.id.desc())
        .limit(limit)
    )
    shown = []
    for saved in session.scalars(query):
        planned = stacks.Plan.from_json(saved.body)
        shown.append({**plan_to_dict(saved, planned), "created_at": saved.created_at.isoformat(),
                      "current": saved.base_serial == row.serial})  # fmt: skip
    return shown
