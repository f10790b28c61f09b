"""Declarative stacks: a pure part (spec, loading and validation, dependency graph, plan, rendering) and the
platform's part (plans saved and applied).

The pure modules use no database, API or worker (import-linter holds it): the platform reads observed objects and
the recorded state, calls `plan`, and executes the plan's changes in `Plan.layers()` order, recording each
finished step with `state.record`.

spec       the models of a stack file and `Stack`, the loaded result
sources    YAML / JSON / HCL to data with line numbers
variables  `${var.NAME}` references, defaults, overrides, secrets
loader     `load`, `load_file`: one validation pass, every error at once (`StackSpecError`)
checks     references, cycles and rules across resources
schema     the published JSON Schema
graph      dependency order (layers) and cycles
normalise  canonical attributes of wanted and observed resources
attributes live / restart / replace per attribute
state      the recorded state and how it is updated
planner    `plan` and `Plan`
render     the coloured plan

The platform's part (imported by name, never from here):
plans      a stack file planned against its recorded state and what the platform observes, saved
apply      a saved plan carried out as an operation, step by step
steps      what one planned change asks of the platform (the REST API's own functions)
"""

from .graph import CycleError
from .loader import load, load_file
from .planner import FORMAT_VERSION, AttributeChange, Change, Drift, Plan, Release, plan
from .render import render
from .schema import stack_schema, write_schema
from .spec import SpecError, Stack, StackSpecError
from .state import ResourceState, StackState, desired_state, record

__all__ = [
    "FORMAT_VERSION",
    "AttributeChange",
    "Change",
    "CycleError",
    "Drift",
    "Plan",
    "Release",
    "ResourceState",
    "SpecError",
    "Stack",
    "StackSpecError",
    "StackState",
    "desired_state",
    "load",
    "load_file",
    "plan",
    "record",
    "render",
    "stack_schema",
    "write_schema",
]
