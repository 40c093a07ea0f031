"""Prometheus metrics at ``/metrics``, read from Redis at scrape time.

Workers run in other processes (and on other machines), so their counters live in Redis hashes that
the Lua scripts and the worker update; the API's collector turns those and the live queue state into
Prometheus families on each scrape. One consistent story: Redis is the source, any API replica serves it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from worker.settings import Settings
from worker.store.keys import Keys
from worker.store.stats import LATENCY_BUCKETS_MS


class RedisCollector(Collector):
    """Builds every family from Redis on each collect()."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        k = self.keys
        sends = CounterMetricFamily(
            "broadcast_sends",
            "Send attempts by account, vendor, kind and outcome",
            labels=["account", "vendor", "kind", "outcome"],
        )
        for field, value in cast(dict[str, str], self.redis.hgetall(k.stat("sends"))).items():
            sends.add_metric(field.split("|", 3), float(value))
        yield sends
        errors = CounterMetricFamily(
            "broadcast_vendor_errors", "Failed attempts by error class", labels=["error_class", "action"]
        )
        for field, value in cast(dict[str, str], self.redis.hgetall(k.stat("errors"))).items():
            errors.add_metric(field.split("|", 1), float(value))
        yield errors
        latency = HistogramMetricFamily(
            "broadcast_vendor_latency_seconds", "Vendor call latency by vendor", labels=["vendor"]
        )
        raw = cast(dict[str, str], self.redis.hgetall(k.stat("latency")))
        vendors = {f.split("|", 1)[0] for f in raw}
        for vendor in sorted(vendors):
            cumulative = 0.0
            buckets = []
            for bound in LATENCY_BUCKETS_MS:
                cumulative += float(raw.get(f"{vendor}|{bound}", 0))
                buckets.append((str(bound / 1000), cumulative))
            cumulative += float(raw.get(f"{vendor}|inf", 0))
            buckets.append(("+Inf", cumulative))
            latency.add_metric([vendor], buckets, float(raw.get(f"{vendor}|sum_ms", 0)) / 1000)
        yield latency
        depth = GaugeMetricFamily("broadcast_ready_jobs", "Jobs ready to send, by account", labels=["account"])
        waiting = GaugeMetricFamily("broadcast_accounts", "Accounts by status", labels=["status"])
        statuses = {"active": 0, "paused": 0, "down": 0}
        for account in sorted(cast(set[str], self.redis.smembers(k.accounts))):
            pipe = self.redis.pipeline(transaction=False)
            pipe.llen(k.queue(account))
            pipe.llen(k.queue_high(account))
            pipe.zrange(k.sources(account), 0, -1)
            pipe.hget(k.account(account), "status")
            single, high, sources, status = pipe.execute()
            total = int(single) + int(high)
            for name in sources:
                if name != "s":
                    total += int(self.redis.llen(k.campaign_queue(name[2:], account)))
            depth.add_metric([account], total)
            statuses[status or "active"] = statuses.get(status or "active", 0) + 1
        for status, count in statuses.items():
            waiting.add_metric([status], count)
        yield depth
        yield waiting
        callbacks = CounterMetricFamily(
            "broadcast_callbacks",
            "Vendor callbacks by what they were (received, opted_out, contact_removed, offline, duplicate, unknown, "
            "malformed, …)",
            labels=["kind"],
        )
        for field, value in sorted(cast(dict[str, str], self.redis.hgetall(k.stat("callbacks"))).items()):
            callbacks.add_metric([field], float(value))
        yield callbacks
        yield GaugeMetricFamily(
            "broadcast_due_jobs",
            "Scheduled and backing-off jobs waiting for their time",
            value=float(self.redis.zcard(k.due)),
        )
        yield GaugeMetricFamily(
            "broadcast_dead_letters", "Jobs in the dead-letter store", value=float(self.redis.zcard(k.dlq))
        )
        yield GaugeMetricFamily(
            "broadcast_sends_in_flight", "Accounts with a batch in flight", value=float(self.redis.scard(k.leased))
        )


def render(client: redis.Redis, settings: Settings) -> tuple[bytes, str]:
    """The exposition text for one scrape."""
    registry = CollectorRegistry()
    registry.register(RedisCollector(client, settings.key_prefix))
    return generate_latest(registry), CONTENT_TYPE_LATEST
