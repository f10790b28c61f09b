"""A small REST client for the CLI: the API's URL and token come from the environment or the data dir."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from meshvisor.platform.api_tls import client_ssl
from meshvisor.platform.settings import Settings


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status, self.code, self.message = status, code, message


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
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
                raise ApiError(response.status_code, err["code"], err["message"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(response.status_code, "error", response.text) from None
        return response.json() if response.content else None

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
