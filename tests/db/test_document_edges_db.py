"""Regression tests for what the fuzzer (`test_openapi_fuzz_db.py`) found between the OpenAPI document and the
server (issue 20), one kind each: cursors, unknown fields inside a policy, a rule or the quotas, whole numbers
written with a fraction, NUL in a request's text, a stack file the YAML reader refuses, and refusals that come
from what is there (the host, another resource) answered 404 or 409, not as a malformed request (400)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meshvisor.platform.runtime import Runtime

from .conftest import add_ready_image


def schemas(api: TestClient) -> dict[str, Any]:
    return dict(api.get("/openapi.json").json()["components"]["schemas"])


def cursor_pattern(api: TestClient, path: str) -> str:
    parameters = api.get("/openapi.json").json()["paths"][path]["get"]["parameters"]
    cursor = next(p for p in parameters if p["name"] == "cursor")
    return str(next(s["pattern"] for s in cursor["schema"]["anyOf"] if "pattern" in s))


@pytest.mark.parametrize("path", ["/v1/instances", "/v1/networks", "/v1/volumes", "/v1/images", "/v1/audit"])
def test_any_cursor_of_the_documented_form_is_a_position(api: TestClient, path: str) -> None:
    """ "invalid cursor" answered schema-valid cursors: one that decodes to bytes that are not text, or to a NUL
    (PostgreSQL's text cannot hold it), is a position all the same; one not of the form is refused."""
    pattern = cursor_pattern(api, path)
    for cursor in ("AA", "_w", "d2Vi", "zzzz-_"):
        assert re.fullmatch(pattern, cursor), cursor
        answer = api.get(path, params={"cursor": cursor})
        assert answer.status_code == 200 and answer.json()["items"] == [], (cursor, answer.text)
    for cursor in ("a", "!!", "abcde"):
        assert not re.fullmatch(pattern, cursor), cursor
        assert api.get(path, params={"cursor": cursor}).status_code == 422, cursor


def test_a_page_of_names_goes_on_from_its_cursor(api: TestClient) -> None:
    for name in ("a1", "b2", "c3"):
        assert api.post("/v1/security-groups", json={"name": name}).status_code == 201
    first = api.get("/v1/security-groups", params={"limit": 2}).json()
    rest = api.get("/v1/security-groups", params={"cursor": first["next_cursor"]}).json()
    assert [g["name"] for g in first["items"] + rest["items"]] == ["a1", "b2", "c3"]


def test_unknown_fields_inside_a_policy_a_rule_and_the_quotas_are_documented_as_refused(api: TestClient) -> None:
    documented = schemas(api)
    assert documented["ServiceCreate"]["properties"]["policy"]["additionalProperties"] is False
    assert documented["SecurityGroupCreate"]["properties"]["rules"]["items"]["additionalProperties"] is False
    assert documented["ProjectCreate"]["properties"]["quotas"]["additionalProperties"] is False
    retries = documented["ServiceCreate"]["properties"]["policy"]["properties"]["retries"]
    assert retries["additionalProperties"] is False and retries["properties"]["attempts"]["maximum"] == 100
    for path, body in (
        ("/v1/services", {"name": "s", "policy": {"colour": "red"}}),
        ("/v1/services", {"name": "s", "policy": {"retries": {"attempts": 2, "tries": 3}}}),
        ("/v1/security-groups", {"name": "g", "rules": [{"direction": "ingress", "protocol": "tcp", "x": 1}]}),
        ("/v1/projects", {"name": "p", "quotas": {"gpus": 1}}),
    ):
        refused = api.post(path, json=body)
        assert refused.status_code == 400 and "unknown" in refused.text, (path, refused.text)
    assert api.get("/v1/services").json()["items"] == [] and api.get("/v1/security-groups").json()["items"] == []


def test_a_whole_number_written_with_a_fraction_is_that_integer(api: TestClient) -> None:
    """JSON Schema's `integer` takes `1.0`: so does the server, as 1 (a fraction that is not zero stays one)."""
    made = api.post(
        "/v1/services",
        json={
            "name": "w",
            "ingress_port": 20000.0,
            "policy": {"timeout_ms": 1e3, "retries": {"budget_percent": 12.5}},
        },
    )
    assert made.status_code == 201, made.text
    assert made.json()["ingress_port"] == 20000 and isinstance(made.json()["ingress_port"], int)
    assert (
        made.json()["policy"]["timeout_ms"] == 1000 and made.json()["policy"]["retries"]["budget_percent"] == 12.5
    )
    refused = api.post("/v1/services", json={"name": "f", "ingress_port": 20001.5})
    assert refused.status_code in (400, 422), refused.text


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("POST", "/v1/security-groups", None, {"name": "g", "description": "a\u0000b"}),
        ("POST", "/v1/services", None, {"name": "s", "policy": {"allow": ["a\u0000"]}}),
        ("GET", "/v1/instances", {"project": "de\u0000fault"}, None),
        ("GET", "/v1/instances/we%00b", None, None),
    ],
)
def test_nul_in_a_request_is_refused_and_changes_nothing(
    api: TestClient, method: str, path: str, params: dict[str, str] | None, body: dict[str, Any] | None
) -> None:
    """PostgreSQL's text cannot hold NUL: a request with one answered 500 there (DataError)."""
    answer = api.request(method, path, params=params, json=body)
    assert answer.status_code == 400 and "NUL" in answer.json()["error"]["message"], answer.text
    assert api.get("/v1/security-groups").json()["items"] == [] and api.get("/v1/services").json()["items"] == []


def test_a_stack_file_the_yaml_reader_refuses_is_a_bad_request(api: TestClient) -> None:
    """A control character made PyYAML's reader fail before the parser, and the plan answered 500."""
    answer = api.post("/v1/stacks/s/plan", json={"spec": "networks:\n  a: \x07\n"})
    assert answer.status_code == 400 and "not valid YAML" in answer.text, answer.text


def test_what_is_there_is_not_the_requests_fault(api: TestClient, runtime: Runtime) -> None:
    """Refusals that depend on the host or on other resources are 404 (what it names is not there) or 409 (what
    is there does not allow it), so a schema-valid request is never answered as malformed."""
    add_ready_image(runtime)
    assert api.post("/v1/networks", json={"name": "n1", "cidr": "10.244.0.0/24"}).status_code == 202
    for method, path, body, status, words in (
        ("POST", "/v1/networks", {"name": "n2", "cidr": "10.244.0.0/25"}, 409, "overlaps"),
        ("POST", "/v1/instances", {"name": "big", "image": "busybox", "cpus": 100_000}, 409, "this host's CPUs"),
        (
            "POST",
            "/v1/instances",
            {
                "name": "up",
                "image": "busybox",
                "mesh": {"service": "a", "port": 80, "upstreams": [{"service": "nope", "local_port": 81}]},
            },
            404,
            "unknown upstream",
        ),  # fmt: skip
        (
            "POST",
            "/v1/security-groups",
            {"name": "g", "rules": [{"direction": "ingress", "protocol": "tcp", "group": "nobody"}]},
            404,
            "does not exist",
        ),  # fmt: skip
        (
            "POST",
            "/v1/images",
            {"name": "b", "source": {"type": "dockerfile", "dockerfile": "FROM nope\n"}},
            404,
            "no image 'nope'",
        ),  # fmt: skip
    ):
        answer = api.request(method, path, json=body)
        assert answer.status_code == status and words in answer.text, (path, answer.text)
    assert [i["name"] for i in api.get("/v1/instances").json()["items"]] == []


def test_a_path_of_its_own_allows_its_own_methods_and_the_event_stream_is_documented(api: TestClient) -> None:
    """`OPTIONS /v1/images/import` said `Allow: DELETE, GET, POST` (the methods of `/v1/images/{name}` too);
    `/v1/events` answered a 404 and a `text/event-stream` body the document did not have."""
    answer = api.options("/v1/images/import")
    assert (answer.status_code, answer.headers["allow"]) == (405, "POST")
    events = api.get("/openapi.json").json()["paths"]["/v1/events"]["get"]["responses"]
    assert "text/event-stream" in events["200"]["content"] and {"404", "429"} <= set(events)
