"""Opening the Docker client and translating its errors into the platform's error tree."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import docker
import docker.errors
import requests.exceptions

from meshvisor.core.errors import Conflict, MeshvisorError, NotFound, PermanentError, TransientError

# The engine on these hosts speaks 1.41 (Docker 20.10); newer engines accept it too. A fixed version means the
# client does not talk to the daemon when it is built, so a daemon that is down fails the first call, not __init__.
API_VERSION = "1.41"
DEFAULT_URL = "unix:///var/run/docker.sock"

T = TypeVar("T")


# What the engine answers (5xx) when it, or the containerd under it, is going away or coming back: worth a retry.
GOING_AWAY = ("connection", "transport is closing", "unavailable", "shutting down")


def open_client(base_url: str | None = None, timeout: float = 60.0) -> docker.DockerClient:
    return docker.DockerClient(base_url=base_url or DEFAULT_URL, version=API_VERSION, timeout=int(timeout))


@contextmanager
def docker_errors(what: str) -> Iterator[None]:
    """Run Docker calls, raising TransientError when the daemon is unreachable and the matching error otherwise."""
    try:
        yield
    except MeshvisorError:
        raise
    except docker.errors.NotFound as exc:
        raise NotFound(f"{what}: {_explain(exc)}") from exc
    except docker.errors.APIError as exc:
        status = exc.status_code or 500
        if status == 409:
            raise Conflict(f"{what}: {_explain(exc)}") from exc
        if status >= 500 and any(sign in str(exc).lower() for sign in GOING_AWAY):
            raise TransientError(f"{what}: Docker daemon error: {_explain(exc)}") from exc
        raise PermanentError(f"{what}: {_explain(exc)}") from exc
    except (requests.exceptions.ConnectionError, ConnectionError, FileNotFoundError) as exc:
        raise TransientError(f"{what}: Docker daemon unreachable ({exc.__class__.__name__}: {exc})") from exc
    except requests.exceptions.Timeout as exc:
        raise TransientError(f"{what}: Docker daemon did not answer in time") from exc
    except docker.errors.DockerException as exc:
        if "connection" in str(exc).lower():
            raise TransientError(f"{what}: Docker daemon unreachable: {exc}") from exc
        raise PermanentError(f"{what}: {exc}") from exc


def _explain(exc: docker.errors.APIError) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or exc)


def call(what: str, fn: Callable[[], T]) -> T:
    with docker_errors(what):
        return fn()
