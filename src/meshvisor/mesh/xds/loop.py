"""A gRPC server on an asyncio loop of its own thread, driven from sync code: `start()` returns once `_serve`
has bound its ports (or raises what stopped it), `stop()` lets `_serve` end. The ADS server and the relay are
two such."""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod


class LoopThread(ABC):
    name = "meshvisor-loop"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"{self.name} did not start")
        if self._error is not None:
            raise self._error

    def stop(self, grace: float = 0.5) -> None:
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)
        if self._thread is not None:
            self._thread.join(grace + 5)
            self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # grpc.aio looks the loop up from its own callbacks
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._started.set()
        finally:
            leftover = asyncio.all_tasks(loop)
            for task in leftover:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            loop.close()

    async def _serving(self) -> None:
        """Called by `_serve` once its ports are bound: `start()` returns, and this waits for `stop()`."""
        self._stop_event = asyncio.Event()
        self._started.set()
        await self._stop_event.wait()

    @abstractmethod
    async def _serve(self) -> None:
        """Bind, `await self._serving()`, then shut the server down."""
