"""The dependency graph of a stack: what must exist before what.

An instance depends on its networks, volumes, security groups, its mesh service and the services it calls; a
security group on the groups its rules name; a gateway route on its service; anything on its explicit
`depends_on`. Services come *before* the
instances that join or call them: the platform refuses an instance whose upstream service does not exist, and
refuses to delete a service while instances join or call it, so creating services first and deleting them last
is the one order that works both ways (and services that call each other are no cycle).

Creates run layer by layer (`layers`: each layer only needs earlier ones, so a layer's members run in
parallel); deletes run in `reverse_layers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .spec import address


def references(kind: str, attrs: Mapping[str, Any]) -> set[str]:
    """The addresses a resource's attributes name (whether or not they are in the stack)."""
    found: set[str] = set()
    if kind == "instance":
        found |= {address("network", n["network"]) for n in attrs.get("networks") or []}
        found |= {address("volume", v["volume"]) for v in attrs.get("volumes") or []}
        found |= {address("security_group", g) for g in attrs.get("security_groups") or []}
        mesh = attrs.get("mesh")
        if mesh:
            found.add(address("service", mesh["service"]))
            found |= {address("service", u["service"]) for u in mesh.get("upstreams") or []}
    elif kind == "security_group":
        found |= {address("security_group", r["group"]) for r in attrs.get("rules") or [] if r.get("group")}
    elif kind == "gateway_route":
        found.add(address("service", attrs["service"]))
    return found


@dataclass(frozen=True)
class Graph:
    """`needs[a]`: the addresses `a` depends on (all of them nodes of the graph)."""

    needs: Mapping[str, frozenset[str]]

    def needed_by(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {node: set() for node in self.needs}
        for node, deps in self.needs.items():
            for dep in deps:
                out[dep].add(node)
        return out


class CycleError(ValueError):
    def __init__(self, cycles: list[list[str]]) -> None:
        self.cycles = cycles
        super().__init__("dependency cycle: " + "; ".join(" -> ".join(c) for c in cycles))


def build(
    resources: Mapping[str, tuple[str, Mapping[str, Any]]], explicit: Mapping[str, Iterable[str]] | None = None
) -> Graph:
    """`resources`: address -> (kind, attributes as a dict); `explicit`: address -> its `depends_on`.
    References to addresses outside `resources` (external objects) are no edges."""
    explicit = explicit or {}
    needs: dict[str, frozenset[str]] = {}
    for addr, (kind, attrs) in resources.items():
        deps = references(kind, attrs) | set(explicit.get(addr, ()))
        needs[addr] = frozenset(d for d in deps if d in resources and d != addr)
    return Graph(needs)


def layers(graph: Graph) -> list[list[str]]:
    """Kahn's algorithm, one layer at a time, each layer sorted (the same graph gives the same order)."""
    waiting = {node: len(deps) for node, deps in graph.needs.items()}
    users = graph.needed_by()
    ready = sorted(node for node, count in waiting.items() if count == 0)
    out: list[list[str]] = []
    while ready:
        out.append(ready)
        following: list[str] = []
        for node in ready:
            for user in users[node]:
                waiting[user] -= 1
                if waiting[user] == 0:
                    following.append(user)
        ready = sorted(following)
    if sum(len(layer) for layer in out) != len(graph.needs):
        raise CycleError(cycles(graph))
    return out


def reverse_layers(graph: Graph) -> list[list[str]]:
    return list(reversed(layers(graph)))


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle per strongly connected component that has one, as `[a, b, a]` (starting at its least node)."""
    found = []
    for component in _components(graph):
        if len(component) == 1:
            node = next(iter(component))
            if node in graph.needs[node]:
                found.append([node, node])
            continue
        start = min(component)
        found.append(_path_back(graph, start, component))
    return sorted(found)


def _path_back(graph: Graph, start: str, component: set[str]) -> list[str]:
    """The shortest way from `start` back to itself inside its component (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for dep in sorted(graph.needs[node] & component):
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if dep not in previous:
                    previous[dep] = node
                    following.append(dep)
        frontier = following
    return [start, start]


def _components(graph: Graph) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively (a 5,000-node chain must not hit the recursion
    limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[set[str]] = []
    counter = 0
    for root in sorted(graph.needs):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.needs[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.needs[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                out.append(component)
    return out
