"""The only place that builds the Celery app. Each setting says why it is there.

Celery carries ids only: a task names an account, a lease token and job ids; messages, recipients' data
and tokens stay in Redis, so Flower and the broker never see a secret. Long waits never become Celery
ETAs: they live in the ``due`` sorted set and the dispatcher releases jobs when they are due.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import celery.apps.worker as celery_worker
import redis
from celery import Celery, platforms
from celery.signals import celeryd_after_setup, setup_logging, worker_process_init, worker_ready, worker_shutdown
from celery.worker import state as worker_state
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel

from worker.logs import setup_logging as configure_logging
from worker.runtime.connections import celery_broker, redis_client, reset_after_fork
from worker.runtime.launch import SUPERVISED_ENV
from worker.settings import Settings, get_settings
from worker.store.keys import Keys

log = logging.getLogger("broadcast.worker")

#: A worker announces its capacity this often; the dispatcher forgets it after three silent periods.
HEARTBEAT_S = 5.0


def create_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app from settings (no connection is opened here)."""
    settings = settings or get_settings()
    app = Celery("broadcast", broker=settings.redis_url, include=["worker.runtime.tasks"])
    app.conf.update(
        # the same Redis as the store, in the same form (plain, TLS or Sentinel), retried forever
        **celery_broker(settings),
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
        # Prefork only (the threads pool cannot stop a thread): a hard limit below the visibility timeout.
        # With threads, every vendor call has its deadline and a session its BROADCAST_BATCH_MAX_S instead.
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        # Task events for Flower.
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_default_queue=settings.celery_queue,
        task_routes={"broadcast.*": {"queue": settings.celery_queue}},
        worker_hijack_root_logger=False,
        # Prefork only (a user's choice): replace children now and then so slow leaks cannot grow forever.
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


class ConsumerWatch:
    """Notices a Celery consumer that stopped taking messages, so the worker can start itself again.

    Celery's Redis consumer can stop consuming for good after its broker connection drops several times
    within seconds, as around a Redis failover (celery/celery#8030, #10205): the worker looks alive, its
    queue fills, nothing runs. Stuck means, for ``stall_s`` (BROADCAST_CONSUMER_STALL_S) without a break: messages waiting in the
    queue, a free slot in the pool, and not one message taken. A worker whose slots are all busy, or whose
    Redis is away, is never stuck by this measure (a missing observation starts the count again)."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._since: float | None = None
        self._taken = -1

    def observe(self, now: float, waiting: int | None, taken: int, busy: int, capacity: int) -> bool:
        """One look (``waiting`` None: the queue could not be read); True once the consumer is stuck."""
        if waiting is None or waiting == 0 or busy >= capacity or taken != self._taken:
            self._since = None
            self._taken = taken
            return False
        if self._since is None:
            self._since = now
        return now - self._since >= self.stall_s


def _waiting_messages(client: redis.Redis, queue: str) -> int:
    """Messages in the Celery queue, every priority's list (kombu's Redis transport keeps one per step)."""
    pipe = client.pipeline(transaction=False)
    for step in PRIORITY_STEPS:  # kombu's own naming (Channel._q_for_pri): step 0 is the queue's name itself
        pipe.llen(f"{queue}{RedisChannel.sep}{step}" if step else queue)
    return int(sum(pipe.execute()))


def _start_again(reason: str) -> None:
    """Replace this process with a fresh run of the same command: in-flight sessions end as after a
    SIGKILL (their leases lapse and the dispatcher recovers them), which the send path is built to survive;
    under ``broadcast worker``'s supervisor the process keeps its pid, so its siblings keep running."""
    log.critical("%s: starting this worker again", reason)
    logging.shutdown()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606 (this very command, no shell)


class CapacityHeartbeat:
    """Tells the dispatcher how many sessions this worker can hold at once (its pool's concurrency).

    The dispatcher hands out at most that many leases across the live workers, so a claimed account is
    picked up at once instead of waiting in the broker while its lease runs down."""

    def __init__(self, hostname: str, capacity: int, watch: ConsumerWatch | None = None) -> None:
        self.hostname = hostname
        self.capacity = capacity
        self.stop = threading.Event()
        #: the threads pool only: a prefork worker started again would leave its children behind
        self.watch = watch

    def beat(self) -> None:
        settings = get_settings()
        keys = Keys(settings.key_prefix)
        client = redis_client(settings.redis_url, settings)
        pipe = client.pipeline(transaction=False)
        pipe.hset(keys.worker_cap, self.hostname, self.capacity)
        pipe.zadd(keys.workers, {self.hostname: time.time() + 3 * HEARTBEAT_S})
        pipe.execute()

    def check_consumer(self) -> None:
        """Start the worker again when its consumer is stuck (`ConsumerWatch`)."""
        if self.watch is None:
            return
        settings = get_settings()
        waiting: int | None = None
        with contextlib.suppress(redis.RedisError):
            waiting = _waiting_messages(redis_client(settings.redis_url, settings), settings.celery_queue)
        taken = worker_state.all_total_count[0]
        busy = len(worker_state.reserved_requests)
        if self.watch.observe(time.monotonic(), waiting, taken, busy, self.capacity):
            _start_again(
                f"the consumer took no message for {self.watch.stall_s:.0f} s while {waiting} waited"
                f" and {self.capacity - busy} of {self.capacity} slots were free"
            )

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(redis.RedisError):  # Redis down: the next beat tries again
                self.beat()
            self.check_consumer()
            self.stop.wait(HEARTBEAT_S)

    def leave(self) -> None:
        self.stop.set()
        settings = get_settings()
        keys = Keys(settings.key_prefix)
        with contextlib.suppress(redis.RedisError):  # it expires by itself
            redis_client(settings.redis_url, settings).zrem(keys.workers, self.hostname)


_heartbeat: CapacityHeartbeat | None = None


@celeryd_after_setup.connect  # type: ignore[untyped-decorator]
def _announce_capacity(sender: str, instance: Any, **_: Any) -> None:
    """Start the capacity heartbeat in the worker's main process."""
    global _heartbeat
    threads = "thread" in str(getattr(instance, "pool_cls", "")).lower()
    stall_s = get_settings().consumer_stall_s
    watch = ConsumerWatch(stall_s) if threads and stall_s > 0 else None
    _heartbeat = CapacityHeartbeat(str(sender), int(instance.concurrency or 1), watch)
    threading.Thread(target=_heartbeat.run, name="broadcast-capacity", daemon=True).start()


def _hang_up_stops(worker: Any, sig: str = "SIGHUP") -> None:
    """In a process ``broadcast worker`` supervises, what Celery installs for SIGHUP instead of its restart
    in place: a warm shutdown, as SIGTERM. The supervisor is stopping or gone by then (a closed terminal, a
    hang-up sent to the group), and a worker restarted under nobody would run on, unseen, pinned to its
    core (attack round 7)."""
    platforms.signals[sig] = lambda *_: os.kill(os.getpid(), signal.SIGTERM)


if os.environ.get(SUPERVISED_ENV) == "1":
    # Celery looks this name up when it installs its handlers (celery.apps.worker.install_platform_tweaks)
    celery_worker.install_worker_restart_handler = _hang_up_stops


@worker_ready.connect  # type: ignore[untyped-decorator]
def _warm_runner(**_: Any) -> None:
    """Build the session runner (its scripts composed and loaded into Redis, its clients) while the worker
    is idle, not in the first campaign's first session: it costs tens of milliseconds of CPU per process,
    which under a release of thousands of sessions is paid with every other thread waiting. Redis away:
    the first session builds it, as before."""
    threading.Thread(target=_warm, name="broadcast-warm", daemon=True).start()


def _warm() -> None:
    from worker.runtime.tasks import runner  # the tasks module imports this one

    with contextlib.suppress(Exception):
        runner().ledger.load_scripts()


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _withdraw_capacity(**_: Any) -> None:
    """A worker that stops takes its capacity away at once."""
    if _heartbeat is not None:
        _heartbeat.leave()
