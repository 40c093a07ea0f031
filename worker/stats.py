"""Counters for Prometheus, kept in Redis so every worker process feeds the same numbers.

One pipelined HINCRBY group per attempt: sends by account/vendor/kind/outcome, failures by error class
and decision, and a vendor latency histogram (fixed buckets). ``scheduler.metrics`` renders them.
"""

from __future__ import annotations

import redis

from worker.keys import Keys

LATENCY_BUCKETS_MS = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


def record_attempt(
    client: redis.Redis,
    keys: Keys,
    *,
    account: str,
    vendor: str,
    kind: str,
    outcome: str,
    latency_ms: float,
    error_class: str | None = None,
) -> None:
    """Count one attempt (never raises: metrics must not break sending)."""
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hincrby(keys.stat("sends"), f"{account}|{vendor}|{kind}|{outcome}", 1)
        if error_class:
            pipe.hincrby(keys.stat("errors"), f"{error_class}|{outcome}", 1)
        bucket = next((str(b) for b in LATENCY_BUCKETS_MS if latency_ms <= b), "inf")
        pipe.hincrby(keys.stat("latency"), f"{vendor}|{bucket}", 1)
        pipe.hincrbyfloat(keys.stat("latency"), f"{vendor}|sum_ms", latency_ms)
        pipe.execute()
    except redis.RedisError:
        pass
