"""A typed Python client of the meshvisor REST API, on httpx alone: what the CLI talks through, and what scripts
and tests use instead of hand-built requests.

    with Client("http://127.0.0.1:8080", token) as api:
        api.networks.create("net1", cidr="10.20.0.0/24")                 # waits for its operation
        web = api.instances.create("web", image="busybox", networks=[{"network": "net1"}])
        api.instances.act("web", "stop")
        for event in api.events(since=0): ...

Client            the connection (URL, token, project, TLS); raw requests, every page of a list, the wait for an
                  accepted request's operation, the event stream
Collection        one kind of resource under its path: list (every page), get, create, delete, and the actions of
                  those that have them; `Client` has one per resource of the API
Operation         an accepted request's operation as the API shows it (a typed dict)
ApiError          an answer of 400 or more, with the API's code and message
OperationFailed   an operation waited for that ended other than `succeeded`, with it
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypedDict, cast

import httpx

Resource = dict[str, Any]
ENDED = ("succeeded", "failed", "cancelled")
WAIT_POLL_S = 2  # the API's long poll (`/wait?timeout=`): an ended operation is seen at once


class Operation(TypedDict):
    """An operation as `GET /v1/operations/{id}` shows it: the document's `OperationPublic`, restated here because
    the client stands apart from the server's code (import-linter)."""

    id: str
    status: str  # pending | running | succeeded | failed | cancelled
    action: str
    resource_type: str
    resource_name: str
    resource_id: str
    project: str
    params: dict[str, Any]
    error: str | None
    attempts: int
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class ApiError(Exception):
    """An answer of 400 or more: its HTTP status and the API's error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status, self.code, self.message = status, code, message

    @classmethod
    def check(cls, response: httpx.Response) -> None:
        """Raise the answer's error, if it is one."""
        if response.status_code < 400:
            return
        try:
            err = response.json()["error"]
            code, message = str(err["code"]), str(err["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "error", response.text
        raise cls(response.status_code, code, message)


class OperationFailed(Exception):
    """An operation waited for ended other than `succeeded` (or was still going at the time limit)."""

    def __init__(self, operation: Operation) -> None:
        reason = operation.get("error") or "no reason given"
        super().__init__(f"{operation['action']} {operation['resource_name']}: {operation['status']}: {reason}")
        self.operation = operation


class Client:
    """One API (its URL), as one token, acting in one project (`project`: a platform admin's choice; None: the
    token's own)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        project: str | None = None,
        timeout: float = 60.0,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._serve(
            httpx.Client(
                base_url=url,
                headers={"Authorization": f"Bearer {token}"} if token else {},
                params={"project": project} if project else {},
                timeout=timeout,
                verify=verify,
                transport=transport,
            )
        )

    @classmethod
    def over(cls, http: httpx.Client) -> Client:
        """This client on an httpx client made elsewhere (its base URL, headers and transport as they are): for
        code that also sends requests of its own, to read their HTTP answers. Closing either closes both."""
        client = cls.__new__(cls)
        client._serve(http)
        return client

    def _serve(self, http: httpx.Client) -> None:
        self.http = http
        self.instances = Instances(self, "/v1/instances")
        self.networks = Collection(self, "/v1/networks")
        self.security_groups = Collection(self, "/v1/security-groups")
        self.volumes = Collection(self, "/v1/volumes")
        self.storage_pools = Collection(self, "/v1/storage-pools")
        self.images = Collection(self, "/v1/images")
        self.services = Services(self, "/v1/services")
        self.forwards = Collection(self, "/v1/forwards")
        self.projects = Collection(self, "/v1/projects")
        self.tokens = Collection(self, "/v1/tokens")
        self.hosts = Collection(self, "/v1/hosts")
        self.stacks = Collection(self, "/v1/stacks")

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # -- requests ----------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kw: Any) -> Any:
        """The answer's JSON (None when it has no body); ApiError for an answer of 400 or more."""
        response = self.http.request(method, path, **kw)
        ApiError.check(response)
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

    def pages(self, path: str, limit: int = 1000, **params: Any) -> Iterator[Resource]:
        """Every item of a paged list, page after page (`next_cursor`)."""
        cursor = None
        while True:
            page = self.get(path, params={"limit": limit, **params} | ({"cursor": cursor} if cursor else {}))
            yield from page["items"]
            if not (cursor := page.get("next_cursor")):
                return

    # -- operations --------------------------------------------------------------------------------------------
    def operation(self, op_id: str) -> Operation:
        return cast(Operation, self.get(f"/v1/operations/{op_id}"))

    def wait(
        self, op_id: str, timeout: float = 600, on_progress: Callable[[Operation], None] | None = None
    ) -> Operation:
        """The operation once it has ended, or as it is at `timeout` (seconds); `on_progress` sees every look."""
        deadline = time.monotonic() + timeout
        while True:
            op = cast(Operation, self.get(f"/v1/operations/{op_id}/wait", params={"timeout": WAIT_POLL_S}))
            if on_progress:
                on_progress(op)
            if op["status"] in ENDED or time.monotonic() > deadline:
                return op

    def submit(self, method: str, path: str, wait: bool = True, timeout: float = 600, **kw: Any) -> Any:
        """Send a request that may be accepted as an operation (202, `{"operation": ...}`): waited for (unless
        `wait` is false), OperationFailed unless it succeeded. The answer's JSON (its operation as it ended)."""
        answer = self.request(method, path, **kw)
        if not wait or not isinstance(answer, dict) or "operation" not in answer:
            return answer
        ended = self.wait(answer["operation"]["id"], timeout)
        if ended["status"] != "succeeded":
            raise OperationFailed(ended)
        return {**answer, "operation": ended}

    # -- events ------------------------------------------------------------------------------------------------
    def events(self, since: int | None = None) -> Iterator[Resource]:
        """The project's events as the API streams them (server-sent events), those after event `since` first
        (None: from now on); it ends only when the caller stops or the API does."""
        params = {"since": since} if since is not None else {}
        with self.http.stream("GET", "/v1/events", params=params, timeout=httpx.Timeout(10.0, read=None)) as got:
            if got.status_code >= 400:
                got.read()
                ApiError.check(got)
            for line in got.iter_lines():
                if line.startswith("data: "):
                    yield json.loads(line.removeprefix("data: "))

    def healthy(self) -> bool:
        try:
            return self.http.get("/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


class Collection:
    """The resources under `path` (`/v1/<plural>`), each named; every write waits for its operation."""

    def __init__(self, client: Client, path: str) -> None:
        self.client, self.path = client, path

    def list(self, **params: Any) -> list[Resource]:
        return list(self.client.pages(self.path, **params))

    def get(self, name: str, **params: Any) -> Resource:
        return cast(Resource, self.client.get(f"{self.path}/{name}", params=params))

    def create(self, name: str, timeout: float = 600, **body: Any) -> Resource:
        """Made (its operation waited for, when it has one), then read back."""
        self.client.submit("POST", self.path, timeout=timeout, json={"name": name, **body})
        return self.get(name)

    def delete(self, name: str, timeout: float = 600, **params: Any) -> None:
        """Gone (its operation waited for, when it has one)."""
        self.client.submit("DELETE", f"{self.path}/{name}", timeout=timeout, params=params)

    def act(self, name: str, action: str, /, wait: bool = True, timeout: float = 600, **params: Any) -> Operation:
        """`POST {path}/{name}/actions` (instances, volumes): the operation, as it ended unless `wait` is false.
        `params` are the action's own (a clone's `name`, a snapshot's `snapshot`)."""
        body = {"action": action, **params}
        answer = self.client.submit("POST", f"{self.path}/{name}/actions", wait, timeout, json=body)
        return cast(Operation, answer["operation"])


class Instances(Collection):
    """Instances: what a collection does, and what runs in one."""

    def exec(self, name: str, command: list[str]) -> Resource:
        """`{"exit_code", "output"}` of the command run in the instance (a container, or a VM with its agent)."""
        return cast(Resource, self.client.post(f"{self.path}/{name}/exec", json={"command": command}))

    def logs(self, name: str) -> str:
        return str(self.client.get(f"{self.path}/{name}/logs")["output"])


class Services(Collection):
    """Mesh services: what a collection does, and their policy replaced whole."""

    def set_policy(self, name: str, policy: Resource) -> Resource:
        return cast(Resource, self.client.put(f"{self.path}/{name}/policy", json=policy))
