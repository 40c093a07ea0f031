"""The dispatcher's pacing verdict: which accounts may start a send now, and when to look again.

Reads every ready account's limits and pacing state from Redis in two pipelined round trips per tick,
applies :func:`worker.ratelimit.allowance` (and the vendor-wide rate), and returns candidates for the
CLAIM script plus the earliest moment something becomes sendable, so the dispatcher sleeps exactly
until then. The clock is Redis ``TIME`` — the same clock RELEASE stamps send ends with — so workers and
dispatchers on different machines agree; ``BROADCAST_CLOCK_OFFSET_S`` shifts only local-time rules
(daily cap days, quiet hours) for tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis

from worker.accounts import Limits
from worker.keys import Keys
from worker.ratelimit import PaceState, allowance, local_day, vendor_allowance
from worker.settings import Settings


@dataclass(frozen=True, slots=True)
class Verdict:
    """Candidates for CLAIM (account, batch, private_at, group_at) and when to re-check the others."""

    candidates: list[tuple[str, int, float, float]]
    next_check: float | None
    now: float
    blocked: dict[str, str]


def redis_now(client: redis.Redis) -> float:
    """Redis server time, the pacing clock shared by every process."""
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


class Pacer:
    """Computes pacing verdicts for the dispatcher."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)

    def verdict(self) -> Verdict:
        now = redis_now(self.redis)
        local_now = now + self.settings.clock_offset_s
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.smembers(k.ready)
        pipe.smembers(k.leased)
        pipe.hgetall(k.vendor_limits)
        ready, leased, vendor_limits = pipe.execute()
        accounts = sorted(set(ready) - set(leased))
        if not accounts:
            return Verdict([], None, now, {})
        pipe = self.redis.pipeline(transaction=False)
        for account in accounts:
            pipe.hmget(k.account(account), "limits", "vendor", "status")
            pipe.hgetall(k.pace(account))
            pipe.zrangebyscore(k.pace_window(account), now - 61, "+inf")
        rows = pipe.execute()
        limits_by: dict[str, Limits] = {}
        info: dict[str, tuple[str, dict[str, str], list[str]]] = {}
        pipe = self.redis.pipeline(transaction=False)
        for i, account in enumerate(accounts):
            (limits_raw, vendor, status), pace, window = rows[3 * i], rows[3 * i + 1], rows[3 * i + 2]
            if status in ("paused", "down"):
                continue
            limits = Limits.model_validate_json(limits_raw) if limits_raw else Limits()
            limits_by[account] = limits
            info[account] = (vendor or "", pace, window)
            pipe.get(k.pace_day(account, local_day(local_now, limits.timezone)))
        days = dict(zip(limits_by, pipe.execute(), strict=True))
        vendor_windows = self._vendor_windows(vendor_limits, now)
        if vendor_windows and leased:
            # a send in flight counts against its vendor's rate until RELEASE records it
            pipe = self.redis.pipeline(transaction=False)
            for account in leased:
                pipe.hget(k.account(account), "vendor")
            for vendor in pipe.execute():
                if vendor in vendor_windows:
                    vendor_windows[vendor][1].append(now)
        candidates: list[tuple[str, int, float, float]] = []
        blocked: dict[str, str] = {}
        next_check: float | None = None
        for account, limits in limits_by.items():
            vendor, pace, window = info[account]
            state = PaceState(
                last_end=float(pace.get("last_end", 0)),
                jitter_fraction=float(pace.get("r", 0)),
                window=tuple(sorted(float(m.split(":", 1)[0]) for m in window)),
                sent_today=int(days.get(account) or 0),
                slowdown=float(pace.get("slow", 1)),
                slowdown_at=float(pace.get("slow_at", 0)),
            )
            verdict = allowance(
                limits, state, now, unpaced_batch=self.settings.batch_size, clock_offset_s=self.settings.clock_offset_s
            )
            private_at, group_at, batch = verdict.private_at, verdict.group_at, verdict.batch
            if vendor in vendor_windows:
                per_second, vwindow = vendor_windows[vendor]
                vendor_at = vendor_allowance(per_second, tuple(vwindow), now)
                private_at, group_at = max(private_at, vendor_at), max(group_at, vendor_at)
                remaining = max(1, math.floor(per_second)) - sum(1 for t in vwindow if t > now - 1.0)
                batch = max(1, min(batch, remaining))
                if private_at <= now or group_at <= now:
                    vwindow.append(now)  # this tick's claim counts against the vendor's rate
            if batch <= 0:
                blocked[account] = verdict.why
                continue
            soonest = min(private_at, group_at)
            if soonest <= now:
                candidates.append((account, batch, private_at, group_at))
                later = max(private_at, group_at)
                if later > now:
                    next_check = later if next_check is None else min(next_check, later)
            else:
                blocked[account] = verdict.why
                next_check = soonest if next_check is None else min(next_check, soonest)
        return Verdict(candidates, next_check, now, blocked)

    def _vendor_windows(self, vendor_limits: dict[str, str], now: float) -> dict[str, tuple[float, list[float]]]:
        if not vendor_limits:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        names = sorted(vendor_limits)
        for vendor in names:
            pipe.zrangebyscore(self.keys.vendor_pace(vendor), now - 2, "+inf")
        out: dict[str, tuple[float, list[float]]] = {}
        for vendor, members in zip(names, pipe.execute(), strict=True):
            out[vendor] = (float(vendor_limits[vendor]), sorted(float(m.split(":", 1)[0]) for m in members))
        return out
