"""Pacing: when may an account send next? The algorithm only; the state lives in Redis (``pace:*``).

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
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from worker.accounts import Limits

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
    sent_today: int = 0
    slowdown: float = 1.0
    slowdown_at: float = 0.0


def effective_slowdown(state: PaceState, now: float) -> float:
    """The throttle factor now: halves every RECOVERY_S since the last throttling answer, never below 1."""
    if state.slowdown <= 1.0:
        return 1.0
    halvings = max(0.0, now - state.slowdown_at) // RECOVERY_S
    return max(1.0, state.slowdown / (2**halvings))


def local_day(now: float, timezone: str) -> str:
    """The account's local date (``YYYYMMDD``), the key of its daily counter."""
    return datetime.fromtimestamp(now, ZoneInfo(timezone)).strftime("%Y%m%d")


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
    limits: Limits, state: PaceState, now: float, *, unpaced_batch: int, clock_offset_s: float = 0.0
) -> Allowance:
    """The earliest start of the next send for an account. ``per_minute == 0`` switches rate pacing off
    (quiet hours and the daily cap still hold). ``clock_offset_s`` shifts only the local-time rules."""
    local_now = now + clock_offset_s
    earliest = 0.0
    why = ""
    cap_at = _daily_cap_at(limits, state, local_now)
    if cap_at is not None:
        earliest, why = cap_at - clock_offset_s, "daily_cap"
    quiet_end = quiet_until(limits, local_now)
    if quiet_end is not None and quiet_end - clock_offset_s > earliest:
        earliest, why = quiet_end - clock_offset_s, "quiet_hours"
    if limits.per_minute == 0:
        batch = unpaced_batch
        if limits.daily_cap and cap_at is None:
            batch = min(batch, limits.daily_cap - state.sent_today)  # never past today's cap
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
    private_at = max(earliest, state.last_end + private_gap)
    group_at = max(earliest, state.last_end + group_gap)
    return Allowance(private_at, group_at, 1, why or "gap")


def _daily_cap_at(limits: Limits, state: PaceState, now: float) -> float | None:
    if limits.daily_cap and state.sent_today >= limits.daily_cap:
        return next_local_midnight(now, limits.timezone)
    return None


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
