"""Kombu's Redis transport, without restoring unacknowledged messages when a connection closes.

With the threads pool, tasks acknowledge from their own threads while the consumer's thread tears a lost
connection down; kombu then tries to restore the unacknowledged messages through the transport the
teardown has just closed, and the worker dies (``'NoneType' object has no attribute 'hostname'``) instead
of reconnecting — seen when Redis restarts (``tests/test_chaos.py``). Nothing is lost by skipping that
restore: the messages stay in Redis's unacked index and return after the visibility timeout, as they do
after a SIGKILL, and the jobs they name are already back in their queues by then (their session's lease
expired and the dispatcher recovered them), so a returning message finds its lease gone and does nothing.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis


class QoS(kombu_redis.QoS):
    """Leave unacknowledged messages to the visibility timeout when a channel closes."""

    restore_at_shutdown = False


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
