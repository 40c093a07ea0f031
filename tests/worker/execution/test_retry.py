"""The retry policy per error class, the backoff curve, and quick retries with an injected sleep."""

from __future__ import annotations

import random

import pytest

from worker.errors import (
    AccountDownError,
    AmbiguousError,
    PermanentError,
    ThrottledError,
    TransientError,
    UnsupportedError,
    VendorError,
    VendorFailure,
)
from worker.execution.retry import Decision, RetryPolicy, backoff_s, call_with_quick_retries
from worker.settings import Settings


def settings(**kw: object) -> Settings:
    base: dict[str, object] = {
        "retry_base_s": 5.0,
        "retry_max_s": 600.0,
        "max_attempts_transient": 8,
        "max_attempts_throttled": 10,
        "max_attempts_failure": 3,
        "quick_retries": 3,
        "quick_retry_max_wait_s": 2.0,
        "ambiguous_policy": "dead",
    }
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def policy(**kw: object) -> RetryPolicy:
    return RetryPolicy(settings(**kw), rng=random.Random(42))


# --- RetryPolicy.decide ------------------------------------------------------------------------------


def test_account_down_requeues_whatever_the_count() -> None:
    for failures in (0, 5, 100):
        assert policy().decide(AccountDownError("已离线"), failures) == Decision("requeue", reason="account_down")


@pytest.mark.parametrize("error", [PermanentError("不是你的好友"), UnsupportedError("no revoke")])
def test_permanent_and_unsupported_are_dead_at_once(error: VendorError) -> None:
    assert policy().decide(error, 0) == Decision("dead", reason="permanent")


def test_a_plain_vendor_error_is_treated_as_permanent() -> None:
    assert policy().decide(VendorError("?"), 0) == Decision("dead", reason="permanent")


def test_ambiguous_is_dead_as_unknown_outcome_by_default() -> None:
    assert policy().decide(AmbiguousError("read timeout"), 0) == Decision("dead", reason="unknown_outcome")


def test_ambiguous_retries_only_when_the_operator_chose_so_within_the_transient_budget() -> None:
    p = policy(ambiguous_policy="retry", max_attempts_transient=3)
    first = p.decide(AmbiguousError("read timeout"), 0)
    assert first.action == "retry" and 2.5 <= first.delay_s <= 5.0
    assert p.decide(AmbiguousError("read timeout"), 1).action == "retry"
    assert p.decide(AmbiguousError("read timeout"), 2) == Decision("dead", reason="unknown_outcome")


@pytest.mark.parametrize(
    ("error", "budget_field", "budget"),
    [
        (TransientError("HTTP 502"), "max_attempts_transient", 4),
        (ThrottledError("频率过快"), "max_attempts_throttled", 6),
        (VendorFailure("失败"), "max_attempts_failure", 2),
    ],
)
def test_retryable_classes_retry_until_their_own_budget_is_spent(
    error: VendorError, budget_field: str, budget: int
) -> None:
    # the other budgets are huge, so only the error's own class can end the retries
    kw: dict[str, object] = {"max_attempts_transient": 50, "max_attempts_throttled": 50, "max_attempts_failure": 50}
    kw[budget_field] = budget
    p = policy(**kw)
    decisions = [p.decide(error, failures) for failures in range(budget + 1)]
    assert [d.action for d in decisions] == ["retry"] * (budget - 1) + ["dead", "dead"]
    assert decisions[budget - 1].reason == "retries_exhausted"
    assert all(d.delay_s > 0 for d in decisions[: budget - 1])


def test_default_budgets() -> None:
    p = policy()
    assert (p.budget("transient"), p.budget("throttled"), p.budget("failure"), p.budget("ambiguous")) == (8, 10, 3, 1)
    assert p.decide(TransientError("x"), 6).action == "retry"
    assert p.decide(TransientError("x"), 7).action == "dead"
    assert p.decide(ThrottledError("x"), 8).action == "retry"
    assert p.decide(ThrottledError("x"), 9).action == "dead"
    assert p.decide(VendorFailure("x"), 1).action == "retry"
    assert p.decide(VendorFailure("x"), 2).action == "dead"


def test_retry_delays_follow_the_backoff_and_throttling_waits_four_times_longer() -> None:
    p = policy(retry_base_s=2.0, retry_max_s=10_000.0)
    for failures in range(4):
        ceiling = 2.0 * 2**failures
        transient = p.decide(TransientError("x"), failures).delay_s
        throttled = p.decide(ThrottledError("x"), failures).delay_s
        assert 0.5 * ceiling <= transient <= ceiling
        assert 0.5 * 4 * ceiling <= throttled <= 4 * ceiling


# --- backoff -----------------------------------------------------------------------------------------


def test_backoff_ceiling_grows_exponentially_and_is_capped() -> None:
    s = settings(retry_base_s=1.0, retry_max_s=30.0)

    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    ceilings = [backoff_s(s, n, rng=Top()) for n in range(8)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff_s(s, 3, base_s=3.0, rng=Top()) == 24.0
    assert backoff_s(s, 60, rng=Top()) == 30.0  # no overflow far out


def test_backoff_is_jittered_within_half_to_full_ceiling() -> None:
    s = settings(retry_base_s=1.0, retry_max_s=30.0)
    rng = random.Random(7)
    for n in (0, 2, 4, 9):
        ceiling = min(30.0, 2.0**n)
        samples = [backoff_s(s, n, rng=rng) for _ in range(300)]
        assert all(0.5 * ceiling <= x <= ceiling for x in samples)
        assert len(set(samples)) > 250  # jittered, not constant
        assert min(samples) < 0.6 * ceiling and max(samples) > 0.9 * ceiling  # spread over the range


def test_backoff_without_rng_uses_module_random_within_bounds() -> None:
    s = settings(retry_base_s=4.0, retry_max_s=600.0)
    samples = [backoff_s(s, 1) for _ in range(100)]
    assert all(4.0 <= x <= 8.0 for x in samples)


# --- quick retries -----------------------------------------------------------------------------------


class Flaky:
    """Raises the given errors in turn, then returns 'ok'."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_quick_retries_recover_from_transient_errors_using_the_injected_sleep() -> None:
    sleeps: list[float] = []
    fn = Flaky(TransientError("connect refused"), TransientError("HTTP 502"))
    assert call_with_quick_retries(fn, settings(quick_retries=3), sleep=sleeps.append) == "ok"
    assert fn.calls == 3
    assert len(sleeps) == 2
    assert all(0 < s <= 2.0 for s in sleeps)


def test_quick_retries_stop_after_quick_retries_attempts_and_reraise() -> None:
    sleeps: list[float] = []
    errors = [TransientError(f"down {i}") for i in range(10)]
    fn = Flaky(*errors)
    with pytest.raises(TransientError) as info:
        call_with_quick_retries(fn, settings(quick_retries=4, quick_retry_max_wait_s=0.3), sleep=sleeps.append)
    assert info.value is errors[3]  # the last attempt's own error, not a tenacity RetryError
    assert fn.calls == 4
    assert len(sleeps) == 3
    assert all(0 <= s <= 0.3 for s in sleeps)


def test_quick_retries_of_one_means_a_single_attempt() -> None:
    sleeps: list[float] = []
    fn = Flaky(TransientError("x"))
    with pytest.raises(TransientError):
        call_with_quick_retries(fn, settings(quick_retries=1), sleep=sleeps.append)
    assert (fn.calls, sleeps) == (1, [])


@pytest.mark.parametrize(
    "error",
    [
        ThrottledError("频率过快"),
        AmbiguousError("read timeout"),
        PermanentError("参数错误"),
        AccountDownError("已离线"),
        VendorFailure("失败"),
    ],
)
def test_quick_retries_never_repeat_other_errors(error: VendorError) -> None:
    sleeps: list[float] = []
    fn = Flaky(error)
    with pytest.raises(type(error)) as info:
        call_with_quick_retries(fn, settings(quick_retries=5), sleep=sleeps.append)
    assert info.value is error
    assert (fn.calls, sleeps) == (1, [])


def test_quick_retries_pass_a_success_through_without_sleeping() -> None:
    sleeps: list[float] = []
    fn = Flaky()
    assert call_with_quick_retries(fn, settings(), sleep=sleeps.append) == "ok"
    assert (fn.calls, sleeps) == (1, [])


def test_under_a_lease_each_retry_renews_first_and_a_lost_lease_stops_the_retries() -> None:
    from worker.execution.lease import call_under_lease

    events: list[str] = []
    fn = Flaky(TransientError("a"), TransientError("b"))

    def renew() -> bool:
        events.append(f"renew after {fn.calls}")
        return True

    assert call_under_lease(fn, settings(quick_retries=3), renew, sleep=lambda _: events.append("sleep")) == "ok"
    assert events == ["renew after 1", "sleep", "renew after 2", "sleep"]

    lost = TransientError("refused")
    fn = Flaky(lost, TransientError("never tried"))
    with pytest.raises(TransientError) as info:
        call_under_lease(fn, settings(quick_retries=3), lambda: False, sleep=lambda _: None)
    assert info.value is lost and fn.calls == 1  # the lease is no longer ours: no second call
