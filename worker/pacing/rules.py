"""Pacing: when may an account send next? The one place that decides it.

The rules are pure functions of an account's :class:`~worker.store.accounts.Limits` and its :class:`PaceState`
(kept in Redis, ``pace:{account}`` and ``pace:{account}:win``), evaluated on Redis ``TIME``, the one clock
every process shares. Two callers apply them: the dispatcher (:class:`Pacer`), for accounts that are due
in the ``sched`` sorted set, to decide which may start a session now and when to look at the others; and
the worker (:mod:`worker.execution.runner`), between the sends of one session, to decide how long to wait before
the next one. The Lua scripts only store state and compare times these functions computed.

WeChat restricts accounts that send too fast; vendors advise 20-40 messages a minute, at least 1 s between
private chats, a random 2-5 s between groups, one call at a time. Every rule here is measured from the
*end* of earlier sends (when the vendor had answered), so it holds at the vendor whatever the network
latency: the next request cannot reach the vendor before it leaves, and it leaves after the gap.

Rules, all per account, global across workers because one dispatcher decides from shared state:

* minimum gap plus a random jitter (separate for groups ``…@chatroom`` and private chats); the random
  fraction is drawn once per send, when the previous one ends, so every tick sees the same gap;
* at most ``per_minute`` sends in any 60 s window;
* a daily cap, counted per local day in the account's timezone;
* quiet hours (a daily window, may wrap midnight): jobs wait and continue afterwards;
* a throttling answer multiplies the gaps (and divides the rate) by a slow-down factor that halves
  again every minute without throttling: back off, then recover gradually;
* a per-vendor rate on top (the vendor API's own limit, across all its accounts).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis

from worker.settings import Settings
from worker.store import scripts
from worker.store.accounts import Limits, stored_limits
from worker.store.keys import Keys
from worker.store.scripts import SHARED

#: Window length for ``per_minute``, with a small margin for clock granularity.
WINDOW_S = 60.0
WINDOW_MARGIN_S = 0.01
#: Throttling doubles the slow-down factor up to this, and it halves every RECOVERY_S without throttling.
MAX_SLOWDOWN = 16.0
RECOVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class PaceState:
    """What Redis knows about an account's recent sends."""

    last_end: float = 0.0
    #: The random fraction (0-1) of the jitter for the next send.
    jitter_fraction: float = 0.0
    #: End times of recent sends, ascending (only the last ``per_minute`` matter).
    window: tuple[float, ...] = ()
    #: Sends on the local day ``day`` (``YYYYMMDD``; '' = today, for callers that know).
    sent_today: int = 0
    slowdown: float = 1.0
    slowdown_at: float = 0.0
    day: str = ""
    #: No send before this (Redis time): the cool-down after a call abandoned unanswered
    #: (``BROADCAST_ABANDONED_COOLDOWN_S``; the worker writes ``cool_until`` in the pace hash).
    cool_until: float = 0.0

    @classmethod
    def from_redis(cls, pace: Mapping[str, str], window_newest_first: Sequence[str]) -> PaceState:
        """The state as stored: the ``pace`` hash and the ``win`` list (newest first)."""
        return cls(
            last_end=float(pace.get("last_end") or 0),
            jitter_fraction=float(pace.get("r") or 0),
            window=tuple(float(x) for x in reversed(window_newest_first)),
            sent_today=int(pace.get("day_n") or 0),
            slowdown=float(pace.get("slow") or 1),
            slowdown_at=float(pace.get("slow_at") or 0),
            day=pace.get("day") or "",
            cool_until=float(pace.get("cool_until") or 0),
        )

    def sent_on(self, day: str) -> int:
        """Sends counted on local day ``day``."""
        return self.sent_today if not self.day or self.day == day else 0

    def after_call(
        self, end: float, *, fraction: float, slowdown: float | None, day: str, day_sends: int, keep: int
    ) -> PaceState:
        """The state once a vendor call ended at ``end``, as its PaceRecord says (the record FINISH wrote to
        Redis): it counts for the gap and the per-minute window whatever its outcome; ``slowdown`` is the
        new throttle factor after a throttling answer (None: unchanged), ``day_sends`` the day's count
        including it, ``keep`` how many end times the window needs (``per_minute``)."""
        window = (*self.window, end)[-keep:] if keep > 0 else ()
        changed = {} if slowdown is None else {"slowdown": slowdown, "slowdown_at": end}
        return replace(
            self, last_end=end, jitter_fraction=fraction, window=window, sent_today=day_sends, day=day, **changed
        )


def effective_slowdown(state: PaceState, now: float) -> float:
    """The throttle factor now: halves every RECOVERY_S since the last throttling answer, never below 1."""
    if state.slowdown <= 1.0:
        return 1.0
    halvings = max(0.0, now - state.slowdown_at) // RECOVERY_S
    return max(1.0, state.slowdown / (2**halvings))


def throttled_slowdown(state: PaceState, now: float) -> float:
    """The slow-down factor after one more throttling answer: twice the current one, at most MAX_SLOWDOWN."""
    return min(MAX_SLOWDOWN, effective_slowdown(state, now) * 2)


#: The last local date worked out per timezone, with the UTC minute it was for: every send asks, and a local
#: day always starts on a whole UTC minute (offsets are whole minutes), so one answer serves a minute.
_LOCAL_DAYS: dict[str, tuple[int, str]] = {}


def local_day(now: float, timezone: str) -> str:
    """The account's local date (``YYYYMMDD``), the key of its daily counter."""
    minute = int(now // 60)
    known = _LOCAL_DAYS.get(timezone)
    if known is not None and known[0] == minute:
        return known[1]
    day = datetime.fromtimestamp(now, ZoneInfo(timezone)).strftime("%Y%m%d")
    _LOCAL_DAYS[timezone] = (minute, day)
    return day


def next_local_midnight(now: float, timezone: str) -> float:
    """When the account's next local day starts."""
    local = datetime.fromtimestamp(now, ZoneInfo(timezone))
    tomorrow = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return tomorrow.timestamp()


def quiet_until(limits: Limits, now: float) -> float | None:
    """End of the quiet window if ``now`` is inside it, else None."""
    quiet = limits.quiet_hours
    if quiet is None or quiet.start == quiet.end:
        return None
    tz = ZoneInfo(limits.timezone)
    local = datetime.fromtimestamp(now, tz)
    start_h, start_m = map(int, quiet.start.split(":"))
    end_h, end_m = map(int, quiet.end.split(":"))
    minutes = local.hour * 60 + local.minute
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    inside = start <= minutes < end if start < end else (minutes >= start or minutes < end)
    if not inside:
        return None
    end_today = local.replace(hour=end_h, minute=end_m, second=0, microsecond=0)
    if end_today <= local:
        end_today += timedelta(days=1)
    return end_today.timestamp()


@dataclass(frozen=True, slots=True)
class Allowance:
    """When the next private-chat and group send may start, and how many jobs one batch may take."""

    private_at: float
    group_at: float
    batch: int
    why: str = ""


def allowance(
    limits: Limits,
    state: PaceState,
    now: float,
    *,
    unpaced_batch: int,
    session_batch: int = 1,
    clock_offset_s: float = 0.0,
) -> Allowance:
    """The earliest start of the next send for an account, and how many jobs a session may take (the
    worker paces a session's later sends with this same function). ``per_minute == 0`` switches rate
    pacing off (quiet hours and the daily cap still hold). ``clock_offset_s`` shifts only the local-time
    rules."""
    local_now = now + clock_offset_s
    # today's sends (0 when the state's count is for another local day); read, not a copy of the state:
    # this runs before every send
    sent_today = state.sent_on(local_day(local_now, limits.timezone))
    earliest = 0.0
    why = ""
    if state.cool_until > now:
        earliest, why = state.cool_until, "cooldown"
    cap_at = _daily_cap_at(limits, sent_today, local_now)
    if cap_at is not None and cap_at - clock_offset_s > earliest:
        earliest, why = cap_at - clock_offset_s, "daily_cap"
    quiet_end = quiet_until(limits, local_now)
    if quiet_end is not None and quiet_end - clock_offset_s > earliest:
        earliest, why = quiet_end - clock_offset_s, "quiet_hours"
    if limits.per_minute == 0:
        batch = unpaced_batch
        if limits.daily_cap and cap_at is None:
            batch = min(batch, limits.daily_cap - sent_today)  # never past today's cap
        if earliest > now:
            return Allowance(earliest, earliest, batch, why)
        return Allowance(0.0, 0.0, batch)
    slow = effective_slowdown(state, now)
    private_gap = (limits.min_interval_s + limits.jitter_s * state.jitter_fraction) * slow
    group_gap = (limits.group_min_interval_s + limits.group_jitter_s * state.jitter_fraction) * slow
    rate = max(1, math.floor(limits.per_minute / slow))
    if len(state.window) >= rate:
        # the send `rate` places back must have ended a full window before this one starts
        window_at = state.window[-rate] + WINDOW_S + WINDOW_MARGIN_S
        if window_at > earliest:
            earliest, why = window_at, "per_minute"
    private_at = _after_quiet(limits, max(earliest, state.last_end + private_gap), clock_offset_s)
    group_at = _after_quiet(limits, max(earliest, state.last_end + group_gap), clock_offset_s)
    batch = min(session_batch, max(1, rate - sum(1 for t in state.window if t > now - WINDOW_S)))
    if limits.daily_cap:
        batch = min(batch, max(1, limits.daily_cap - sent_today))
    return Allowance(private_at, group_at, batch, why or "gap")


def _after_quiet(limits: Limits, start: float, clock_offset_s: float) -> float:
    """A start that would fall into quiet hours moves to their end."""
    quiet_end = quiet_until(limits, start + clock_offset_s)
    return start if quiet_end is None else quiet_end - clock_offset_s


def _daily_cap_at(limits: Limits, sent_today: int, now: float) -> float | None:
    if limits.daily_cap and sent_today >= limits.daily_cap:
        return next_local_midnight(now, limits.timezone)
    return None


def vendor_lookback(per_second: float) -> float:
    """How far back a vendor's sends matter for its rate: one second, or one gap when slower than one a second
    (at most ``SHARED["VENDOR_WINDOW_S"]``, how long finish_*.lua keeps them)."""
    gap = 1.0 / per_second if 0 < per_second < 1 else 1.0
    return min(gap + 0.5, SHARED["VENDOR_WINDOW_S"])


def vendor_allowance(per_second: float, window: tuple[float, ...], now: float) -> float:
    """Earliest start under a vendor-wide rate (sends per second across its accounts); 0 = no limit."""
    if per_second <= 0 or not window:
        return 0.0
    if per_second < 1:
        return window[-1] + 1.0 / per_second  # slower than one a second: a plain gap
    per_window = math.floor(per_second)
    if len(window) >= per_window:
        return window[-per_window] + 1.0
    return 0.0


# --- reading the state for the dispatcher -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """For the accounts looked at: CLAIM candidates (account, batch, private_at, group_at), the accounts
    that must wait with when to look again, and the reasons (for operators)."""

    candidates: list[tuple[str, int, float, float]]
    later: dict[str, float]
    now: float
    blocked: dict[str, str]
    dropped: list[str]

    @property
    def next_check(self) -> float | None:
        """The earliest moment one of the waiting accounts becomes sendable."""
        return min(self.later.values(), default=None)


def redis_now(client: redis.Redis) -> float:
    """Redis server time, the pacing clock shared by every process."""
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


class RedisClock:
    """Redis's clock between readings of its TIME, kept as an interval on the local monotonic clock.

    A reading ``r`` from a call that left at local time ``s`` and was answered at ``e`` says the true time at
    ``e`` lies within ``[r, r + (e - s)]`` (TIME was read somewhere during the round trip). :meth:`now` is the
    earliest it can be — what "has the moment come?" decisions use, so they are never early — and
    :meth:`latest` the latest — what an end is recorded as, so the gap after it is never short, however
    long the reply waited for this process to read it."""

    def __init__(self, reading: float, sent: float, received: float) -> None:
        self.sync(reading, sent, received)

    def sync(self, reading: float, sent: float, received: float) -> None:
        self._earliest = reading - received
        self._latest = reading - sent
        self.synced_at = received

    def now(self) -> float:
        return time.monotonic() + self._earliest

    def latest(self) -> float:
        return time.monotonic() + self._latest


def read_clock(client: redis.Redis) -> RedisClock:
    """A fresh reading of Redis's clock."""
    sent = time.monotonic()
    reading = redis_now(client)
    return RedisClock(reading, sent, time.monotonic())


class Pacer:
    """Applies :func:`allowance` to the accounts the dispatcher found due, reading only their state."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)

    def verdict(self, accounts: Sequence[str], now: float | None = None) -> Verdict:
        """Three reads per account (limits and status, pace hash, window), one round trip (without redis-py's
        pipeline layers: their per-command reply handling was a quarter of the dispatcher's CPU)."""
        now = redis_now(self.redis) if now is None else now
        if not accounts:
            return Verdict([], {}, now, {}, [])
        k = self.keys
        commands: list[tuple[Any, ...]] = [("HGETALL", k.vendor_limits)]
        for account in accounts:
            commands.append(("HMGET", k.account(account), "limits", "vendor", "status"))
            commands.append(("HGETALL", k.pace(account)))
            commands.append(("LRANGE", k.pace_window(account), 0, -1))
        rows = scripts.round_trip(self.redis, commands)
        for row in rows:
            if isinstance(row, Exception):
                raise row
        vendor_limits = scripts.hash_reply(rows[0])
        vendor_windows = self._vendor_windows(vendor_limits, now)
        verdict = Verdict([], {}, now, {}, [])
        for i, account in enumerate(accounts):
            (limits_raw, vendor, status), pace, window = rows[1 + 3 * i : 4 + 3 * i]
            if status in ("paused", "down") or vendor is None:
                verdict.dropped.append(account)  # resume puts it back
                continue
            limits = stored_limits(limits_raw or "")
            state = PaceState.from_redis(scripts.hash_reply(pace), window)
            self._judge(verdict, account, limits, vendor, state, vendor_windows)
        return verdict

    def _judge(
        self,
        verdict: Verdict,
        account: str,
        limits: Limits,
        vendor: str,
        state: PaceState,
        vendor_windows: dict[str, tuple[float, list[float]]],
    ) -> None:
        now = verdict.now
        got = allowance(
            limits,
            state,
            now,
            unpaced_batch=self.settings.batch_size,
            session_batch=self.settings.batch_size,
            clock_offset_s=self.settings.clock_offset_s,
        )
        private_at, group_at, batch = got.private_at, got.group_at, got.batch
        if vendor in vendor_windows:
            # a vendor-wide rate is shared by all its accounts: one send per claim, decided here
            per_second, vwindow = vendor_windows[vendor]
            vendor_at = vendor_allowance(per_second, tuple(vwindow), now)
            private_at, group_at = max(private_at, vendor_at), max(group_at, vendor_at)
            batch = 1
            if private_at <= now or group_at <= now:
                vwindow.append(now)  # this tick's claim counts against the vendor's rate
        soonest = min(private_at, group_at)
        if batch > 0 and soonest <= now:
            verdict.candidates.append((account, batch, private_at, group_at))
        else:
            verdict.blocked[account] = got.why
            verdict.later[account] = max(soonest, now + 0.001)

    def _vendor_windows(self, vendor_limits: dict[str, str], now: float) -> dict[str, tuple[float, list[float]]]:
        if not vendor_limits:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        names = sorted(vendor_limits)
        for vendor in names:
            pipe.zrangebyscore(
                self.keys.vendor_pace(vendor), now - vendor_lookback(float(vendor_limits[vendor])), "+inf"
            )
        pipe.smembers(self.keys.leased)
        *windows, leased = pipe.execute()
        out: dict[str, tuple[float, list[float]]] = {}
        for vendor, members in zip(names, windows, strict=True):
            out[vendor] = (float(vendor_limits[vendor]), sorted(float(m.split(":", 1)[0]) for m in members))
        if leased:
            # a send in flight counts against its vendor's rate until FINISH records it
            pipe = self.redis.pipeline(transaction=False)
            for account in leased:
                pipe.hget(self.keys.account(account), "vendor")
            for vendor in pipe.execute():
                if vendor in out:
                    out[vendor][1].append(now)
        return out
