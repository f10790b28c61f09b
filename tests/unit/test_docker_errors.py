"""How the Docker engine's errors become the platform's (an engine or its containerd going away is transient),
and a start that meets the endpoint an engine restart left behind clears it."""

from __future__ import annotations

import pytest
import requests
from docker.errors import APIError

from meshvisor.containers.docker_client import docker_errors
from meshvisor.core.errors import Conflict, NotFound, PermanentError, TransientError


def api_error(status: int, explanation: str) -> APIError:
    response = requests.Response()
    response.status_code = status
    return APIError(f"{status} Server Error", response=response, explanation=explanation)


@pytest.mark.parametrize(
    "explanation",
    [
        "Cannot restart container abc: transport is closing: unavailable",  # containerd went away mid-call
        "connection error: desc = transport: Error while dialing dial unix containerd.sock",
        "Error response from daemon: the daemon is shutting down",
    ],
)
def test_an_engine_going_away_is_transient(explanation: str) -> None:
    with pytest.raises(TransientError, match="restart container"):
        with docker_errors("restart container x"):
            raise api_error(500, explanation)


def test_other_errors_keep_their_kind() -> None:
    with pytest.raises(PermanentError, match="already exists"):
        with docker_errors("start container x"):
            raise api_error(500, "task abc: already exists")
    with pytest.raises(Conflict):
        with docker_errors("create container x"):
            raise api_error(409, "name in use")
    with pytest.raises(TransientError, match="unreachable"):
        with docker_errors("inspect container x"):
            raise requests.exceptions.ConnectionError("Connection aborted.")
    from docker.errors import NotFound as DockerNotFound

    with pytest.raises(NotFound):
        with docker_errors("inspect container x"):
            raise DockerNotFound("no such container", response=requests.Response())


class Api:
    def __init__(self) -> None:
        self.disconnected: list[tuple[str, str, bool]] = []

    def disconnect_container_from_network(self, container: str, net: str, force: bool = False) -> None:
        self.disconnected.append((container, net, force))


class Container:
    """A stopped container whose first start meets the endpoint an interrupted start left behind."""

    id, name, status = "abc123", "t1-ct-abc", "exited"

    def __init__(self, api: Api) -> None:
        self.api, self.starts = api, 0

    def start(self) -> None:
        self.starts += 1
        if not self.api.disconnected:
            raise api_error(403, "endpoint with name t1-ct-abc already exists in network none")


def test_a_start_clears_the_endpoint_an_interrupted_start_left() -> None:
    from types import SimpleNamespace

    from meshvisor.containers.docker_driver import DockerDriver

    driver = DockerDriver("t1", "unix:///nonexistent.sock")
    api = Api()
    container = Container(api)
    driver._client = SimpleNamespace(api=api)  # type: ignore[assignment]
    driver._get = lambda _id: container  # type: ignore[assignment,method-assign,return-value]
    driver.start("abc123")
    assert api.disconnected == [("abc123", "none", True)] and container.starts == 2


def test_a_start_that_fails_otherwise_is_not_tried_again() -> None:
    from types import SimpleNamespace

    from meshvisor.containers.docker_driver import DockerDriver

    driver = DockerDriver("t1", "unix:///nonexistent.sock")
    container = Container(Api())

    def refused() -> None:
        container.starts += 1
        raise api_error(500, "OCI runtime create failed")

    container.start = refused  # type: ignore[method-assign]
    driver._client = SimpleNamespace(api=Api())  # type: ignore[assignment]
    driver._get = lambda _id: container  # type: ignore[assignment,method-assign,return-value]
    with pytest.raises(PermanentError, match="OCI runtime"):
        driver.start("abc123")
    assert container.starts == 1
