"""The API's admission of writes: at most `limit` writes run at once, the others wait their turn (or get 503 with
Retry-After after `wait_s`), and reads never wait."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from meshvisor.api.admission import WriteAdmission


def app_with(limit: int, wait_s: float) -> tuple[WriteAdmission, asyncio.Event, list[str]]:
    release, running = asyncio.Event(), []

    async def write(request: Request) -> JSONResponse:
        running.append(request.url.path)
        await release.wait()
        return JSONResponse({"wrote": request.url.path})

    async def read(_: Request) -> JSONResponse:
        return JSONResponse({"running": len(running)})

    routes = [
        Route("/w/{n}", write, methods=["POST"]),
        Route("/r", read, methods=["GET"]),
        Route("/i/exec", read, methods=["POST"]),  # a command in an instance: no database write
    ]
    return WriteAdmission(Starlette(routes=routes), limit=limit, wait_s=wait_s), release, running


def test_writes_wait_their_turn_reads_do_not_and_a_long_wait_is_a_503() -> None:
    async def scenario() -> None:
        admission, release, running = app_with(limit=2, wait_s=0.3)
        transport = httpx.ASGITransport(app=admission)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            writes = [asyncio.create_task(client.post(f"/w/{n}")) for n in range(3)]
            while len(running) < 2:
                await asyncio.sleep(0.01)
            read = await client.get("/r")  # answered while both slots are taken
            assert read.status_code == 200 and read.json() == {"running": 2}
            command = await client.post("/i/exec")  # not a write: it does not wait for a slot either
            assert command.status_code == 200 and command.json() == {"running": 2}
            ended, waiting = await asyncio.wait(writes, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            [refused] = [task.result() for task in ended]  # the one without a slot, after 0.3 s
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "busy" and len(running) == 2
            release.set()
            assert [(await w).status_code for w in waiting] == [200, 200]
            again = await client.post("/w/4")  # a slot is free again
            assert again.status_code == 200 and len(running) == 3

    asyncio.run(scenario())
