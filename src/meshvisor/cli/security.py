"""`meshvisor security-groups`: groups and their rules from the shell, as `incus network acl` does.

create NAME [--rule K=V,…]…, list, show NAME, delete NAME
rule add NAME K=V …      one more rule: direction=ingress|egress protocol=tcp|udp|icmp|any port_min= port_max=
                         and cidr= or group= (the API checks them)
rule remove NAME K=V …   every rule whose fields are all these (none matching: an error, nothing changed)

Rule changes read the group and replace its rules under `If-Match`, so a change made meanwhile is not lost (412).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .calls import add_delete, add_reads, client
from .output import Output, OutputOpt, ProjectOpt, api_errors, fail, parse_pairs, show

groups_app = typer.Typer(help="Security groups: create, list, show, change rules, delete.", no_args_is_help=True)
rules_app = typer.Typer(help="A group's rules: add, remove.", no_args_is_help=True)
groups_app.add_typer(rules_app, name="rule")

GROUP = ("name", "description", "rules", "members", "project")
INTEGERS = ("port_min", "port_max")
FieldsArg = Annotated[list[str], typer.Argument(help="the rule's fields as KEY=VALUE")]


def parse_rule(fields: list[str]) -> dict[str, Any]:
    """A rule from KEY=VALUE words (ports as numbers); a malformed word is a clear error before sending."""
    try:
        rule: dict[str, Any] = parse_pairs(fields, "a rule")
    except ValueError as exc:
        fail(str(exc))
    for key in INTEGERS:
        if key in rule:
            if not rule[key].isdigit():
                fail(f"{key} is a number, not {rule[key]!r}")
            rule[key] = int(rule[key])
    return rule


@groups_app.command("create")
def group_create(
    name: str,
    rule: Annotated[list[str] | None, typer.Option(help="KEY=VALUE,… (one rule; repeat for more)")] = None,
    description: Annotated[str, typer.Option(help="what the group is for")] = "",
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a group with its rules."""
    rules = [parse_rule(given.split(",")) for given in rule or []]
    api = client(project)
    with api_errors():
        made = api.post("/v1/security-groups", json={"name": name, "description": description, "rules": rules})
    show(made, output, GROUP)


add_reads(groups_app, "/v1/security-groups", "security group", GROUP)


add_delete(
    groups_app,
    "/v1/security-groups",
    "security group",
    "Delete a group (refused while instances are in it or another group's rules name it).",
)


def _replace_rules(name: str, project: str | None, change: Any) -> dict[str, Any]:
    """Read the group, change its rules with `change(rules)`, write them back if it is still that version."""
    api = client(project)
    with api_errors():
        group = api.get(f"/v1/security-groups/{name}")
        rules = change(list(group["rules"]))
        headers = {"If-Match": f'"{group["etag"]}"'}
        answer: dict[str, Any] = api.put(f"/v1/security-groups/{name}", json={"rules": rules}, headers=headers)
    return answer


@rules_app.command("add")
def rule_add(name: str, fields: FieldsArg, project: ProjectOpt = None, output: OutputOpt = Output.table) -> None:
    """Add a rule to a group."""
    rule = parse_rule(fields)
    show(_replace_rules(name, project, lambda rules: [*rules, rule]), output, GROUP)


@rules_app.command("remove")
def rule_remove(
    name: str, fields: FieldsArg, project: ProjectOpt = None, output: OutputOpt = Output.table
) -> None:
    """Remove every rule of a group whose fields are all these."""
    wanted = parse_rule(fields)

    def without(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = [r for r in rules if any(r.get(key) != value for key, value in wanted.items())]
        if len(kept) == len(rules):
            fail(f"no rule of security group {name!r} has {' '.join(fields)}")
        return kept

    show(_replace_rules(name, project, without), output, GROUP)
