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
from meshvisor.core.types import OperationStatus
from meshvisor.platform import dispatch, reconciler, worker_start
from meshvisor.platform.celery_app import (
    TASK_RECONCILE,
    TASK_RECONCILE_HOST,
    TASK_RUN_OPERATION,
    TASK_SYNC_SECURITY,
    make_celery,
    reconcile_host,
    sync_security_on,
)
from meshvisor.platform.hosts import liveness
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.instances import failover
from meshvisor.platform.networks import security_steps
from meshvisor.platform.reconciler import DATABASE_DOWN
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction

log = logging.getLogger(__name__)

DATABASE_BACKOFF_MAX_S = 10.0  # a task waiting for the database looks again at least this often


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
        holder = operations.holder(settings.host_name, str(self.request.id))  # its retries keep the task id
        try:
            status = reconciler.run_operation(
                runtime(), op_id, final_attempt=retries >= settings.task_retries, holder=holder, only_here=True
            )
        except reconciler.DatabaseUnreachable as exc:  # no limit: nothing can be done nor recorded meanwhile
            wait = min(DATABASE_BACKOFF_MAX_S, settings.retry_backoff_s * 2 ** min(retries, 8))
            raise retry(self, op_id, exc, wait, None) from exc
        except TransientError as exc:
            raise retry(self, op_id, exc, settings.retry_backoff_s * 2**retries, settings.task_retries) from exc
        if status is None:  # another delivery runs it, or its part is another host's: nothing to do here
            return "not run"
        if status is OperationStatus.RUNNING:  # handed to another host: its worker goes on (or `redispatch`)
            dispatch.send_on(app, settings, runtime().sessions, op_id)
            return status.value
        sync_security_on(app, settings, reconciler.hosts_to_refilter(runtime(), op_id))
        for name in reconciler.hosts_to_reconcile(runtime(), op_id):
            reconcile_host(app, settings, name, expires=settings.reconcile_interval_s * 2)
        return status.value

    def retry(self: Any, op_id: str, exc: Exception, countdown: float, max_retries: int | None) -> Exception:
        """Send the task again after `countdown` and record the broker's epoch it went to (see `dispatch`)."""
        epoch = dispatch.broker_epoch(settings)
        again: Exception = self.retry(exc=exc, countdown=countdown, max_retries=max_retries, throw=False)
        if epoch is not None:
            try:
                with transaction(runtime().sessions) as s:
                    operations.record_dispatch(s, op_id, epoch)
            except DATABASE_DOWN:  # unrecorded: at worst the operation is sent once more, and its claim holds
                pass
        return again

    def on_ready(**_: Any) -> None:
        """Register this host, resume what a dead worker left running, follow libvirt's events (`worker_start`);
        then look for operations the broker forgot, beat (`heartbeat`), and run the periodic pass's timer."""
        worker_start.start(runtime(), app, serves_platform_queue)
        threading.Thread(target=dispatch_watch, name="dispatch-watch", daemon=True).start()
        threading.Thread(target=heartbeat, name="heartbeat", daemon=True).start()
        if serves_platform_queue:
            threading.Thread(target=reconcile_timer, name="reconcile-timer", daemon=True).start()

    def dispatch_watch() -> None:
        """Send again what the broker forgot (`dispatch.redispatch`). A thread of its own, which goes on while the
        broker or the database is away and catches up once they are back."""
        while True:
            time.sleep(dispatch.CHECK_INTERVAL_S)
            try:
                dispatch.redispatch(app, settings, runtime().sessions, serves_platform_queue)
            except Exception as exc:  # the database is away: look again at the next tick
                log.warning("forgotten operations not looked for: %s", exc)

    def heartbeat() -> None:
        """This host's sign of life (`liveness`), beside the pool: a burst of operations keeps every pool thread
        busy and the periodic pass waiting in the queue, and the host is online all the same."""
        while True:
            time.sleep(liveness.heartbeat_s(settings))
            try:
                worker_start.heartbeat(runtime())
            except Exception as exc:  # the database is away: the next beat tells it
                log.warning("heartbeat not recorded: %s", exc)

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
        come back to a pile of them); `ha` instances of hosts gone for long restart elsewhere."""
        with transaction(runtime().sessions) as s:
            names = [h.name for h in hosts.all_hosts(s)]
        for name in names:
            reconcile_host(app, settings, name, expires=settings.reconcile_interval_s * 2)
        for op in failover.restart_elsewhere(runtime()):
            dispatch.dispatch(app, settings, runtime().sessions, op.id, op.resource_type, op.host)
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
