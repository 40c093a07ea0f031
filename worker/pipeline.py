"""Execute one batch of an account's jobs: the body of the Celery task, kept free of Celery.

A batch is what the dispatcher handed out under one lease: jobs of one account, sent strictly one after
another (the vendors' "one call at a time per account" rule). For each job: ``begin`` marks it
``sending`` in Redis, the vendor is called, ``finish`` records the ids or the failure with the decision of
the retry policy. A lost lease stops the batch at once (someone recovered it); a paused or down account
stops it and gives the rest back.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from worker.accounts import AccountStore
from worker.errors import AccountDownError, MessageError, ThrottledError, VendorError
from worker.holds import defer_if_held, hold_on_daily_cap
from worker.ledger import Ledger
from worker.logs import REDACTOR
from worker.ratelimit import local_day
from worker.retry import RetryPolicy, call_with_quick_retries
from worker.settings import Settings
from worker.stats import record_attempt
from worker.vendors.base import VendorBackend, backend_for

log = logging.getLogger("broadcast.send")


@dataclass(slots=True)
class BatchReport:
    """What a batch did, returned by the task (Flower shows it)."""

    account: str
    attempted: int = 0
    throttled: bool = False
    sent: int = 0
    retrying: int = 0
    dead: int = 0
    requeued: int = 0
    skipped: int = 0
    stopped: str = ""
    job_outcomes: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "sent": self.sent,
            "retrying": self.retrying,
            "dead": self.dead,
            "requeued": self.requeued,
            "skipped": self.skipped,
            "stopped": self.stopped,
        }


class BatchRunner:
    """Runs batches for one process; holds the Redis and HTTP clients it was given."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        accounts: AccountStore,
        http: httpx.Client,
        *,
        backend_factory: Callable[..., VendorBackend] = backend_for,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.accounts = accounts
        self.http = http
        self.backend_factory = backend_factory
        self.policy = policy or RetryPolicy(settings)
        self.sleep = sleep
        self.rng = random.Random()

    def run(self, account_id: str, token: str, job_ids: list[str]) -> BatchReport:
        """Send the batch's jobs in order; always gives unprocessed jobs back unless the lease was lost."""
        report = BatchReport(account=account_id)
        account = self.accounts.get(account_id)
        if account is None:
            report.stopped = "account_missing"
            self._dead_all(account_id, token, job_ids, report)
            self._durable(self.ledger.release, account_id, token)
            return report
        REDACTOR.add(account.spec.token.get_secret_value())
        backend = self.backend_factory(account.vendor_account(), self.http)
        deadline = time.monotonic() + self.settings.batch_max_s
        try:
            for job_id in job_ids:
                if time.monotonic() > deadline:
                    report.stopped = "batch_time"
                    break
                stop = self._one(account_id, account.spec.vendor, token, job_id, backend, report)
                if stop:
                    report.stopped = stop
                    break
        finally:
            if report.stopped != "lease_lost":
                limits = account.spec.limits
                vendor_limited = self._vendor_limited(account.spec.vendor)
                self._durable(
                    self.ledger.release,
                    account_id,
                    token,
                    attempted=report.attempted,
                    sent=report.sent,
                    local_day=local_day(time.time() + self.settings.clock_offset_s, limits.timezone),
                    throttled=report.throttled,
                    jitter_fraction=self.rng.random(),
                    windowed=limits.per_minute > 0,
                    vendor=account.spec.vendor if vendor_limited else "",
                )
        return report

    def _one(
        self, account_id: str, vendor: str, token: str, job_id: str, backend: VendorBackend, report: BatchReport
    ) -> str:
        begin = self.ledger.begin(account_id, token, job_id, lease_ttl_s=self.settings.lease_ttl_s)
        if begin.status == "lost":
            return "lease_lost"
        if begin.status == "paused":
            return "account_" + begin.why
        if begin.status != "go" or begin.job is None:
            report.skipped += 1
            report.job_outcomes[job_id] = "skipped:" + begin.why
            return ""
        job = begin.job
        report.attempted += 1
        started = time.time()
        entry: dict[str, Any] = {"n": job.attempts, "started": round(started, 6), "account": account_id}
        try:
            message = job.message().render(job.variables)
        except (MessageError, ValueError) as exc:
            entry.update(ended=round(time.time(), 6), outcome="dead", error_class="invalid_message", error=str(exc))
            self._durable(self.ledger.finish_dead,
                account_id, token, job_id, reason="invalid_message", error_class="invalid_message",
                error=str(exc), history=entry,
            )  # fmt: skip
            report.dead += 1
            self._log(job_id, account_id, vendor, "dead", started, error=str(exc))
            return ""
        if defer_if_held(self.ledger, self.accounts, account_id, token, job_id, message.kind, entry):  # worker/holds.py
            return ""
        try:
            result = call_with_quick_retries(
                lambda: backend.send(job.to, message),
                self.settings,
                sleep=self.sleep,
                before_retry=lambda: self.ledger.touch(account_id, token, lease_ttl_s=self.settings.lease_ttl_s),
            )
        except VendorError as error:
            if hold_on_daily_cap(self.ledger, self.accounts, account_id, token, job_id, message.kind, error, entry):
                return ""  # worker/holds.py: the kind waits for the account's next local day, other kinds go on
            stop = self._failed(account_id, vendor, token, job, error, entry, started, report)
            self._count(account_id, vendor, message.kind, entry["outcome"], entry["latency_ms"], error.error_class)
            return stop
        ended = time.time()
        entry.update(ended=round(ended, 6), latency_ms=round((ended - started) * 1000, 2), outcome="sent")
        entry.update({k: v for k, v in result.ids_as_strings().items() if v is not None})
        self._durable(self.ledger.finish_sent, account_id, token, job_id, result, entry)
        self._count(account_id, vendor, message.kind, "sent", entry["latency_ms"])
        report.sent += 1
        report.job_outcomes[job_id] = "sent"
        self._log(job_id, account_id, vendor, "sent", started, ids=result.ids_as_strings())
        return ""

    def _failed(
        self,
        account_id: str,
        vendor: str,
        token: str,
        job: Any,
        error: VendorError,
        entry: dict[str, Any],
        started: float,
        report: BatchReport,
    ) -> str:
        ended = time.time()
        decision = self.policy.decide(error, job.error_count(error.error_class))
        entry.update(
            ended=round(ended, 6),
            latency_ms=round((ended - started) * 1000, 2),
            outcome=decision.action,
            error_class=error.error_class,
            error=str(error),
            code=error.code,
        )
        if decision.action == "retry":
            self._durable(self.ledger.finish_retry,
                account_id, token, job.id, due_at=ended + decision.delay_s, error_class=error.error_class,
                error=str(error), history=entry,
            )  # fmt: skip
            report.retrying += 1
        elif decision.action == "requeue":
            self._durable(
                self.ledger.finish_requeue,
                account_id,
                token,
                job.id,
                error_class=error.error_class,
                error=str(error),
                history=entry,
            )
            report.requeued += 1
        else:
            self._durable(self.ledger.finish_dead,
                account_id, token, job.id, reason=decision.reason, error_class=error.error_class,
                error=str(error), history=entry,
            )  # fmt: skip
            report.dead += 1
        report.job_outcomes[job.id] = decision.action
        self._log(job.id, account_id, vendor, decision.action, started, error=str(error), error_class=error.error_class)
        if isinstance(error, AccountDownError):
            self.accounts.set_status(account_id, "down", str(error))
            return "account_down"
        if isinstance(error, ThrottledError):
            report.throttled = True
            return "throttled"
        return ""

    def _dead_all(self, account_id: str, token: str, job_ids: list[str], report: BatchReport) -> None:
        for job_id in job_ids:
            begin = self.ledger.begin(account_id, token, job_id, lease_ttl_s=self.settings.lease_ttl_s)
            if begin.status != "go":
                continue
            entry = {"n": 1, "started": time.time(), "outcome": "dead", "error_class": "config"}
            self._durable(self.ledger.finish_dead,
                account_id, token, job_id, reason="account_missing", error_class="config",
                error=f"account {account_id!r} is not configured", history=entry,
            )  # fmt: skip
            report.dead += 1

    def _vendor_limited(self, vendor: str) -> bool:
        try:
            return bool(self.ledger.redis.hexists(self.ledger.keys.vendor_limits, vendor))
        except redis.RedisError:
            return False

    def _durable(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Record an outcome even across a short Redis outage (restart, failover): the vendor call is done
        and its ids must reach the books. Gives up after the lease TTL; recovery takes over from there."""
        retrying = Retrying(
            retry=retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
            stop=stop_after_delay(self.settings.lease_ttl_s),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            reraise=True,
        )
        if self.sleep is not None:
            retrying.sleep = self.sleep
        return retrying(write, *args, **kwargs)

    def _count(
        self, account: str, vendor: str, kind: str, outcome: str, latency_ms: float, error_class: str | None = None
    ) -> None:
        record_attempt(
            self.ledger.redis, self.ledger.keys, account=account, vendor=vendor, kind=kind, outcome=outcome,
            latency_ms=latency_ms, error_class=error_class,
        )  # fmt: skip

    @staticmethod
    def _log(job_id: str, account: str, vendor: str, outcome: str, started: float, **extra: Any) -> None:
        log.info(
            "send %s",
            outcome,
            extra={
                "job_id": job_id,
                "account": account,
                "vendor": vendor,
                "outcome": outcome,
                "latency_ms": round((time.time() - started) * 1000, 2),
                **extra,
            },
        )
