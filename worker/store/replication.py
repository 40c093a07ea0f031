"""Replica acknowledgements: a job's ``sending`` mark and its outcome are on a replica before they count.

Redis replicates asynchronously: a write the primary acknowledged can be missing on the replica that a
failover promotes. For a ``sending`` mark that means a job that went to the vendor comes back ``queued``
on the new primary and is sent again. So BEGIN and FINISH are followed, on the same connection, by
``WAIT n timeout`` (the replicas that have the write), and by ``WAITAOF`` where the server has it (Redis
7.2+; the primary's own fsync when its AOF is on). Not acknowledged in time: the caller does not call the
vendor (BEGIN), or stops the session and leaves the outcome to recovery (FINISH). redis.io calls WAIT best
effort: a write acknowledged by a replica survives a failover only if that replica is the one promoted and
the Sentinels elect it; docs/deployment.md says what is promised.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

#: The first Redis version with WAITAOF.
WAITAOF_SINCE = (7, 2)
#: How often the automatic replica count (``BROADCAST_REPLICA_ACKS`` unset) re-reads the primary's replicas.
AUTO_REFRESH_S = 5.0


@dataclass(frozen=True, slots=True)
class Acks:
    """What one write must wait for."""

    replicas: int
    timeout_ms: int
    #: ``WAITAOF <local> 0 <timeout>``: None without WAITAOF, else 1 when the primary's AOF is on
    aof_local: int | None

    @property
    def none(self) -> bool:
        """Nothing to wait for: no replica to acknowledge, no AOF to sync."""
        return self.replicas <= 0 and not self.aof_local


class ReplicaAcks:
    """How many replicas must acknowledge BEGIN and FINISH (fixed, or automatic: the most replicas the
    primary has shown in sync since this process started), and whether WAITAOF is there; read from the
    server, cached briefly."""

    def __init__(self, client: redis.Redis, wanted: int | None, timeout_s: float) -> None:
        self.client = client
        self.wanted = wanted
        self.timeout_ms = max(1, int(timeout_s * 1000))
        #: what was read and when (``time.monotonic()``), one tuple replaced whole: every BEGIN and FINISH
        #: reads it, from hundreds of threads, without taking the lock
        self._known: tuple[Acks, float] | None = None

    def current(self) -> Acks:
        """The acknowledgement a write needs now (no server round trip most of the time)."""
        known = self._known
        if known is not None and time.monotonic() - known[1] < AUTO_REFRESH_S:
            return known[0]
        try:
            acks = self._read()
        except redis.RedisError:
            # the server is away: keep what we knew (the write itself will fail and be retried). Knowing
            # nothing yet, the answer is not kept: the next write asks again, rather than going on for the
            # refresh interval without the replicas' wait a server back meanwhile may need
            if self._known is None:
                return Acks(self.wanted or 0, self.timeout_ms, None)
            acks = self._known[0]
        self._known = (acks, time.monotonic())
        return acks

    def _read(self) -> Acks:
        pipe = self.client.pipeline(transaction=False)
        pipe.info("replication")
        pipe.info("persistence")
        pipe.info("server")
        replication, persistence, server = pipe.execute()
        replicas = self.wanted
        if replicas is None:
            # automatic: every replica seen in sync since this process started, for good. Were it to follow
            # the count, a hung primary that comes back (its replica was promoted meanwhile) would take sends
            # without a wait, writes it then loses when it is demoted. Fewer than all would let a replica
            # that is not the one promoted acknowledge a write the new primary never gets (measured:
            # bench/failover.py --replicas 2, docs/benchmarks.md).
            replicas = max(online_replicas(replication), self._known[0].replicas if self._known else 0)
        version = tuple(int(part) for part in str(server.get("redis_version", "0")).split(".")[:2] if part.isdigit())
        has_waitaof = version >= WAITAOF_SINCE
        aof_local = (1 if int(persistence.get("aof_enabled", 0)) else 0) if has_waitaof else None
        return Acks(replicas, self.timeout_ms, aof_local)


def online_replicas(replication: dict[str, Any]) -> int:
    """Replicas ``INFO replication`` shows streaming from the primary (not still in their first sync)."""
    return sum(
        1 for key, value in replication.items() if key.startswith("slave") and isinstance(value, dict)
        and value.get("state") == "online"
    )  # fmt: skip


def confirmed(acks: Acks, replies: list[Any]) -> bool:
    """Whether the replies of the WAIT (when ``acks.replicas``) and WAITAOF (when ``acks.aof_local``) that
    followed a write, in that order, say it is where ``acks`` wants it."""
    rest = list(replies)
    if acks.replicas > 0 and int(rest.pop(0)) < acks.replicas:
        return False
    return not acks.aof_local or int(rest.pop(0)[0]) >= acks.aof_local
