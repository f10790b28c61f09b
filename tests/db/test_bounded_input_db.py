"""Bounded input through the API: a body over the limit is 413 before any route reads it (announced, or sent in
chunks), an upload over its own maximum is 413, and bounds on what is stored are 400 naming the bound; in each
case nothing is written."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from meshvisor.api.app import create_app
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.models import Image, Instance, Operation

from .conftest import API_TOKEN, add_ready_image

LIMIT = 64 * 1024


@pytest.fixture
def small(runtime: Runtime) -> Iterator[TestClient]:
    """The API with a body limit of 64 KiB and an upload maximum of 1 KiB."""
    settings = runtime.settings.model_copy(
        update={"admin_token": API_TOKEN, "max_body_bytes": LIMIT, "max_upload_bytes": 1024}
    )
    add_ready_image(runtime)
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {API_TOKEN}"}) as client:
        yield client


def written(runtime: Runtime) -> tuple[int, int, int]:
    with runtime.sessions() as s:
        return tuple(  # type: ignore[return-value]
            s.scalar(select(func.count()).select_from(model)) or 0 for model in (Instance, Operation, Image)
        )


def container(**body: object) -> dict[str, object]:
    return {"name": "web", "kind": "container", "image": "busybox", "command": ["sleep", "1"], **body}


def test_a_10_mb_environment_value_is_refused_413_unread(runtime: Runtime, small: TestClient) -> None:
    """The case as a user tried it: a 10 MB JSON body creating a container with a 10 MB environment value."""
    before = written(runtime)
    refused = small.post("/v1/instances", json=container(env={"HUGE": "x" * 10_000_000}))
    assert refused.status_code == 413, refused.text
    documented = small.get("/openapi.json").json()["paths"]["/v1/instances"]["post"]["responses"]
    assert "413" in documented  # every route with a body can answer it
    assert refused.json()["error"] == {
        "code": "too_large",
        "message": f"the request body is larger than {LIMIT} bytes (MESHVISOR_MAX_BODY_BYTES)",
    }
    assert written(runtime) == before


def test_a_body_sent_in_chunks_is_cut_off_at_the_limit(runtime: Runtime, small: TestClient) -> None:
    body = json.dumps(container(env={"HUGE": "x" * (2 * LIMIT)})).encode()
    chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))  # no Content-Length: sent in chunks
    before = written(runtime)
    refused = small.post("/v1/instances", content=chunks, headers={"Content-Type": "application/json"})
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "too_large", refused.text
    assert written(runtime) == before


def test_a_body_within_the_limit_reaches_the_route_whole(small: TestClient) -> None:
    body = json.dumps(container(env={"SOME": "y" * (LIMIT // 2)})).encode()
    chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))
    accepted = small.post("/v1/instances", content=chunks, headers={"Content-Type": "application/json"})
    assert accepted.status_code == 202, accepted.text
    assert small.get("/v1/instances/web").json()["env"] == {"SOME": "y" * (LIMIT // 2)}


def test_a_stored_bound_is_400_naming_it(runtime: Runtime, small: TestClient) -> None:
    before = written(runtime)
    refused = small.post("/v1/instances", json=container(env={"BIG": "z" * 40_000}))
    assert refused.status_code == 400, refused.text
    assert "environment variable 'BIG' has a value of 40000 bytes; at most 32768" in refused.text
    assert written(runtime) == before


def test_an_upload_over_its_maximum_is_413_and_leaves_no_file(runtime: Runtime, small: TestClient) -> None:
    before = written(runtime)
    refused = small.post("/v1/images/import", params={"name": "big"}, content=b"\0" * 4096)
    assert refused.status_code == 413, refused.text
    assert "the upload is over 1024 bytes (MESHVISOR_MAX_UPLOAD_BYTES)" in refused.text
    assert written(runtime) == before
    assert list(runtime.settings.uploads_dir.glob("*")) == []
