"""`meshvisor instances create` with every part of an instance the API takes: security groups, volumes (read-only
too), the mesh (service, port, version, upstreams of this project and another) — the request the API records is
the one the options say; a malformed option is one line, exit 1, before anything is sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Volume

from .conftest import add_ready_image, answer, cli_served, one_line_error
from .test_forwards_db import _ready


@pytest.fixture
def cli(runtime: Runtime, api: TestClient) -> Iterator[Any]:
    add_ready_image(runtime)
    assert api.post("/v1/networks", json={"name": "net", "cidr": "10.242.40.0/24"}).status_code == 202
    assert api.post("/v1/security-groups", json={"name": "web", "rules": []}).status_code == 201
    assert api.post("/v1/services", json={"name": "db"}).status_code == 201  # an upstream of this project exists
    for volume in ("data", "seed"):
        assert api.post("/v1/volumes", json={"name": volume, "size_mb": 16}).status_code == 202
    _ready(runtime)
    with transaction(runtime.sessions) as s:
        s.execute(update(Volume).values(state="ready", operation_id=None))
    with cli_served(runtime) as run:
        yield run


def test_a_meshed_instance_with_groups_and_volumes_from_the_shell(cli: Any) -> None:
    made = answer(cli(
        "instances", "create", "app", "--image", "busybox", "--network", "net", "--security-group", "web",
        "--volume", "data:/data", "--volume", "seed:/seed:ro", "--mesh", "app:8080", "--mesh-version", "v2",
        "--upstream", "db:9001", "--upstream", "team-b/search:9002", "--no-wait", "-o", "json",
        "--", "httpd", "-f",
    ))  # fmt: skip
    assert made["security_groups"] == ["web"]
    volumes = [(v["volume"], v["path"], v["read_only"]) for v in made["volumes"]]
    assert volumes == [("data", "/data", False), ("seed", "/seed", True)]
    mesh = made["mesh"]
    assert (mesh["service"], mesh["port"], mesh["version"]) == ("app", 8080, "v2")
    assert mesh["upstreams"] == [
        {"service": "db", "local_port": 9001},
        {"service": "search", "local_port": 9002, "project": "team-b"},
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--mesh", "app"], "use SERVICE:PORT"),
        (["--mesh", "app:http"], "use SERVICE:PORT"),
        (["--upstream", "db:9001"], "need --mesh"),
        (["--mesh", "app:8080", "--upstream", "db"], "use [PROJECT/]SERVICE:LOCAL_PORT"),
        (["--volume", "data:rx"], "use VOLUME[:PATH][:ro]"),
        (["--volume", "data:/a:/b"], "use VOLUME[:PATH][:ro]"),
        (["--security-group", "nowhere"], "nowhere"),
    ],
)
def test_bad_instance_options_make_nothing(cli: Any, options: list[str], message: str) -> None:
    argv = ["instances", "create", "bad", "--image", "busybox", "--network", "net", *options, "--no-wait"]
    one_line_error(cli(*argv), message)
    assert answer(cli("instances", "list", "-o", "json")) == []
