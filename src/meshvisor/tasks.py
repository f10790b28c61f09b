"""Celery tasks. Thin: open the runtime once per worker process, call the reconciler."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from meshvisor.core.errors import TransientError
from meshvisor.platform import reconciler, vm_events
from meshvisor.platform.celery_app import TASK_RECONCILE, TASK_RUN_OPERATION, make_celery
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings

log = logging.getLogger(__name__)


def worker_app(settings: Settings) -> Celery:
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
            return reconciler.run_operation(runtime(), op_id, final_attempt=retries >= settings.task_retries).value
        except TransientError as exc:
            raise self.retry(exc=exc, countdown=settings.retry_backoff_s * 2**retries) from exc

    def follow_vm_events(**_: Any) -> None:
        vm_events.start(runtime())

    worker_ready.connect(follow_vm_events, weak=False)

    @app.task(name=TASK_RECONCILE)
    def reconcile() -> dict[str, int]:
        try:
            return reconciler.reconcile(runtime())
        except TransientError as exc:
            log.warning("reconcile skipped: %s", exc.message)
            return {}

    return app
