"""One instance shape: the API's body and a stack file's instance break the same rules with the same words."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from meshvisor.api.schemas import InstanceCreate
from meshvisor.core import instance_rules as rules
from meshvisor.core.errors import InvalidInput
from meshvisor.platform.instances import shape
from meshvisor.platform.stacks import spec

BAD = [
    ({"kind": "vm", "cpus": 1.5}, "a VM takes a whole number of vCPUs, not 1.5"),
    ({"kind": "vm", "memory_mb": 64}, "memory_mb must be at least 128 (a VM's guest minimum), not 64"),
    ({"kind": "vm", "command": ["sh"]}, "command and env are for containers; a VM runs its image's own init"),
    ({"kind": "vm", "env": {"A": "b"}}, "command and env are for containers; a VM runs its image's own init"),
    ({"kind": "vm", "cpus": 2, "max_cpus": 1}, "max_cpus 1 is below cpus 2"),
    ({"kind": "vm", "memory_mb": 512, "max_memory_mb": 256}, "max_memory_mb 256 is below memory_mb 512"),
    ({"kind": "vm", "volumes": [{"volume": "v", "path": "/v"}]}, "volume 'v': a VM's volume has no path"),
    ({"disk_mb": 64}, "max_cpus, max_memory_mb, disk_mb, cloud_init are for VMs (given: disk_mb)"),
    (
        {"max_cpus": 2, "cloud_init": {}},
        "max_cpus, max_memory_mb, disk_mb, cloud_init are for VMs (given: max_cpus, cloud_init)",
    ),
    ({"volumes": [{"volume": "v"}]}, "volume 'v': a container's volume needs a path"),
    (
        {"volumes": [{"volume": "v", "path": "/a/../b"}]},
        "volume path '/a/../b' must be an absolute, normalised path other than / (of at most 255 characters)",
    ),
    (
        {"networks": [{"network": "n"}, {"network": "n"}]},
        "network 'n' is listed twice: an instance has one interface per network",
    ),
    ({"volumes": [{"volume": "v", "path": "/a"}, {"volume": "v", "path": "/b"}]}, "volume 'v' is listed twice"),
    ({"env": {"A=B": "x"}}, "invalid environment variable name 'A=B'"),
    (
        {"kind": "vm", "cpus": 0.5, "command": ["sh"]},
        "a VM takes a whole number of vCPUs, not 0.5; "
        "command and env are for containers; a VM runs its image's own init",
    ),
]


def stack_problem(body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        spec.Instance.model_validate(body)
    (error,) = caught.value.errors()
    return str(error["ctx"]["error"])


@pytest.mark.parametrize(("body", "message"), BAD)
def test_one_rule_one_message_through_the_api_and_a_stack_file(body: dict[str, Any], message: str) -> None:
    asked = {"image": "img", **body}
    assert "; ".join(rules.problems(InstanceCreate.model_validate({"name": "x", **asked}))) == message
    assert stack_problem(asked) == message


def test_a_good_request_breaks_no_rule() -> None:
    vm = {"kind": "vm", "image": "tiny", "cpus": 2, "memory_mb": 256, "max_cpus": 4, "disk_mb": 16}
    container = {
        "image": "busybox",
        "command": ["sh"],
        "env": {"A": "b"},
        "volumes": [{"volume": "v", "path": "/v"}],
    }
    for asked in (vm, container):
        assert rules.problems(shape.InstanceRequest.model_validate({"name": "x", **asked})) == []
        spec.Instance.model_validate(asked)


def test_the_stack_file_has_the_platforms_fields_and_its_own() -> None:
    stack_only = set(spec.Resource.model_fields) | {"forwards"}  # the API has them as resources of their own
    assert set(spec.Instance.model_fields) == set(shape.InstanceFields.model_fields) | stack_only
    # a stack file marks a secret with a secret variable, not a field: `instance_request` makes its secret_env;
    # a privileged container is the API's alone (a platform admin's)
    assert set(shape.InstanceRequest.model_fields) == set(shape.InstanceFields.model_fields) | {
        "name",
        "secret_env",
        "privileged",
    }


def test_a_stack_instance_becomes_the_platforms_request_as_it_is() -> None:
    from meshvisor.platform.stacks.steps import instance_request

    res = spec.Instance.model_validate(
        {"kind": "VM", "image": "tiny", "cpus": 2, "restart_policy": "Always", "networks": [{"network": "n"}]}
    )
    req = instance_request("web", res)
    assert (req.name, req.kind, req.restart_policy, req.cpus) == ("web", "vm", "always", 2)
    assert [n.network for n in req.networks] == ["n"]


def test_an_env_value_at_a_secret_path_becomes_a_secret_env_value() -> None:
    from meshvisor.platform.stacks.steps import instance_request

    res = spec.Instance.model_validate({"image": "busybox", "env": {"PLAIN": "1", "TOKEN": "t"}})
    req = instance_request("web", res, [("env", "TOKEN"), ("command", 0)])
    assert (req.env, req.secret_env) == ({"PLAIN": "1"}, {"TOKEN": "t"})
    assert instance_request("web", res).secret_env == {}


@pytest.mark.parametrize("cpus", [0, 0.5, 1.5, float("nan")])
def test_a_driver_takes_whole_vcpus_only(cpus: float) -> None:
    with pytest.raises(InvalidInput, match="whole number of vCPUs"):
        rules.whole_vcpus(cpus)
    assert rules.whole_vcpus(3.0) == 3
