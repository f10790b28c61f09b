"""The Celery application and the one place that decides where tasks go."""

from __future__ import annotations

from celery import Celery

from .settings import Settings

TASK_RUN_OPERATION = "meshvisor.run_operation"
TASK_RECONCILE = "meshvisor.reconcile"


def make_celery(settings: Settings) -> Celery:
    app = Celery("meshvisor", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
        worker_hijack_root_logger=False,
        beat_schedule={
            "reconcile": {"task": TASK_RECONCILE, "schedule": settings.reconcile_interval_s},
        },
    )
    return app


def enqueue_operation(app: Celery, settings: Settings, op_id: str) -> None:
    app.send_task(TASK_RUN_OPERATION, args=[op_id], queue=settings.queue)
