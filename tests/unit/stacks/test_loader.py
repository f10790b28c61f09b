"""Loading stack files: the three formats give one model; every bad input is reported at once, with lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from meshvisor.platform.stacks import StackSpecError, load, load_file, stack_schema, write_schema
from meshvisor.platform.stacks.sources import read_yaml
from meshvisor.platform.stacks.spec import Instance, Service

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def errors_of(text: str, fmt: str = "yaml", **overrides: object) -> list[str]:
    with pytest.raises(StackSpecError) as caught:
        load(text, fmt, overrides)
    return [str(e) for e in caught.value.errors]


def test_the_examples_load_to_the_same_model() -> None:
    yaml_stack = load_file(EXAMPLES / "stack.yaml")
    hcl_stack = load_file(EXAMPLES / "stack.hcl")
    assert yaml_stack.resources == hcl_stack.resources
    assert (
        yaml_stack.secret_paths
        == hcl_stack.secret_paths
        == {
            "instance.api-v1": frozenset({("env", "API_TOKEN")}),
            "instance.api-v2": frozenset({("env", "API_TOKEN")}),
        }
    )
    kinds = [a.split(".")[0] for a in yaml_stack.resources]
    assert kinds.count("network") == 2 and kinds.count("volume") == 1
    instances = [r for r in yaml_stack.resources.values() if isinstance(r, Instance)]
    assert sorted(i.kind for i in instances) == ["container", "container", "container", "vm"]
    api = yaml_stack.resources["service.api"]
    assert isinstance(api, Service) and api.policy["splits"] == {"v1": 90, "v2": 10}
    assert yaml_stack.resources["service.web"] == Service()  # named by web's mesh block, not declared


def test_json_gives_the_same_model() -> None:
    data = read_yaml((EXAMPLES / "stack.yaml").read_text()).data
    assert load(json.dumps(data, indent=2), "json").resources == load_file(EXAMPLES / "stack.yaml").resources


UNKNOWN_FIELD = {
    "yaml": "networks:\n  front:\n    cidr: 10.0.0.0/24\ninstances:\n  web:\n    image: busybox\n    cpu: 2\n",
    "json": '{\n  "networks": {"front": {"cidr": "10.0.0.0/24"}},\n  "instances": {\n    "web": {\n'
    '      "image": "busybox",\n      "cpu": 2\n    }\n  }\n}\n',
    "hcl": 'network "front" {\n  cidr = "10.0.0.0/24"\n}\n\ninstance "web" {\n  image = "busybox"\n  cpu = 2\n}\n',
}


@pytest.mark.parametrize(("fmt", "line"), [("yaml", 7), ("json", 6), ("hcl", 7)])
def test_unknown_field_named_with_its_line(fmt: str, line: int) -> None:
    assert errors_of(UNKNOWN_FIELD[fmt], fmt) == [f"line {line}: instances.web.cpu: unknown field 'cpu'"]


def test_unknown_field_in_a_nested_hcl_block() -> None:
    text = (
        'instance "web" {\n  image = "x"\n  mesh {\n    service = "a"\n    port = 80\n    colour = "red"\n  }\n}\n'
    )
    assert errors_of(text, "hcl") == ["line 6: instances.web.mesh.colour: unknown field 'colour'"]


EVERYTHING_WRONG = """\
variables:
  image: {default: busybox}
networks:
  front: {cidr: 10.0.0.0/24}
  front: {cidr: 10.0.1.0/24}
  back: {cidr: 10.0.0.5/24}
  wide: {cidr: 10.0.0.0/16}
security_groups:
  web:
    rules: [{direction: inbound, protocol: tcp}]
instances:
  a:
    image: ${var.image}
    depends_on: [instance.b]
  b:
    image: ${var.imgae}
    depends_on: [instance.a]
  c:
    image: busybox
    cpus: -1
    networks: [{network: nowhere}]
    volumes: [{volume: missing, path: /data}]
    security_groups: [web, ghost]
    colour: blue
  d:
    kind: vm
    image: tiny
    cpus: 1.5
    command: [sh]
  Bad:
    image: busybox
services:
  api:
    policy: {splits: {v1: 50, v2: 10}}
    ingress_port: 80
extras: 1
"""


def test_every_error_at_once() -> None:
    assert errors_of(EVERYTHING_WRONG) == [
        "line 4: networks.front.cidr: cidr 10.0.0.0/24 overlaps network 'wide' (10.0.0.0/16)",
        "line 5: networks.front: duplicate network name 'front' (first at line 4)",
        "line 6: networks.back.cidr: invalid cidr '10.0.0.5/24': 10.0.0.5/24 has host bits set",
        "line 10: security_groups.web.rules.0.direction: Input should be 'ingress' or 'egress' (got 'inbound')",
        "line 12: instances.a: dependency cycle: instance.a -> instance.b -> instance.a",
        "line 16: instances.b.image: unknown variable 'imgae' (declare it under variables)",
        "line 20: instances.c.cpus: Input should be greater than 0 (got -1)",
        "line 21: instances.c.networks.0.network: network 'nowhere' is not in this stack (nor under external)",
        "line 22: instances.c.volumes.0.volume: volume 'missing' is not in this stack (nor under external)",
        "line 23: instances.c.security_groups.1: security group 'ghost' is not in this stack (nor under external)",
        "line 24: instances.c.colour: unknown field 'colour'",
        "line 25: instances.d: a VM takes a whole number of vCPUs, not 1.5; "
        "command and env are for containers; a VM runs its image's own init",
        "line 30: instances.Bad: invalid instance name 'Bad': use 1 to 40 characters from a-z, 0-9 and '-'",
        "line 34: services.api.policy: splits: weights must sum to 100, got 60",
        "line 35: services.api.ingress_port: Input should be greater than or equal to 1024 (got 80)",
        "line 36: extras: unknown field 'extras'",
    ]


def test_policy_problems_are_listed() -> None:
    text = "services:\n  api:\n    policy: {splits: {v1: 50, v2: 10}, colour: red}\n"
    assert errors_of(text) == [
        "line 3: services.api.policy: unknown field 'colour'; splits: weights must sum to 100, got 60"
    ]


def test_a_tcp_services_policy_holds_only_what_applies_to_connections() -> None:
    text = "services:\n  db:\n    protocol: tcp\n    policy: {timeout_ms: 5, allow: [app]}\n  x: {protocol: udp}\n"
    assert errors_of(text) == [
        "line 2: services.db: timeout_ms: a tcp service's policy holds only allow, circuit_breaker, outlier",
        "line 5: services.x.protocol: Input should be 'http' or 'tcp' (got 'udp')",
    ]


def test_duplicates_in_json_and_hcl() -> None:
    assert errors_of('{"volumes": {\n"v": {"size_mb": 1},\n"v": {"size_mb": 2}}}', "json") == [
        "line 3: volumes.v: duplicate volume name 'v' (first at line 2)"
    ]
    hcl = 'volume "v" {\n  size_mb = 1\n}\nvolume "v" {\n  size_mb = 2\n}\n'
    assert errors_of(hcl, "hcl") == ["line 4: volumes.v: duplicate volume name 'v' (first at line 1)"]


NOT_HOST = "is not a host address of 10.1.0.0/24 (other than its gateway)"


def test_cross_resource_rules() -> None:
    text = """\
networks:
  n: {cidr: 10.1.0.0/24}
volumes:
  shared: {size_mb: 8}
  img: {size_mb: 8, format: qcow2}
instances:
  a: {image: x, networks: [{network: n, ip: 10.1.1.5}], volumes: [{volume: shared, path: /s}]}
  b:
    image: x
    networks: [{network: n, ip: 10.1.0.1}]
    volumes: [{volume: shared, path: /s}, {volume: img, path: /i}]
  c: {kind: vm, image: tiny, volumes: [{volume: img, path: /x}]}
"""
    assert errors_of(text) == [
        "line 4: volumes.shared: attached to a, b: a volume attached read-write is on one instance at a time",
        f"line 7: instances.a.networks.0.ip: ip 10.1.1.5 {NOT_HOST}",
        f"line 10: instances.b.networks.0.ip: ip 10.1.0.1 {NOT_HOST}",
        "line 11: instances.b.volumes.1.volume: volume 'img' is qcow2: containers mount raw volumes",
        "line 12: instances.c: volume 'img': a VM's volume has no path",
    ]


def test_syntax_errors_carry_a_line() -> None:
    assert errors_of("a:\n  b: [1\n", "yaml")[0].startswith("line 3: (file): not valid YAML")
    assert errors_of('{\n"a": tru}', "json") == ["line 2: (file): not valid JSON: expected a value"]
    assert errors_of('network "x" {\n  cidr = \n}\n', "hcl")[0].startswith("line 2: (file): not valid HCL")


# -- variables --------------------------------------------------------------------------------------------------
VARS = """\
variables:
  cpus: {default: 2}
  image: {type: string, default: busybox}
  tag: {default: "1.36"}
  debug: {default: true}
instances:
  box:
    image: ${var.image}
    cpus: ${var.cpus}
    command: [echo, "${var.image}:${var.tag} debug=${var.debug} $${var.literal}"]
"""


def test_variables_typed_interpolated_and_overridden() -> None:
    box = load(VARS).resources["instance.box"]
    assert isinstance(box, Instance)
    assert box.cpus == 2 and box.image == "busybox"
    assert box.command == ["echo", "busybox:1.36 debug=true ${var.literal}"]
    other = load(VARS, overrides={"cpus": "0.5", "image": "alpine"}).resources["instance.box"]
    assert isinstance(other, Instance) and other.cpus == 0.5 and other.image == "alpine"


def test_variable_problems() -> None:
    assert errors_of(VARS, colour="red") == ["variables.colour: no such variable to override"]
    assert errors_of(VARS, cpus="many") == [
        "line 2: variables.cpus: override: invalid literal for int() with base 10: 'many'"
    ]
    assert errors_of("variables:\n  x: {type: number}\n") == [
        "line 2: variables.x: has no default: give it a value for this run"
    ]
    assert errors_of("variables:\n  x: {type: number, default: a}\n") == [
        "line 2: variables.x: value 'a' is not a number"
    ]


def test_secrets_only_where_the_platform_passes_them_on() -> None:
    text = (
        "variables:\n  pw: {secret: true, default: '4'}\ninstances:\n  box:\n    image: x\n    cpus: ${var.pw}\n"
    )
    found = errors_of(text)
    assert found == [
        "line 6: instances.box.cpus: Input should be a valid number",  # the value itself is not shown
        "line 6: instances.box.cpus: a secret may only be used in env, command or cloud_init",
    ]


def test_yaml_keys_stay_text() -> None:
    text = "services:\n  api:\n    policy: {retries: {attempts: 2, on: [5xx]}}\n"
    api = load(text).resources["service.api"]
    assert isinstance(api, Service) and api.policy == {"retries": {"attempts": 2, "on": ["5xx"]}}


def test_external_objects_are_valid_references() -> None:
    text = "external: {networks: [shared]}\ninstances:\n  box: {image: x, networks: [{network: shared}]}\n"
    stack = load(text)
    assert list(stack.resources) == ["instance.box"]


# -- schema -----------------------------------------------------------------------------------------------------
def test_json_schema(tmp_path: Path) -> None:
    schema = stack_schema()
    assert set(schema["properties"]) == {
        "variables",
        "networks",
        "security_groups",
        "volumes",
        "instances",
        "services",
        "gateway_routes",
        "external",
    }
    instance = schema["$defs"]["Instance"]
    assert instance["additionalProperties"] is False
    assert {"anyOf"} <= set(instance["properties"]["cpus"])  # a number or a ${var.NAME} reference
    write_schema(tmp_path / "stack.schema.json")
    assert json.loads((tmp_path / "stack.schema.json").read_text())["$id"] == schema["$id"]


def test_remembered_scalar_tags_read_the_same_as_the_safe_loader() -> None:
    """The YAML reader remembers each plain scalar's tag: quoted and plain forms of one text must still differ."""
    text = (
        "a: [1, '1', 1.5, '1.5', true, 'true', null, 'null', ~, 2026-01-01, '2026-01-01', 0x1f, '', ' ', on]\n"
        "b: {x: 1, y: '1', z: \"1\"}\n"
    )
    for _ in range(2):  # the second read answers from what the first remembered
        assert read_yaml(text).data == yaml.safe_load(text)
