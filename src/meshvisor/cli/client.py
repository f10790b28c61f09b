"""A small REST client for the CLI: the API's URL and token come from the environment or the data dir."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from meshvisor.platform.api_tls import client_ssl
from meshvisor.platform.settings import Settings


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status, self.code, self.message = status, code, message


def _raise_for_error(response: httpx.Response) -> None:
    """An answer of 400 or more as an ApiError with the API's code and message."""
    if response.status_code < 400:
        return
    try:
        err = response.json()["error"]
        code, message = err["code"], err["message"]
    except (ValueError, KeyError, TypeError):
        code, message = "error", response.text
    raise ApiError(response.status_code, code, message)


class ApiClient:
    def __init__(self, settings: Settings, timeout: float = 60.0, project: str | None = None) -> None:
        """`project`: every request acts in it (`?project=`, a platform admin's choice)."""
        token = settings.api_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        params = {"project": project} if project else {}
        self.http = httpx.Client(
            base_url=settings.base_api_url,
            headers=headers,
            params=params,
            timeout=timeout,
            verify=client_ssl(settings),
        )

    def request(self, method: str, path: str, **kw: Any) -> Any:
        response = self.http.request(method, path, **kw)
        _raise_for_error(response)
        return response.json() if response.content else None

    def events(self, since: int | None = None) -> Iterator[dict[str, Any]]:
        """The project's events as the API streams them (server-sent events), those after event `since` first
        (None: from now on); it ends only when the caller stops or the API does."""
        params = {"since": since} if since is not None else {}
        with self.http.stream("GET", "/v1/events", params=params, timeout=httpx.Timeout(10.0, read=None)) as got:
            if got.status_code >= 400:
                got.read()
                _raise_for_error(got)
            for line in got.iter_lines():
                if line.startswith("data: "):
                    yield json.loads(line.removeprefix("data: "))

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Any:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def wait(
        self, op_id: str, timeout: float = 600, on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            op: dict[str, Any] = self.get(f"/v1/operations/{op_id}/wait", params={"timeout": 2})
            if on_progress:
                on_progress(op)
            if op["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
                return op

    def healthy(self) -> bool:
        try:
            return self.http.get("/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
