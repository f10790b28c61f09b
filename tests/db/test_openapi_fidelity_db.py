"""The OpenAPI document says what the server answers (issue 20): a method a path does not answer gets 405 with an
`Allow` header naming exactly the methods the document gives that path, for every path of the document
(`OPTIONS /v1/instances` said `Allow: POST` while GET exists); and the statuses seen here are documented for
their route (a `PUT /v1/services/{name}` that creates answers 201; `/metrics` without a token 401, for a viewer
naming another project 404)."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from meshvisor.core.instance_rules import MIN_CONTAINER_MEMORY_MB
from meshvisor.core.names import NAME_PATTERN
from meshvisor.platform import reconciler
from meshvisor.platform.runtime import Runtime

from .conftest import add_ready_image
from .test_projects_db import as_, instance_body

METHODS = ("delete", "get", "head", "options", "patch", "post", "put")


def concrete(path: str) -> str:
    """The path with each parameter given a value its route takes."""
    return re.sub(r"\{[^}]+\}", "x1", path)


def template_pattern(template: str) -> str:
    """A regular expression of a path template: each `{parameter}` one path segment."""
    parts = re.split(r"(\{[^}]+\})", template)
    return "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)


def methods_of(paths: dict[str, dict[str, object]], path: str) -> set[str]:
    """The methods the document gives every path template that `path` matches (`/v1/images/import` is also
    `/v1/images/{name}`): those a request to it is answered by."""
    return {
        method.upper()
        for template, operations in paths.items()
        if re.fullmatch(template_pattern(template), path)
        for method in operations
        if method in METHODS
    }


def test_every_paths_405_allows_exactly_its_documented_methods(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    checked = 0
    for path in paths:
        answered = methods_of(paths, concrete(path))
        # A path the document has as it is (`/v1/images/import`) is its own resource: its methods only.
        own = path if "{" not in path else None
        expected = sorted(m.upper() for m in paths[own] if m in METHODS) if own else sorted(answered)
        for method in (m.upper() for m in METHODS if m.upper() not in answered):
            answer = api.request(method, concrete(path))
            assert answer.status_code == 405, (method, path, answer.status_code, answer.text)
            assert answer.headers["allow"] == ", ".join(expected), (method, path, answer.headers["allow"])
            if method != "HEAD":  # an answer to HEAD has no body
                assert answer.json()["error"]["code"] == "method_not_allowed", answer.text
            checked += 1
    assert checked > 100  # every path of the document, not a few


def test_options_on_the_instances_collection_names_get_and_post(api: TestClient) -> None:
    answer = api.options("/v1/instances")
    assert (answer.status_code, answer.headers["allow"]) == (405, "GET, POST")


def documented(api: TestClient, method: str, template: str) -> set[int]:
    operation = api.get("/openapi.json").json()["paths"][template][method.lower()]
    return {int(code) for code in operation["responses"]}


def test_the_statuses_answered_are_documented(api: TestClient) -> None:
    made = api.put("/v1/services/web", json={"policy": {}})
    replaced = api.put("/v1/services/web", json={"policy": {}})
    assert (made.status_code, replaced.status_code) == (201, 200), (made.text, replaced.text)
    assert {201, 200} <= documented(api, "PUT", "/v1/services/{name}")
    anonymous = api.get("/metrics", headers={"Authorization": ""})
    viewer = api.post("/v1/tokens", json={"name": "v", "role": "viewer"}).json()["token"]
    assert api.post("/v1/projects", json={"name": "other"}).status_code == 201
    elsewhere = api.get("/metrics", params={"project": "other"}, headers=as_(viewer))  # names do not leak
    assert (anonymous.status_code, elsewhere.status_code) == (401, 404), (anonymous.text, elsewhere.text)
    assert {200, 401, 404} <= documented(api, "GET", "/metrics")
    weak = api.post("/v1/networks", json={"name": "n", "cidr": "10.242.0.0/24"}, headers=as_(viewer))
    assert weak.status_code == 403 and 403 in documented(api, "POST", "/v1/networks")


def test_every_if_match_header_says_its_format(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    headers = [
        parameter
        for operations in paths.values()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "header" and parameter["name"] == "If-Match"
    ]
    assert len(headers) > 10  # every write of a named resource, not a few
    assert all("ETag" in p["description"] and "412" in p["description"] for p in headers), headers


def action_enum(api: TestClient, schema: str) -> list[str]:
    return list(api.get("/openapi.json").json()["components"]["schemas"][schema]["properties"]["action"]["enum"])


def test_the_documented_actions_are_the_ones_taken(api: TestClient, runtime: Runtime) -> None:
    add_ready_image(runtime)
    assert api.post("/v1/instances", json=instance_body("web")).status_code == 202
    assert api.post("/v1/volumes", json={"name": "v", "size_mb": 16}).status_code == 202
    for path, schema in (
        ("/v1/instances/web/actions", "ActionRequest"),
        ("/v1/volumes/v/actions", "VolumeActionRequest"),
    ):
        listed = action_enum(api, schema)
        for action in listed:  # busy or not allowed now, perhaps, but never an unknown action
            answer = api.post(path, json={"action": action})
            assert "unknown" not in answer.text, (path, action, answer.text)
        for action in ("", "explode", listed[0].upper()):
            answer = api.post(path, json={"action": action})
            assert answer.status_code in (400, 422) and "unknown" in answer.text, (path, action, answer.text)
            assert all(a in answer.text for a in listed), answer.text  # the refusal names what is taken


def body_schemas(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every JSON request body of the document, by its component's name."""
    schemas = document["components"]["schemas"]
    found = {}
    for operations in document["paths"].values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = content.get("schema", {}).get("$ref", "")
            if ref:
                found[ref.rsplit("/", 1)[1]] = schemas[ref.rsplit("/", 1)[1]]
    return found


def patterns(prop: dict[str, Any]) -> set[str]:
    return {p for p in [prop.get("pattern"), *(a.get("pattern") for a in prop.get("anyOf", []))] if p}


def test_every_name_a_request_body_takes_carries_the_servers_name_rule(api: TestClient) -> None:
    """A client generator or a fuzzer learns the name rule from the document (names with characters the server
    refuses were schema-valid): every `name` of a request body, and the networks, projects and volumes an
    instance names, have the pattern the server checks (`core.names.NAME_PATTERN`)."""
    document = api.get("/openapi.json").json()
    bodies = body_schemas(document)
    named = {body for body, schema in bodies.items() if "name" in schema.get("properties", {})}
    assert {"InstanceCreate", "NetworkCreate", "VolumeCreate", "ProjectCreate", "TokenCreate"} <= named
    for body in named:
        assert patterns(bodies[body]["properties"]["name"]) == {NAME_PATTERN.pattern}, body
    schemas = document["components"]["schemas"]
    for component, field in (("NetworkAttachment", "network"), ("NetworkAttachment", "project"),
                             ("VolumeAttachment", "volume")):  # fmt: skip
        assert patterns(schemas[component]["properties"][field]) == {NAME_PATTERN.pattern}, (component, field)
    refused = api.post("/v1/networks", json={"name": "Not-A-Name", "cidr": "10.242.9.0/24"})
    assert refused.status_code == 400 and "1 to 40 characters" in refused.text  # the server's own answer


def test_the_documented_bounds_are_the_servers(api: TestClient) -> None:
    """An empty CIDR, an out-of-range port, VNI or MTU and an unknown CA action were schema-valid and refused: the
    document now carries the server's own bounds, so what it allows at the edges the server takes, and what it
    refuses the server refuses too."""
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    network = schemas["NetworkCreate"]["properties"]
    for cidr, valid in (("", False), ("10.242.30.0/24", True), ("300.1.1.0/24", False), ("10.0.0.0/33", False)):
        assert bool(re.search(network["cidr"]["pattern"], cidr)) is valid, cidr
        made = api.post("/v1/networks", json={"name": f"b{len(cidr)}", "cidr": cidr})
        assert made.status_code == (202 if valid else 400), (cidr, made.text)
    assert (network["vni"]["minimum"], network["vni"]["maximum"]) == (1, 2**24 - 1)
    assert (network["mtu"]["minimum"], network["mtu"]["maximum"]) == (576, 8950)
    for body in ("ServiceCreate", "ServiceReplace"):
        port = schemas[body]["properties"]["ingress_port"]
        assert (port["minimum"], port["maximum"]) == (1024, 65535), body
    assert api.post("/v1/services", json={"name": "low", "ingress_port": 1023}).status_code == 400
    assert api.post("/v1/services", json={"name": "edge", "ingress_port": 65535}).status_code == 201
    assert schemas["CaAction"]["properties"]["action"]["enum"] == ["rotate", "retire"]


def test_an_image_source_and_a_volume_size_are_documented_as_the_server_needs_them(api: TestClient) -> None:
    """A missing image `source.type` and a volume without `size_mb` (and no image) were schema-valid: the source
    is one of the kinds the server takes, each with what it needs, and a volume names a size or an image."""
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    kinds = schemas["ImageCreate"]["properties"]["source"]["oneOf"]
    assert [k["properties"]["type"]["const"] for k in kinds] == ["builtin", "dockerfile", "pull"]
    assert all("type" in k["required"] for k in kinds)
    dockerfile, pull = kinds[1], kinds[2]
    assert re.search(dockerfile["properties"]["dockerfile"]["pattern"], "# a comment\nfrom busybox\n")
    assert not re.search(dockerfile["properties"]["dockerfile"]["pattern"], "RUN true\n")
    assert re.search(pull["properties"]["ref"]["pattern"], "127.0.0.1:5000/app:1")
    for source in ({}, {"type": "dockerfile", "dockerfile": "RUN true"}, {"type": "pull", "ref": "-bad"}):
        refused = api.post("/v1/images", json={"name": "doc-img", "source": source})
        assert refused.status_code == 400, (source, refused.text)  # what the document refuses too
    assert [one["required"] for one in schemas["VolumeCreate"]["anyOf"]] == [["size_mb"], ["image"]]
    assert api.post("/v1/volumes", json={"name": "null-size", "size_mb": None}).status_code == 400
    assert api.post("/v1/volumes", json={"name": "no-size"}).status_code == 400


def test_a_resize_documents_the_lower_bounds_the_server_checks(api: TestClient, runtime: Runtime) -> None:
    """A PATCH's `cpus` and `memory_mb` had no bounds in the document (the dashboard's resize form wrote its own):
    they carry the create's now, and the server refuses below them."""
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    patch, create = schemas["InstancePatch"]["properties"], schemas["InstanceCreate"]["properties"]
    assert patch["cpus"]["exclusiveMinimum"] == create["cpus"]["exclusiveMinimum"] == 0
    assert patch["memory_mb"]["minimum"] == create["memory_mb"]["minimum"] == MIN_CONTAINER_MEMORY_MB
    add_ready_image(runtime)
    made = api.post("/v1/instances", json=instance_body("sized"))
    assert made.status_code == 202, made.text
    reconciler.run_operation(runtime, made.json()["operation"]["id"])  # as a worker would, on the fake driver
    for change in ({"cpus": 0}, {"memory_mb": MIN_CONTAINER_MEMORY_MB - 1}):
        refused = api.patch("/v1/instances/sized", json=change)
        assert refused.status_code == 400, (change, refused.text)
    unchanged = api.get("/v1/instances/sized").json()
    assert (unchanged["cpus"], unchanged["memory_mb"]) == (1.0, 256)
