"""Celery tasks. Thin: open the runtime once per worker process, call the reconciler; at start-up, the
platform's `worker_start`, then the periodic pass's timer."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from meshvisor.core.errors import TransientError
from meshvisor.platform import reconciler, worker_start
from meshvisor.platform.celery_app import (
    TASK_RECONCILE,
    TASK_RECONCILE_HOST,
    TASK_RUN_OPERATION,
    TASK_SYNC_SECURITY,
    make_celery,
    reconcile_host,
    sync_security_on,
)
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.networks import security_steps
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.db import transaction

log = logging.getLogger(__name__)


def worker_app(settings: Settings, serves_platform_queue: bool = True) -> Celery:
    app = make_celery(settings)
    runtimes: list[Runtime] = []

    def runtime() -> Runtime:
        if not runtimes:
            runtimes.append(Runtime(settings))
        return runtimes[0]

    @app.task(name=TASK_RUN_OPERATION, bind=True, acks_late=True, max_retries=settings.task_retries)
    def run_operation(self: Any, op_id: str) -> str:
        retries = int(self.request.retries or 0)
        try:
            status = reconciler.run_operation(runtime(), op_id, final_attempt=retries >= settings.task_retries)
        except TransientError as exc:
            raise self.retry(exc=exc, countdown=settings.retry_backoff_s * 2**retries) from exc
        sync_security_on(app, settings, reconciler.hosts_to_refilter(runtime(), op_id))
        return status.value

    def on_ready(**_: Any) -> None:
        """Register this host, resume what a dead worker left running, follow libvirt's events (`worker_start`)."""
        worker_start.start(runtime(), app, serves_platform_queue)
        if serves_platform_queue:
            threading.Thread(target=reconcile_timer, name="reconcile-timer", daemon=True).start()

    def reconcile_timer() -> None:
        """The periodic pass, started by the worker that serves the platform's queue. A thread, not Celery
        beat: beat runs as a child process, which outlives a worker that is killed and would go on alone."""
        while True:
            time.sleep(settings.reconcile_interval_s)
            try:
                app.send_task(TASK_RECONCILE, queue=settings.queue, expires=settings.reconcile_interval_s * 2)
            except Exception as exc:  # the broker is away: try again at the next tick
                log.warning("periodic reconcile not sent: %s", exc)

    worker_ready.connect(on_ready, weak=False)

    @app.task(name=TASK_RECONCILE)
    def reconcile() -> int:
        """The periodic pass, fanned out: every host reconciles itself (expiring, so an offline host does not
        come back to a pile of them)."""
        with transaction(runtime().sessions) as s:
            names = [h.name for h in hosts.all_hosts(s)]
        for name in names:
            reconcile_host(app, settings, name, expires=settings.reconcile_interval_s * 2)
        return len(names)

    @app.task(name=TASK_SYNC_SECURITY)
    def sync_security_here() -> None:
        security_steps.sync_security(runtime())

    @app.task(name=TASK_RECONCILE_HOST)
    def reconcile_here() -> dict[str, int]:
        try:
            return reconciler.reconcile(runtime())
        except TransientError as exc:
            log.warning("reconcile skipped: %s", exc.message)
            return {}

    return app
