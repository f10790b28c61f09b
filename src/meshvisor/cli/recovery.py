"""How `meshvisor recover` shows its plan: what it adds, what it could not place, what is missing."""

from __future__ import annotations

from rich.console import Console

from meshvisor.platform.recovery.plan import RecoveryPlan


def show_recovery(console: Console, plan: RecoveryPlan, problems: list[str], written: bool) -> None:
    verb = "recovered" if written else "would recover"
    for net in plan.networks:
        console.print(f"  + network {net['project']}/{net['name']} ({net['id']}) {net['cidr']} vni {net['vni']}")
    for vol in plan.volumes:
        console.print(
            f"  + volume {vol['project']}/{vol['name']} ({vol['id']}) {vol['size_mb']} MiB in {vol['pool']}"
        )
    for stamp, state in plan.instances:
        record = stamp.record
        console.print(
            f"  + instance {record['project']}/{record['name']} ({stamp.id}) {record['kind']} {state.value}, "
            f"{len(stamp.networks)} network(s), {len(stamp.volumes)} volume(s)"
        )
    for line in plan.notes:
        console.print(f"  note: {line}")
    for line in plan.unplaced:
        console.print(f"  [yellow]not placed:[/yellow] {line}")
    for line in plan.missing:
        console.print(f"  [yellow]missing on the host:[/yellow] {line} (record kept)")
    for line in problems:
        console.print(f"  [red]not looked at:[/red] {line}")
    console.print(
        f"{verb}: {len(plan.instances)} instance(s), {len(plan.networks)} network(s), {len(plan.volumes)} "
        f"volume(s); not placed: {len(plan.unplaced)}; missing on the host: {len(plan.missing)}. "
        "Nothing was deleted."
    )
