"""Kombu's Redis transport, adjusted for a threads-pool worker that runs hundreds of tasks at once.

Two changes, both in the channel:

* **No restore of unacknowledged messages when a connection closes.** With the threads pool, tasks
  acknowledge from their own threads while the consumer's thread tears a lost connection down; kombu then
  tries to restore the unacknowledged messages through the transport the teardown has just closed, and
  the worker dies (``'NoneType' object has no attribute 'hostname'``) instead of reconnecting — seen when
  Redis restarts (``tests/e2e/test_chaos.py``). Nothing is lost by skipping that restore: the messages stay in
  Redis's unacked index and return after the visibility timeout, as they do after a SIGKILL, and the jobs
  they name are back in their queues long before (their session's lease expired and the dispatcher
  recovered them), so a returning message finds its lease gone and does nothing.
* **A closed channel says so.** An acknowledgement that arrives after its channel's connection was torn
  down raises a Redis connection error (which kombu logs and survives), not an AttributeError (which
  stops the worker).
* **One Redis client per channel instead of one per operation.** kombu builds a new ``redis.Redis`` for
  every ack and every event it publishes (``conn_or_acquire``); building one costs more than the command
  it sends, and with task events on (Flower) that was the largest single cost of the worker's main loop
  (profiled with py-spy under ``bench.envelope``). A ``redis.Redis`` on a connection pool is safe to
  share between threads, so the channel keeps one per pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class QoS(kombu_redis.QoS):
    """Leave unacknowledged messages to the visibility timeout when a channel closes."""

    restore_at_shutdown = False


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared: tuple[Any, Any] | None = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        if getattr(self.connection, "client", None) is None:
            # the transport was closed under us (a lost connection being torn down while a pool thread
            # acknowledges): a connection error, which kombu logs, instead of an AttributeError that kills
            # the worker. The unacknowledged message comes back after the visibility timeout and finds its
            # lease gone.
            raise redis.exceptions.ConnectionError("the broker channel was closed")
        pool = self.pool
        shared = self._shared
        if shared is None or shared[0] is not pool:  # a new pool after a reconnect gets a new client
            shared = (pool, self._create_client())  # type: ignore[no-untyped-call]
            self._shared = shared
        yield shared[1]


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """The same channel, connected through kombu's Sentinel support (the primary named by
    ``master_name``, asked again on every reconnection)."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
