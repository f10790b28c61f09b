"""The Celery application and the one place that decides where tasks go."""

from __future__ import annotations

from celery import Celery

from . import broker_transport
from .settings import Settings
from .state.operation_kinds import ResourceType

TASK_RUN_OPERATION = "meshvisor.run_operation"
TASK_RECONCILE = "meshvisor.reconcile"  # periodic (see tasks.reconcile_timer), fans out to every host
TASK_RECONCILE_HOST = "meshvisor.reconcile_host"
TASK_SYNC_SECURITY = "meshvisor.sync_security"
SYNC_EXPIRES_S = 60.0  # a host that is away rebuilds its filter at its next reconcile pass anyway


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
        broker_connection_retry=True,
        broker_connection_max_retries=None,  # a worker waits for its broker however long it is away
    )
    if settings.broker_url.startswith("redis://"):
        app.conf.broker_transport = broker_transport.NAME
    return app


def operation_queue(settings: Settings, resource_type: str, host: str) -> str:
    """The operations of a resource that lives on one host (`ResourceType.host_bound`: instances, volumes) run on
    that host's queue; the others (networks, images, stacks) on the platform's queue."""
    return settings.host_queue(host) if ResourceType(resource_type).host_bound else settings.queue


def enqueue_operation(app: Celery, settings: Settings, op_id: str, resource_type: str, host: str) -> None:
    app.send_task(TASK_RUN_OPERATION, args=[op_id], queue=operation_queue(settings, resource_type, host))


def reconcile_host(app: Celery, settings: Settings, host: str, expires: float | None = None) -> None:
    """Ask one host to converge (its networks, links and instances)."""
    app.send_task(TASK_RECONCILE_HOST, queue=settings.host_queue(host), expires=expires)


def sync_security_on(app: Celery, settings: Settings, hosts: list[str]) -> None:
    """Have these hosts rebuild their security group filter from the database now."""
    for host in hosts:
        app.send_task(TASK_SYNC_SECURITY, queue=settings.host_queue(host), expires=SYNC_EXPIRES_S)
