"""The pacing algorithm as pure functions, with an injected clock (``now``) and fixed local times."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from worker.pacing.rules import (
    MAX_SLOWDOWN,
    RECOVERY_S,
    WINDOW_MARGIN_S,
    WINDOW_S,
    Allowance,
    PaceState,
    allowance,
    effective_slowdown,
    local_day,
    next_local_midnight,
    quiet_until,
    vendor_allowance,
)
from worker.store.accounts import Limits, QuietHours

SHANGHAI = "Asia/Shanghai"


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: float = 0, tz: str = SHANGHAI) -> float:
    """An epoch timestamp for a local wall-clock time in ``tz``."""
    whole = int(second)
    micro = round((second - whole) * 1_000_000)
    return datetime(year, month, day, hour, minute, whole, micro, tzinfo=ZoneInfo(tz)).timestamp()


#: Noon in Shanghai: outside any quiet window used below unless a test says otherwise.
NOON = ts(2024, 3, 10, 12, 0)


def approx(expected: float) -> Any:
    """Exact to a microsecond: epoch timestamps are ~1.7e9, so pytest's default relative tolerance is ~30 min."""
    return pytest.approx(expected, abs=1e-6)


def limits(**overrides: object) -> Limits:
    return Limits.model_validate(overrides)


# --- pacing off ------------------------------------------------------------------------------------------


def test_per_minute_zero_is_unpaced_whatever_the_state() -> None:
    busy = PaceState(
        last_end=NOON - 0.001,
        jitter_fraction=1.0,
        window=tuple(NOON - i for i in range(100, 0, -1)),
        slowdown=16.0,
        slowdown_at=NOON,
    )
    got = allowance(limits(per_minute=0, min_interval_s=30, group_min_interval_s=60), busy, NOON, unpaced_batch=7)
    assert got == Allowance(private_at=0.0, group_at=0.0, batch=7, why="")


def test_per_minute_zero_still_honours_the_daily_cap() -> None:
    state = PaceState(sent_today=5)
    got = allowance(limits(per_minute=0, daily_cap=5), state, NOON, unpaced_batch=7)
    midnight = ts(2024, 3, 11)
    assert got == Allowance(private_at=midnight, group_at=midnight, batch=7, why="daily_cap")


# --- gaps ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fraction", "private_gap", "group_gap"),
    [(0.0, 1.0, 3.0), (0.25, 1.5, 4.0), (1.0, 3.0, 7.0)],
)
def test_gap_is_min_interval_plus_jitter_times_fraction(fraction: float, private_gap: float, group_gap: float) -> None:
    lim = limits(min_interval_s=1.0, jitter_s=2.0, group_min_interval_s=3.0, group_jitter_s=4.0)
    last_end = NOON - 0.5
    got = allowance(lim, PaceState(last_end=last_end, jitter_fraction=fraction), NOON, unpaced_batch=50)
    assert got.private_at == approx(last_end + private_gap)
    assert got.group_at == approx(last_end + group_gap)
    assert got.batch == 1
    assert got.why == "gap"


def test_gap_already_elapsed_gives_a_start_in_the_past() -> None:
    lim = limits(min_interval_s=1.0, jitter_s=0.0, group_min_interval_s=2.0, group_jitter_s=0.0)
    got = allowance(lim, PaceState(last_end=NOON - 10), NOON, unpaced_batch=50)
    assert got.private_at == approx(NOON - 9)
    assert got.group_at == approx(NOON - 8)
    assert got.private_at <= NOON


# --- slow-down -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slowdown", "elapsed", "expected"),
    [
        (8.0, 0.0, 8.0),
        (8.0, RECOVERY_S - 0.001, 8.0),
        (8.0, RECOVERY_S, 4.0),
        (8.0, 2 * RECOVERY_S, 2.0),
        (8.0, 3 * RECOVERY_S, 1.0),
        (8.0, 100 * RECOVERY_S, 1.0),  # floor 1
        (3.0, RECOVERY_S, 1.5),
        (3.0, 2 * RECOVERY_S, 1.0),  # 0.75 is floored to 1
        (1.0, 0.0, 1.0),
        (0.5, 0.0, 1.0),  # below 1 is never a speed-up
        (8.0, -30.0, 8.0),  # a throttle stamped "in the future" (clock skew) does not recover early
        (MAX_SLOWDOWN, 0.0, 16.0),
        (MAX_SLOWDOWN, RECOVERY_S, 8.0),
    ],
)
def test_effective_slowdown_halves_every_recovery_period(slowdown: float, elapsed: float, expected: float) -> None:
    state = PaceState(slowdown=slowdown, slowdown_at=NOON)
    assert effective_slowdown(state, NOON + elapsed) == approx(expected)


def test_max_slowdown_is_sixteen() -> None:
    assert MAX_SLOWDOWN == 16.0


def test_slowdown_multiplies_both_gaps() -> None:
    lim = limits(min_interval_s=1.0, jitter_s=2.0, group_min_interval_s=3.0, group_jitter_s=4.0)
    last_end = NOON - 1
    state = PaceState(last_end=last_end, jitter_fraction=0.5, slowdown=4.0, slowdown_at=NOON - 10)
    got = allowance(lim, state, NOON, unpaced_batch=50)
    assert got.private_at == approx(last_end + (1.0 + 1.0) * 4)
    assert got.group_at == approx(last_end + (3.0 + 2.0) * 4)


def test_recovered_slowdown_no_longer_stretches_gaps() -> None:
    lim = limits(min_interval_s=1.0, jitter_s=0.0)
    last_end = NOON - 0.5
    state = PaceState(last_end=last_end, slowdown=4.0, slowdown_at=NOON - 2 * RECOVERY_S)
    assert allowance(lim, state, NOON, unpaced_batch=50).private_at == approx(last_end + 1.0)


def test_slowdown_divides_the_per_minute_rate() -> None:
    # 30 a minute slowed 4x -> floor(7.5) = 7 sends in the window
    lim = limits(per_minute=30, min_interval_s=0.0, jitter_s=0.0, group_min_interval_s=0.0, group_jitter_s=0.0)
    six = tuple(NOON - 50 + i for i in range(6))
    seven = tuple(NOON - 50 + i for i in range(7))
    slowed = PaceState(last_end=seven[-1], window=seven, slowdown=4.0, slowdown_at=NOON)
    got = allowance(lim, slowed, NOON, unpaced_batch=50)
    assert got.why == "per_minute"
    assert got.private_at == approx(seven[-7] + WINDOW_S + WINDOW_MARGIN_S)

    fewer = PaceState(last_end=six[-1], window=six, slowdown=4.0, slowdown_at=NOON)
    assert allowance(lim, fewer, NOON, unpaced_batch=50).private_at == approx(six[-1])
    # without the slow-down, 7 of 30 is far from the limit
    unslowed = PaceState(last_end=seven[-1], window=seven)
    assert allowance(lim, unslowed, NOON, unpaced_batch=50).why == "gap"


def test_slowed_rate_never_drops_below_one_a_minute() -> None:
    lim = limits(per_minute=10, min_interval_s=0.0, jitter_s=0.0, group_min_interval_s=0.0, group_jitter_s=0.0)
    state = PaceState(last_end=NOON - 5, window=(NOON - 5,), slowdown=16.0, slowdown_at=NOON)
    got = allowance(lim, state, NOON, unpaced_batch=50)
    assert got.why == "per_minute"
    assert got.private_at == approx(NOON - 5 + WINDOW_S + WINDOW_MARGIN_S)
    assert got.group_at == got.private_at


# --- per-minute window -----------------------------------------------------------------------------------


def test_full_window_waits_for_the_oldest_relevant_send() -> None:
    lim = limits(per_minute=3, min_interval_s=1.0, jitter_s=0.0, group_min_interval_s=2.0, group_jitter_s=0.0)
    window = (NOON - 50, NOON - 40, NOON - 30)
    got = allowance(lim, PaceState(last_end=NOON - 30, window=window), NOON, unpaced_batch=50)
    expected = NOON - 50 + WINDOW_S + WINDOW_MARGIN_S
    assert got == Allowance(private_at=approx(expected), group_at=approx(expected), batch=1, why="per_minute")


def test_window_uses_the_entry_rate_places_back() -> None:
    lim = limits(per_minute=3, min_interval_s=0.0, jitter_s=0.0, group_min_interval_s=0.0, group_jitter_s=0.0)
    window = (NOON - 59, NOON - 55, NOON - 45, NOON - 20, NOON - 10)
    got = allowance(lim, PaceState(last_end=NOON - 10, window=window), NOON, unpaced_batch=50)
    assert got.private_at == approx(NOON - 45 + WINDOW_S + WINDOW_MARGIN_S)
    assert got.why == "per_minute"


def test_window_below_the_rate_only_applies_the_gap() -> None:
    lim = limits(per_minute=3, min_interval_s=1.0, jitter_s=0.0, group_min_interval_s=2.0, group_jitter_s=0.0)
    window = (NOON - 40, NOON - 30)
    got = allowance(lim, PaceState(last_end=NOON - 30, window=window), NOON, unpaced_batch=50)
    assert got == Allowance(private_at=approx(NOON - 29), group_at=approx(NOON - 28), batch=1, why="gap")


def test_gap_later_than_the_window_wins() -> None:
    lim = limits(per_minute=2, min_interval_s=30.0, jitter_s=0.0, group_min_interval_s=30.0, group_jitter_s=0.0)
    window = (NOON - 59.995, NOON - 1)
    got = allowance(lim, PaceState(last_end=NOON - 1, window=window), NOON, unpaced_batch=50)
    assert got.private_at == approx(NOON + 29)


# --- daily cap -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "America/New_York", "Pacific/Auckland"])
def test_daily_cap_reached_waits_for_local_midnight(tz: str) -> None:
    now = ts(2024, 12, 31, 23, 59, 30, tz=tz)
    lim = limits(daily_cap=100, timezone=tz, min_interval_s=1.0, jitter_s=0.0)
    got = allowance(lim, PaceState(last_end=now - 5, sent_today=100), now, unpaced_batch=50)
    midnight = ts(2025, 1, 1, tz=tz)
    assert midnight - now == approx(30.0)
    assert got == Allowance(private_at=midnight, group_at=midnight, batch=1, why="daily_cap")


def test_full_window_after_midnight_beats_the_daily_cap() -> None:
    # cap reached 30 s before midnight, but the per-minute window only opens 50 s from now
    now = ts(2024, 3, 10, 23, 59, 30)
    lim = limits(per_minute=1, daily_cap=1, min_interval_s=0.0, jitter_s=0.0)
    got = allowance(lim, PaceState(last_end=now - 10, window=(now - 10,), sent_today=1), now, unpaced_batch=50)
    assert got.private_at == approx(now - 10 + WINDOW_S + WINDOW_MARGIN_S)
    assert got.private_at > ts(2024, 3, 11)


def test_daily_cap_midnight_is_the_accounts_not_utc() -> None:
    # 2024-03-10 10:00 in Shanghai is 02:00 UTC: UTC midnight is 22 h away, Shanghai midnight 14 h
    now = ts(2024, 3, 10, 10, 0)
    got = allowance(limits(daily_cap=1), PaceState(sent_today=1), now, unpaced_batch=50)
    assert got.private_at == ts(2024, 3, 11)
    assert got.private_at - now == approx(14 * 3600)
    assert got.private_at != ts(2024, 3, 11, tz="UTC")


def test_daily_cap_not_reached_or_disabled() -> None:
    lim = limits(daily_cap=100, min_interval_s=1.0, jitter_s=0.0)
    assert allowance(lim, PaceState(last_end=NOON - 5, sent_today=99), NOON, unpaced_batch=50).why == "gap"
    uncapped = limits(daily_cap=0, min_interval_s=1.0, jitter_s=0.0)
    assert allowance(uncapped, PaceState(last_end=NOON - 5, sent_today=10**6), NOON, unpaced_batch=50).why == "gap"


def test_daily_cap_over_the_window() -> None:
    lim = limits(per_minute=1, daily_cap=3, min_interval_s=0.0, jitter_s=0.0)
    state = PaceState(last_end=NOON - 1, window=(NOON - 1,), sent_today=3)
    got = allowance(lim, state, NOON, unpaced_batch=50)
    assert got.private_at == ts(2024, 3, 11)
    assert got.why == "daily_cap"


NY = "America/New_York"


@pytest.mark.parametrize(
    ("tz", "now", "expected"),
    [
        (SHANGHAI, ts(2024, 3, 10, 12, 0), ts(2024, 3, 11)),
        (SHANGHAI, ts(2024, 3, 10, 0, 0), ts(2024, 3, 11)),  # exactly midnight: the next one, a day later
        (SHANGHAI, ts(2024, 12, 31, 23, 59, 59.5), ts(2025, 1, 1)),
        (SHANGHAI, ts(2024, 2, 28, 18, 0), ts(2024, 2, 29)),  # leap year
        (NY, ts(2024, 3, 10, 0, 0, tz=NY), ts(2024, 3, 11, tz=NY)),
    ],
)
def test_next_local_midnight(tz: str, now: float, expected: float) -> None:
    assert next_local_midnight(now, tz) == expected


def test_next_local_midnight_across_a_dst_change_is_23_hours_away() -> None:
    # DST starts in New York on 2024-03-10: that local day has 23 hours
    now = ts(2024, 3, 10, 0, 0, tz=NY)
    assert next_local_midnight(now, NY) - now == 23 * 3600


# --- quiet hours -----------------------------------------------------------------------------------------

DAYTIME = QuietHours(start="09:00", end="18:00")
NIGHT = QuietHours(start="22:00", end="08:00")


@pytest.mark.parametrize(
    ("quiet", "now", "expected"),
    [
        (DAYTIME, ts(2024, 3, 10, 12, 0), ts(2024, 3, 10, 18, 0)),
        (DAYTIME, ts(2024, 3, 10, 9, 0), ts(2024, 3, 10, 18, 0)),  # start is inside
        (DAYTIME, ts(2024, 3, 10, 17, 59, 59), ts(2024, 3, 10, 18, 0)),
        (DAYTIME, ts(2024, 3, 10, 8, 59, 59), None),
        (DAYTIME, ts(2024, 3, 10, 18, 0), None),  # end is outside
        (DAYTIME, ts(2024, 3, 10, 23, 0), None),
        (NIGHT, ts(2024, 3, 10, 23, 30), ts(2024, 3, 11, 8, 0)),  # before midnight: ends tomorrow
        (NIGHT, ts(2024, 3, 10, 22, 0), ts(2024, 3, 11, 8, 0)),
        (NIGHT, ts(2024, 12, 31, 23, 0), ts(2025, 1, 1, 8, 0)),  # and across a year
        (NIGHT, ts(2024, 3, 11, 0, 0), ts(2024, 3, 11, 8, 0)),  # after midnight: ends today
        (NIGHT, ts(2024, 3, 11, 3, 0), ts(2024, 3, 11, 8, 0)),
        (NIGHT, ts(2024, 3, 11, 7, 59, 30), ts(2024, 3, 11, 8, 0)),
        (NIGHT, ts(2024, 3, 11, 8, 0), None),
        (NIGHT, ts(2024, 3, 10, 12, 0), None),
        (NIGHT, ts(2024, 3, 10, 21, 59, 59), None),
    ],
)
def test_quiet_until(quiet: QuietHours, now: float, expected: float | None) -> None:
    assert quiet_until(limits(quiet_hours=quiet), now) == expected


def test_quiet_hours_use_the_accounts_timezone() -> None:
    # 23:30 in Shanghai is 15:30 UTC: quiet for a Shanghai account, not for a UTC one
    now = ts(2024, 3, 10, 23, 30)
    assert quiet_until(limits(quiet_hours=NIGHT), now) == ts(2024, 3, 11, 8, 0)
    assert quiet_until(limits(quiet_hours=NIGHT, timezone="UTC"), now) is None
    assert quiet_until(limits(quiet_hours=NIGHT, timezone="UTC"), ts(2024, 3, 10, 23, 30, tz="UTC")) == ts(
        2024, 3, 11, 8, 0, tz="UTC"
    )


@pytest.mark.parametrize("hour", [0, 7, 12, 22, 23])
def test_equal_start_and_end_means_no_quiet_hours(hour: int) -> None:
    lim = limits(quiet_hours=QuietHours(start="22:00", end="22:00"))
    assert quiet_until(lim, ts(2024, 3, 10, hour, 0)) is None


def test_no_quiet_hours_configured() -> None:
    assert quiet_until(limits(), ts(2024, 3, 10, 3, 0)) is None


def test_allowance_inside_quiet_hours_returns_the_quiet_end() -> None:
    now = ts(2024, 3, 10, 23, 30)
    lim = limits(quiet_hours=NIGHT, min_interval_s=1.0, jitter_s=0.0)
    got = allowance(lim, PaceState(last_end=now - 100), now, unpaced_batch=50)
    end = ts(2024, 3, 11, 8, 0)
    assert got == Allowance(private_at=end, group_at=end, batch=1, why="quiet_hours")


def test_quiet_end_before_the_gap_yields_the_gap() -> None:
    now = ts(2024, 3, 11, 7, 59, 58)
    lim = limits(quiet_hours=NIGHT, min_interval_s=10.0, jitter_s=0.0, group_min_interval_s=10.0, group_jitter_s=0.0)
    got = allowance(lim, PaceState(last_end=now - 1), now, unpaced_batch=50)
    assert got.private_at == approx(now + 9)
    assert got.group_at == approx(now + 9)


def test_quiet_end_after_the_daily_midnight_wins() -> None:
    now = ts(2024, 3, 10, 23, 0)
    lim = limits(quiet_hours=NIGHT, daily_cap=1)
    got = allowance(lim, PaceState(sent_today=1), now, unpaced_batch=50)
    assert got.private_at == ts(2024, 3, 11, 8, 0)
    assert got.why == "quiet_hours"


def test_daily_cap_later_than_quiet_end() -> None:
    # quiet 09:00-18:00 at noon, cap reached: midnight is later than 18:00
    now = ts(2024, 3, 10, 12, 0)
    got = allowance(limits(quiet_hours=DAYTIME, daily_cap=1), PaceState(sent_today=1), now, unpaced_batch=50)
    assert got.private_at == ts(2024, 3, 11)
    assert got.why == "daily_cap"


def test_outside_quiet_hours_allowance_is_unaffected() -> None:
    lim = limits(quiet_hours=DAYTIME, min_interval_s=1.0, jitter_s=0.0)
    now = ts(2024, 3, 10, 19, 0)
    got = allowance(lim, PaceState(last_end=now - 0.25), now, unpaced_batch=50)
    assert got.private_at == approx(now + 0.75)
    assert got.why == "gap"


# --- vendor rate -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_second", [0.0, -1.0])
def test_vendor_allowance_without_limit(per_second: float) -> None:
    assert vendor_allowance(per_second, (NOON - 0.1, NOON - 0.05, NOON), NOON) == 0.0


@pytest.mark.parametrize(
    ("per_second", "window", "expected"),
    [
        (2.0, (), 0.0),
        (2.0, (NOON - 0.5,), 0.0),
        (2.0, (NOON - 0.8, NOON - 0.3), NOON + 0.2),
        (2.0, (NOON - 0.9, NOON - 0.8, NOON - 0.3), NOON + 0.2),  # the entry per_second places back
        (2.5, (NOON - 0.8, NOON - 0.3), NOON + 0.2),  # fractional rates round down
        (1.0, (NOON - 0.4,), NOON + 0.6),
        (3.0, (NOON - 2.0, NOON - 1.5, NOON - 1.2), NOON - 1.0),  # old enough: already allowed
    ],
)
def test_vendor_allowance(per_second: float, window: tuple[float, ...], expected: float) -> None:
    assert vendor_allowance(per_second, window, NOON) == approx(expected)


def test_vendor_rate_below_one_per_second_is_honoured() -> None:
    # 0.5 sends per second = one every 2 s: one second after a send is too early
    assert vendor_allowance(0.5, (NOON - 1.0,), NOON) > NOON


# --- local day -------------------------------------------------------------------------------------------


def test_local_day_differs_by_timezone_near_midnight() -> None:
    instant = ts(2024, 3, 11, 0, 30)  # 00:30 in Shanghai = 16:30 UTC on the 10th
    assert local_day(instant, SHANGHAI) == "20240311"
    assert local_day(instant, "UTC") == "20240310"
    assert local_day(instant, "America/New_York") == "20240310"


def test_local_day_changes_exactly_at_local_midnight() -> None:
    midnight = ts(2025, 1, 1)
    assert local_day(midnight - 0.001, SHANGHAI) == "20241231"
    assert local_day(midnight, SHANGHAI) == "20250101"
    assert local_day(next_local_midnight(midnight - 1, SHANGHAI), SHANGHAI) == "20250101"


@pytest.mark.parametrize("tz", ["Asia/Kathmandu", "Australia/Eucla", "America/St_Johns", "Europe/Berlin", SHANGHAI])
def test_local_day_remembered_for_a_minute_still_changes_at_local_midnight(tz: str) -> None:
    # offsets of 45 and 30 minutes, DST changes: the day worked out just before local midnight is remembered
    # for its UTC minute, and the next day's first instant, in the next UTC minute, is still told apart
    for day in (datetime(2025, 3, 30), datetime(2025, 6, 1), datetime(2025, 10, 26)):
        midnight = day.replace(tzinfo=ZoneInfo(tz)).timestamp()
        before, after = midnight - 0.001, midnight + 0.001
        assert local_day(before, tz) == datetime.fromtimestamp(before, ZoneInfo(tz)).strftime("%Y%m%d")
        assert local_day(after, tz) == day.strftime("%Y%m%d")
        assert local_day(before, tz) != local_day(after, tz)


def test_unpaced_session_never_goes_past_the_daily_cap() -> None:
    got = allowance(limits(per_minute=0, daily_cap=10), PaceState(sent_today=9), NOON, unpaced_batch=50)
    assert got.batch == 1 and got.private_at == 0.0
