"""The only place that builds the Celery app. Each setting says why it is there.

Celery carries ids only: a task names an account, a lease token and job ids; messages, recipients' data
and tokens stay in Redis, so Flower and the broker never see a secret. Long waits never become Celery
ETAs: they live in the ``due`` sorted set and the dispatcher releases jobs when they are due.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_process_init

from worker.connections import reset_after_fork
from worker.logs import setup_logging as configure_logging
from worker.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app from settings (no connection is opened here)."""
    settings = settings or get_settings()
    app = Celery("broadcast", broker=settings.redis_url, include=["worker.tasks"])
    app.conf.update(
        # JSON only: no pickle, nothing executable in the broker.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        # Results live in our ledger; a result backend would duplicate them.
        task_ignore_result=True,
        # Ack after the task ran: a worker killed mid-task leaves its message to be redelivered...
        task_acks_late=True,
        # ...including when the child process is SIGKILLed (the batch's lease token makes reruns harmless).
        task_reject_on_worker_lost=True,
        # One message at a time per process: a batch already carries several jobs.
        worker_prefetch_multiplier=1,
        # Hard limit below the visibility timeout, so a stuck task dies before the broker redelivers it.
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        # Task events for Flower.
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_default_queue=settings.celery_queue,
        task_routes={"broadcast.*": {"queue": settings.celery_queue}},
        worker_hijack_root_logger=False,
        # Replace children now and then so slow leaks in vendor libraries cannot grow forever.
        worker_max_tasks_per_child=10_000,
        enable_utc=True,
    )
    return app


app = create_app()


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_clients(**_: Any) -> None:
    """Each forked child opens its own Redis and HTTP connections."""
    reset_after_fork()


@setup_logging.connect  # type: ignore[untyped-decorator]
def _our_logging(**_: Any) -> None:
    """Use our formatter and secret redaction instead of Celery's default logging."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
