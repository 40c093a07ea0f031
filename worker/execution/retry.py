"""What to do after a failed attempt: the retry policy, per error class.

Two layers, as ``vendors.md`` asks. Inside one attempt, tenacity retries errors where the request provably
did not leave (connection refused, 5xx without an envelope) a few times with jittered waits of at most a
couple of seconds. Past that, the job goes back through the ``due`` sorted set with exponential backoff and
full jitter: nothing sleeps in a worker slot and no far-future Celery countdown exists. Each error class
has its own attempt budget; an ambiguous outcome is never resent unless the operator chose so.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

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
from worker.settings import Settings
from worker.store.deadletter import DeadReason

T = TypeVar("T")
Action = Literal["retry", "dead", "requeue"]


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's verdict on one failed attempt."""

    action: Action
    reason: str = ""
    delay_s: float = 0.0


def _is_quick_retryable(exc: BaseException) -> bool:
    return isinstance(exc, TransientError) and not isinstance(exc, ThrottledError)


def call_with_quick_retries(
    fn: Callable[[], T],
    settings: Settings,
    *,
    sleep: Callable[[float], None] | None = None,
    before_retry: Callable[[], bool] | None = None,
) -> T:
    """Run ``fn``, retrying not-sent transient errors a few times (bounded, jittered, sleep injectable).

    ``before_retry`` runs before each retry (the worker renews the account's lease there); when it
    answers False the retries stop and the last error is raised.
    """

    try:  # the usual case, a first try that works, without building tenacity's machinery
        return fn()
    except TransientError as exc:
        if not _is_quick_retryable(exc):
            raise
        first_failure: BaseException | None = exc

    def attempt() -> T:
        # tenacity's first attempt replays the failure above, so its counting, waits and hooks are unchanged
        nonlocal first_failure
        if first_failure is not None:
            failure, first_failure = first_failure, None
            raise failure
        return fn()

    def renew(state: RetryCallState) -> None:
        if before_retry is not None and not before_retry() and state.outcome is not None:
            raise state.outcome.exception()  # type: ignore[misc]

    retrying = Retrying(
        retry=retry_if_exception(_is_quick_retryable),
        stop=stop_after_attempt(settings.quick_retries),
        wait=wait_exponential_jitter(multiplier=0.1, max=settings.quick_retry_max_wait_s, jitter=0.2),
        before_sleep=renew,
        reraise=True,
    )
    if sleep is not None:
        retrying.sleep = sleep
    return retrying(attempt)


def backoff_s(
    settings: Settings, retries_so_far: int, *, base_s: float | None = None, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform(0.5, 1) × base × 2^n, capped."""
    base = settings.retry_base_s if base_s is None else base_s
    ceiling = min(settings.retry_max_s, base * float(2**retries_so_far))
    jitter = rng.uniform(0.5, 1.0) if rng is not None else random.uniform(0.5, 1.0)
    return jitter * ceiling


class RetryPolicy:
    """Maps an error and the job's past failures to retry / dead-letter / requeue."""

    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.rng = rng or random.Random()

    def budget(self, error_class: str) -> int:
        """Long attempts allowed for an error class."""
        s = self.settings
        return {
            "transient": s.max_attempts_transient,
            "throttled": s.max_attempts_throttled,
            "failure": s.max_attempts_failure,
        }.get(error_class, 1)

    def decide(self, error: VendorError, failures_of_class: int, *, unknown_outcome: str | None = None) -> Decision:
        """``failures_of_class``: earlier long retries of this job for the same error class.
        ``unknown_outcome``: the account's ``unknown_outcome`` option (``retry`` = at-least-once), which
        overrides the ``BROADCAST_AMBIGUOUS_POLICY`` default (``dead``)."""
        if isinstance(error, AccountDownError):
            return Decision("requeue", reason="account_down")
        if isinstance(error, PermanentError | UnsupportedError):
            return Decision("dead", reason=DeadReason.PERMANENT)
        if isinstance(error, AmbiguousError):
            policy = unknown_outcome or self.settings.ambiguous_policy
            if policy == "retry" and failures_of_class + 1 < self.settings.max_attempts_transient:
                return Decision("retry", delay_s=backoff_s(self.settings, failures_of_class, rng=self.rng))
            return Decision("dead", reason=DeadReason.UNKNOWN_OUTCOME)
        if isinstance(error, ThrottledError | TransientError | VendorFailure):
            # attempt number failures_of_class + 1 just failed; retry while the budget allows another
            if failures_of_class + 1 >= self.budget(error.error_class):
                return Decision("dead", reason=DeadReason.RETRIES_EXHAUSTED)
            base = self.settings.retry_base_s * (4 if isinstance(error, ThrottledError) else 1)
            return Decision("retry", delay_s=backoff_s(self.settings, failures_of_class, base_s=base, rng=self.rng))
        return Decision("dead", reason=DeadReason.PERMANENT)
