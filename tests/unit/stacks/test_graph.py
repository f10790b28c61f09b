"""Dependency order: layers for parallel steps, reverse for deletes, cycles named."""

from __future__ import annotations

import pytest

from meshvisor.platform.stacks import CycleError
from meshvisor.platform.stacks.graph import Graph, build, cycles, layers, references, reverse_layers


def test_references_of_an_instance() -> None:
    attrs = {
        "networks": [{"network": "front", "ip": None}],
        "volumes": [{"volume": "data"}],
        "security_groups": ["web"],
        "mesh": {"service": "api", "upstreams": [{"service": "db", "local_port": 9001}]},
    }
    assert references("instance", attrs) == {
        "network.front",
        "volume.data",
        "security_group.web",
        "service.api",
        "service.db",
    }


def test_layers_and_reverse() -> None:
    g = build(
        {
            "network.n": ("network", {}),
            "service.api": ("service", {}),
            "instance.a": ("instance", {"networks": [{"network": "n"}], "mesh": {"service": "api"}}),
            "instance.b": ("instance", {"networks": [{"network": "outside"}]}),  # external: no edge
        },
        {"instance.b": ["instance.a"]},
    )
    assert layers(g) == [["network.n", "service.api"], ["instance.a"], ["instance.b"]]
    assert reverse_layers(g) == [["instance.b"], ["instance.a"], ["network.n", "service.api"]]


def test_cycles_are_named() -> None:
    g = Graph(
        {
            "a": frozenset({"b"}),
            "b": frozenset({"c"}),
            "c": frozenset({"a"}),
            "d": frozenset({"d"}),
            "e": frozenset(),
        }
    )
    assert cycles(g) == [["a", "b", "c", "a"], ["d", "d"]]
    with pytest.raises(CycleError, match="a -> b -> c -> a; d -> d"):
        layers(g)


def test_a_long_chain_needs_no_recursion() -> None:
    g = Graph({f"n{i}": frozenset({f"n{i + 1}"}) for i in range(5000)} | {"n5000": frozenset({"n0"})})
    (cycle,) = cycles(g)
    assert len(cycle) == 5002
