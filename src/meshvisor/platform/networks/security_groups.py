"""Security group requests: named rule sets (validated by the network layer's parser) and which instances are
members. Changes are written here at once; each host then rebuilds its filter from the database
(`security_steps.sync_security`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.core.names import new_id, validate_name
from meshvisor.network import parse_rule
from meshvisor.platform.state import events
from meshvisor.platform.state.models import Instance, InstanceSecurityGroup, SecurityGroup
from meshvisor.platform.state.paging import check_etag, etag, find_named, get_named, page_by_name

MAX_RULES = 256
MAX_GROUPS_PER_INSTANCE = 8
MAX_DESCRIPTION = 1000


def find(session: Session, name: str, project: str = "default") -> SecurityGroup | None:
    return find_named(session, SecurityGroup, name, project)


def get(session: Session, name: str, project: str = "default") -> SecurityGroup:
    return get_named(session, SecurityGroup, name, project)


def page(
    session: Session, limit: int, cursor: str | None, project: str = "default"
) -> tuple[list[SecurityGroup], str | None]:
    return page_by_name(session, SecurityGroup, limit, cursor, project)


def parse_rules(session: Session, name: str, rules: object, project: str) -> list[dict[str, Any]]:
    """Every rule checked (the error names its position); a `group` peer must exist, or be this group."""
    if not isinstance(rules, list):
        raise InvalidInput("rules must be a list")
    if len(rules) > MAX_RULES:
        raise InvalidInput(f"at most {MAX_RULES} rules per group")
    parsed = []
    for index, raw in enumerate(rules):
        if not isinstance(raw, dict):
            raise InvalidInput(f"rules[{index}]: a rule is an object")
        try:
            rule = parse_rule(raw)
        except InvalidInput as exc:
            raise InvalidInput(f"rules[{index}]: {exc.message}") from None
        if rule.group is not None and rule.group != name and find(session, rule.group, project) is None:
            raise NotFound(f"rules[{index}]: security group {rule.group!r} does not exist")
        parsed.append(rule.as_dict())
    return parsed


def create(
    session: Session, name: str, rules: object, description: str = "", project: str = "default"
) -> SecurityGroup:
    validate_name(name, "security group name")
    _check_description(description)
    if find(session, name, project) is not None:
        raise Conflict(f"a security group named {name!r} already exists")
    group = SecurityGroup(
        id=new_id(),
        project=project,
        name=name,
        description=description,
        rules=parse_rules(session, name, rules, project),
        version=1,
    )
    session.add(group)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a security group named {name!r} already exists") from None
    events.emit(session, "lifecycle", "security_group", name, project, state="created", id=group.id)
    return group


def replace(
    session: Session,
    name: str,
    rules: object,
    description: str | None = None,
    if_match: str | None = None,
    project: str = "default",
) -> SecurityGroup:
    group = get(session, name, project)
    check_etag(group, if_match)
    parsed = parse_rules(session, name, rules, project)
    if description is not None:
        _check_description(description)
        group.description = description
    group.rules = parsed
    group.touch()
    events.emit(session, "lifecycle", "security_group", name, project, state="updated", id=group.id)
    return group


def remove(session: Session, name: str, if_match: str | None = None, project: str = "default") -> None:
    group = get(session, name, project)
    check_etag(group, if_match)
    used = members(session, group.id)
    if used:
        raise Conflict(f"security group {name!r} has {len(used)} member(s): {', '.join(sorted(used))}")
    referrers = sorted(
        other.name
        for other in session.scalars(select(SecurityGroup).where(SecurityGroup.project == project))
        if other.id != group.id and any(rule.get("group") == name for rule in other.rules)
    )
    if referrers:
        raise Conflict(f"security group {name!r} is named by the rules of {', '.join(referrers)}")
    session.delete(group)
    events.emit(session, "lifecycle", "security_group", name, project, state="deleted", id=group.id)


def members(session: Session, group_id: str) -> list[str]:
    return list(
        session.scalars(
            select(Instance.name)
            .join(InstanceSecurityGroup, InstanceSecurityGroup.instance_id == Instance.id)
            .where(InstanceSecurityGroup.group_id == group_id)
        )
    )


def set_membership(session: Session, instance: Instance, names: list[str]) -> None:
    """The instance's groups become exactly `names`, in that order."""
    if len(names) > MAX_GROUPS_PER_INSTANCE:
        raise InvalidInput(f"an instance is in at most {MAX_GROUPS_PER_INSTANCE} security groups")
    if len(set(names)) != len(names):
        raise InvalidInput("a security group is listed twice")
    groups = [get(session, name, instance.project) for name in names]
    session.execute(delete(InstanceSecurityGroup).where(InstanceSecurityGroup.instance_id == instance.id))
    for position, group in enumerate(groups):
        session.add(InstanceSecurityGroup(instance_id=instance.id, group_id=group.id, position=position))
    instance.security_groups = list(names)
    session.flush()


def to_dict(session: Session, group: SecurityGroup) -> dict[str, Any]:
    return {
        "id": group.id,
        "name": group.name,
        "project": group.project,
        "description": group.description,
        "rules": group.rules,
        "members": sorted(members(session, group.id)),
        "etag": etag(group),
        "created_at": group.created_at.isoformat(),
        "updated_at": group.updated_at.isoformat(),
    }


def _check_description(description: object) -> None:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"description must be text of at most {MAX_DESCRIPTION} characters")
