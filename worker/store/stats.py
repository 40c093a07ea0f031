"""Counters for Prometheus, kept in Redis so every worker process feeds the same numbers.

Sends by account/vendor/kind/outcome, failures by error class and decision, and a vendor latency histogram
(fixed buckets); ``scheduler.api.metrics`` renders them. A worker process adds them up in memory and writes the
sums every few seconds (one pipelined round trip, an HINCRBY per counter whatever the number of sends): counting each
attempt in Redis on its own cost more Redis work than the send's own bookkeeping. A killed process loses
at most its last few seconds of counts — metrics, never the books (the ledger records every send itself).
"""

from __future__ import annotations

import collections
import threading
import time

import redis

from worker.store.keys import Keys

LATENCY_BUCKETS_MS = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
#: How often a process writes its sums (Prometheus scrapes every 15-60 s).
FLUSH_INTERVAL_S = 5.0


class AttemptCounters:
    """One process's attempt counters, flushed to Redis by a background thread."""

    def __init__(self, client: redis.Redis, keys: Keys, *, interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.redis = client
        self.keys = keys
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._latency_ms: dict[str, float] = collections.defaultdict(float)
        self._flusher: threading.Thread | None = None

    def record(
        self,
        *,
        account: str,
        vendor: str,
        kind: str,
        outcome: str,
        latency_ms: float,
        error_class: str | None = None,
    ) -> None:
        """Count one attempt (never raises: metrics must not break sending)."""
        bucket = next((str(b) for b in LATENCY_BUCKETS_MS if latency_ms <= b), "inf")
        with self._lock:
            self._counts[(self.keys.stat("sends"), f"{account}|{vendor}|{kind}|{outcome}")] += 1
            if error_class:
                self._counts[(self.keys.stat("errors"), f"{error_class}|{outcome}")] += 1
            self._counts[(self.keys.stat("latency"), f"{vendor}|{bucket}")] += 1
            self._latency_ms[vendor] += latency_ms
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._run, name="broadcast-stats", daemon=True)
                self._flusher.start()

    def flush(self) -> None:
        """Write the sums counted since the last flush."""
        with self._lock:
            counts, self._counts = self._counts, collections.Counter()
            latency, self._latency_ms = self._latency_ms, collections.defaultdict(float)
        if not counts and not latency:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for (key, field), n in counts.items():
                pipe.hincrby(key, field, n)
            for vendor, total in latency.items():
                pipe.hincrbyfloat(self.keys.stat("latency"), f"{vendor}|sum_ms", total)
            pipe.execute()
        except redis.RedisError:
            with self._lock:  # keep them for the next flush
                self._counts.update(counts)
                for vendor, total in latency.items():
                    self._latency_ms[vendor] += total

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            self.flush()


#: The outcomes ``finish_*.lua`` counts per minute (``minutes:{hour}``), by their one-letter field suffix.
MINUTE_OUTCOMES = {"s": "sent", "r": "retried", "x": "dead"}


def outcome_minutes(
    client: redis.Redis, keys: Keys, since: float, until: float, campaign: str | None = None
) -> list[dict[str, float]]:
    """Sends, retries and dead jobs per minute from ``since`` to ``until`` (epoch s), every minute listed
    (zeros included); one campaign's, or the whole fleet's when ``campaign`` is None. One pipelined read
    of one hash per hour."""
    first_hour, last_hour = int(since // 3600), int(until // 3600)
    with client.pipeline(transaction=False) as pipe:
        for hour in range(first_hour, last_hour + 1):
            pipe.hgetall(keys.minutes(hour))
        hours: list[dict[str, str]] = pipe.execute()
    first_minute, last_minute = int(since // 60), int(until // 60)
    series = {m: dict.fromkeys(MINUTE_OUTCOMES.values(), 0.0) for m in range(first_minute, last_minute + 1)}
    for fields in hours:
        for field, value in fields.items():
            owner, minute, what = field.rsplit("|", 2)
            if campaign is not None and owner != campaign:
                continue
            row = series.get(int(minute))
            if row is not None and what in MINUTE_OUTCOMES:
                row[MINUTE_OUTCOMES[what]] += float(value)
    return [{"at": m * 60.0, **row} for m, row in series.items()]
