"""Execute one session of an account's jobs: the body of the Celery task, kept free of Celery.

A session is what the dispatcher handed out under one lease: jobs of one account, sent strictly one after
another (the vendors' "one call at a time per account" rule). The dispatcher decided that the first may
start now; this runner paces the later ones itself with the same rules (:func:`worker.pacing.rules.allowance`
on Redis's clock), waiting between them while the next start is near (``BROADCAST_SESSION_HOLD_S``) and
handing the account back when it is far. Waiting costs nothing but a sleeping thread: a worker process
holds hundreds of sessions at once (Celery's threads pool, see ``docs/design.md``).

For each job: ``begin`` marks it ``sending`` in Redis (only once Redis TIME has reached its pacing start),
the vendor is called, ``finish`` records the ids or the failure with the decision of the retry policy and
how the call counts for pacing. A lost lease stops the session at once (someone recovered it); a paused
or down account stops it and gives the rest back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar, cast

import httpx
import redis
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from worker.errors import (
    AbandonedError,
    AccountDownError,
    AmbiguousError,
    DailyCapError,
    MessageError,
    NotFriendError,
    PermanentError,
    RevokeRefusedError,
    ThrottledError,
    UnsupportedError,
    VendorError,
)
from worker.execution.lease import call_under_lease
from worker.execution.retry import RetryPolicy
from worker.execution.threads import SessionThreads
from worker.logs import REDACTOR
from worker.messages import AnyMessage, SequenceMessage, SingleMessage
from worker.pacing.holds import account_holds, held, held_entry, hold_after_abandoned, hold_for_daily_cap
from worker.pacing.rules import PaceState, RedisClock, allowance, local_day, throttled_slowdown
from worker.settings import Settings
from worker.store.accounts import Account, AccountStore, KindHold, Status
from worker.store.audit import WORKER, AuditLog
from worker.store.deadletter import DeadReason
from worker.store.ledger import (
    Begin,
    BeginStatus,
    Finished,
    Job,
    Ledger,
    OpenedSession,
    PaceRecord,
    RecallOutcome,
    SessionOpening,
    sent_parts,
)
from worker.store.stats import AttemptCounters
from worker.store.suppressions import SuppressionReason, Suppressions
from worker.vendors.base import SendResult, VendorBackend, backend_for

log = logging.getLogger("broadcast.send")
T = TypeVar("T")

#: After a write the replicas did not acknowledge, the account waits at least this long before its next
#: session (a replica catching up, or a failover under way).
REPLICA_LAG_WAIT_S = 1.0
#: Campaign templates a process keeps parsed (a few campaigns run at once; each may be ~100 KB of XML).
CAMPAIGN_TEMPLATES_KEPT = 32
#: When a sequence finding its recipient held by another sequence tries again.
SEQUENCE_BUSY_RETRY_S = 2.0


def _call_of(job: Job) -> dict[str, str]:
    """The job's BEGIN call id, for a part record: PART end run twice (a retried write) applies once."""
    return {"call": job.fields["call"]} if job.fields.get("call") else {}


class SessionStop(StrEnum):
    """Why a session ended before its last job (``stopped`` in its report; none when it sent them all)."""

    LEASE_LOST = "lease_lost"  # recovered meanwhile: its jobs are no longer this session's
    CHANGED = "changed"  # its lease was flagged (priority, pause, cancel, edit): the next session starts afresh
    ACCOUNT_DOWN = "account_down"  # the vendor says the account is offline or its token expired
    THROTTLED = "throttled"  # the vendor asked to slow down: the account waits its slowed gap outside a session
    PACED = "paced"  # the next start is further away than BROADCAST_SESSION_HOLD_S
    BATCH_TIME = "batch_time"  # the session has run BROADCAST_BATCH_MAX_S
    ACCOUNT_MISSING = "account_missing"  # the account was deleted: its jobs are dead-lettered
    COOLDOWN = "cooldown"  # a call was abandoned unanswered: the account waits BROADCAST_ABANDONED_COOLDOWN_S
    REPLICA_LAG = "replica_lag"  # a BEGIN or FINISH was not on the replicas in time (BROADCAST_REPLICA_ACKS)
    ERROR = "error"  # a bug: logged, the account's jobs are released


@dataclass(slots=True)
class SessionReport:
    """What a session did, returned by the task (Flower shows it)."""

    account: str
    attempted: int = 0
    sent: int = 0
    retrying: int = 0
    dead: int = 0
    requeued: int = 0
    skipped: int = 0
    revoked: int = 0
    stopped: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "sent": self.sent,
            "revoked": self.revoked,
            "retrying": self.retrying,
            "dead": self.dead,
            "requeued": self.requeued,
            "skipped": self.skipped,
            "stopped": self.stopped,
        }


@dataclass(frozen=True, slots=True)
class _Opened:
    """What a session's first round trip read besides the account: its pacing state and Redis's clock."""

    pace: dict[str, str]
    window: list[str]
    clock: RedisClock
    #: the first job's BEGIN when it was part of that round trip (at the dispatcher's start: CLAIM found it
    #: may start now), with the campaign templates it brought
    first: Begin | None
    templates: dict[str, str]


@dataclass(slots=True)
class Session:
    """One claimed session: the account, its lease, and its pacing state as this runner advances it."""

    account: Account
    token: str
    backend: VendorBackend
    state: PaceState
    clock: RedisClock
    vendor_limited: bool
    templates: dict[str, str]
    report: SessionReport
    #: message kinds held for the account (a daily cap), as read at the start and set since
    holds: dict[str, KindHold]
    #: message templates parsed so far, by their stored JSON
    parsed: dict[str, AnyMessage] = field(default_factory=dict)
    #: Redis time before which the account must not send again (a call abandoned unanswered), 0 = none
    cooldown_until: float = 0.0
    #: the session already ended in its last job's FINISH (no RELEASE of its own)
    released: bool = False
    #: ``time.monotonic()`` after which the session starts no further job (``BROADCAST_BATCH_MAX_S``)
    deadline: float = float("inf")

    @property
    def id(self) -> str:
        return self.account.id


class SessionRunner:
    """Runs sessions for one process (from many threads at once); holds the clients it was given."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        accounts: AccountStore,
        http: httpx.Client | Sequence[httpx.Client],
        *,
        backend_factory: Callable[..., VendorBackend] = backend_for,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.accounts = accounts
        #: vendor clients; an account always uses the same one (its keep-alive connections stay warm)
        self.http = [http] if isinstance(http, httpx.Client) else list(http)
        self.backend_factory = backend_factory
        self.policy = policy or RetryPolicy(settings)
        self.sleep = sleep
        self.rng = random.Random()
        self.counters = AttemptCounters(ledger.redis, ledger.keys)
        self.suppressions = Suppressions(ledger.redis, ledger.prefix)
        #: what the worker changes on its own (an account down or auto-paused, a recipient who is not a
        #: friend) is on the record as an operator's change is, under the key "worker"
        self.audit = AuditLog(ledger.redis, ledger.prefix, settings.audit_retention_days * 86400)
        self._vendor_limits: tuple[float, set[str]] = (0.0, set())
        #: campaign message templates parsed in this process, by their stored JSON (bounded)
        self._campaign_templates: dict[str, AnyMessage] = {}
        #: threads for the sessions of a bundle beyond its first (at most the sessions in flight)
        self._sessions = SessionThreads(settings.worker_concurrency)
        #: sessions given to those threads and not ended (queued ones too)
        self._threads_busy = 0
        self._threads_lock = threading.Lock()
        self._vendor_limits_lock = threading.Lock()

    def run_many(self, sessions: Sequence[tuple[str, str, list[str], str]]) -> list[SessionReport]:
        """Run sessions side by side: the first in the calling thread, the others on this process's session
        threads; return when all have ended. A session that fails is reported, never fails the others.
        They start together (the dispatcher claimed them in one round), so their first round trips are made
        as one (:meth:`_open_together`)."""
        if not sessions:
            return []
        calls = [os.urandom(8).hex() for _ in sessions]
        with self._threads_lock:  # only sessions that will have a thread at once begin their first job now
            idle = self.settings.worker_concurrency - self._threads_busy
            self._threads_busy += len(sessions) - 1
        together = 1 + min(len(sessions) - 1, max(0, idle))
        opened = self._open_together(sessions[:together], calls[:together]) + [None] * (len(sessions) - together)
        futures = [
            self._sessions.submit(self._run_on_thread, *session, call=call, opened=got)
            for session, call, got in zip(sessions[1:], calls[1:], opened[1:], strict=True)
        ]
        first = self._run_safely(*sessions[0], call=calls[0], opened=opened[0])
        return [first, *(f.result() for f in futures)]

    def _run_on_thread(self, *session: Any, **options: Any) -> SessionReport:
        """A session on this process's session threads (counted: see :meth:`run_many`)."""
        try:
            return self._run_safely(*session, **options)
        finally:
            with self._threads_lock:
                self._threads_busy -= 1

    def _open_together(
        self, sessions: Sequence[tuple[str, str, list[str], str]], calls: list[str]
    ) -> list[tuple[OpenedSession, dict[str, str]] | None]:
        """The first round trip of every session of a bundle in one (what each would read and BEGIN on its
        own, :meth:`Ledger.open_sessions`): one round trip instead of one per session. None for a session
        that must read on its own: an error in its part, or all of them when the round trip failed (each
        then reads with its ``call``: a BEGIN that ran answers the same). Only sessions that have a thread
        at once are opened here: a first job marked ``sending`` must not wait for a thread while its
        lease runs out (recovery would take it for an unknown outcome)."""
        if len(sessions) < 2:
            return [None] * len(sessions)
        openings = [
            SessionOpening(account, token, job_ids[0] if job_ids else None, call, {})
            for (account, token, job_ids, _), call in zip(sessions, calls, strict=True)
        ]
        try:
            got = self.ledger.open_sessions(openings, lease_ttl_s=self.settings.lease_ttl_s)
        except (redis.ConnectionError, redis.TimeoutError):
            return [None] * len(sessions)
        return [
            None if isinstance(one, Exception) else (one, opening.templates)
            for one, opening in zip(got, openings, strict=True)
        ]

    def _run_safely(
        self,
        account_id: str,
        token: str,
        job_ids: list[str],
        groups: str,
        *,
        call: str = "",
        opened: tuple[OpenedSession, dict[str, str]] | None = None,
    ) -> SessionReport:
        try:
            return self.run(account_id, token, job_ids, groups, call=call, opened=opened)
        except Exception as exc:
            # the session released its account if it could; its lease expires otherwise (recovered)
            log.exception("session failed", extra={"account": account_id})
            return SessionReport(account=account_id, stopped=f"{SessionStop.ERROR}: {type(exc).__name__}")

    def run(
        self,
        account_id: str,
        token: str,
        job_ids: list[str],
        groups: str = "",
        *,
        call: str = "",
        opened: tuple[OpenedSession, dict[str, str]] | None = None,
    ) -> SessionReport:
        """Send the session's jobs in order, paced; always gives unprocessed jobs back unless the lease
        was lost. ``groups`` has a '1' per job whose recipient is a group (its gap is the group gap).
        ``opened``: the session's first round trip, made with its bundle's (else made here, its BEGIN
        named ``call``)."""
        report = SessionReport(account=account_id)
        if opened is None:
            first_job = job_ids[0] if job_ids else None
            account, opened_ = self._durable(self._read, account_id, token, first_job, call or os.urandom(8).hex())
        else:
            account, opened_ = self._from_opening(account_id, *opened)
        return self._run_opened(account_id, token, job_ids, groups, report, account, opened_)

    def _run_opened(
        self,
        account_id: str,
        token: str,
        job_ids: list[str],
        groups: str,
        report: SessionReport,
        account: Account | None,
        opened: _Opened,
    ) -> SessionReport:
        """The session once its first round trip is read (:meth:`run`)."""
        if account is None:
            report.stopped = SessionStop.ACCOUNT_MISSING
            self._dead_all(account_id, token, job_ids, report, opened.first)
            self._durable(self.ledger.release, account_id, token)
            return report
        if account.token_unreadable:
            # a token none of this worker's keys opens reads as "": never send with it (a one-step key
            # rotation); the jobs go back untouched and the account waits for an operator
            reason = "token not readable with BROADCAST_SECRET_KEY (rotate keys in two phases)"
            self._give_back(account_id, token, opened.first, "config", reason)
            self._durable(self._account_status, account_id, "down", reason, "account.down")
            report.stopped = SessionStop.ACCOUNT_DOWN
            self._durable(self.ledger.release, account_id, token)
            return report
        REDACTOR.add(account.spec.token.get_secret_value())
        try:
            session = self._open(account, token, report, opened)
        except Exception as exc:
            # give the jobs back at once rather than when the lease runs out
            self._give_back(
                account_id, token, opened.first, "error", f"the session could not start: {type(exc).__name__}"
            )
            self._durable(self.ledger.release, account_id, token)
            raise
        session.deadline = time.monotonic() + self.settings.batch_max_s
        #: the kind (group or not) of the job the account gives back first, when known: its moment is exact
        next_group: bool | None = None
        try:
            for i, job_id in enumerate(job_ids):
                group = groups[i : i + 1] == "1"
                start_at = self._next_start(session, group)
                stop = self._too_far(session, start_at) if i > 0 else None
                if stop is not None:
                    report.stopped = stop
                    next_group = group
                    break
                begun = opened.first if i == 0 else None
                last = i == len(job_ids) - 1
                following = None if last else groups[i + 1 : i + 2] == "1"
                stop = self._one(session, job_id, start_at, group, last=last, begun=begun, following=following)
                if stop is not None:
                    report.stopped = stop
                    if stop in (SessionStop.PACED, SessionStop.BATCH_TIME):
                        next_group = following
                    break
        finally:
            if report.stopped != SessionStop.LEASE_LOST and not session.released:
                next_at = self._release_at(session, next_group, report.stopped)
                self._durable(self.ledger.release, account_id, token, next_at=next_at)
        return report

    def _too_far(self, session: Session, start_at: float) -> SessionStop | None:
        """Why the session hands its account back rather than wait for ``start_at`` (its next job's start,
        Redis time): further away than ``BROADCAST_SESSION_HOLD_S``, or past the session's time. None: wait."""
        wait = start_at - session.clock.now()
        if wait > self.settings.session_hold_s:
            return SessionStop.PACED
        if time.monotonic() + wait > session.deadline:
            return SessionStop.BATCH_TIME
        return None

    def _release_at(
        self, session: Session, next_group: bool | None, stopped: str = "", *, start_at: float | None = None
    ) -> float:
        """When the account may start its next session: its next job's start when the kind (group or not)
        of the job it gives back first is known (``start_at`` when the caller worked it out already), else
        the earlier of the two; never in a cool-down."""
        next_at = self._next_start(session, next_group) if start_at is None else start_at
        next_at = max(next_at, session.cooldown_until)
        if stopped == SessionStop.REPLICA_LAG:
            next_at = max(next_at, session.clock.latest() + REPLICA_LAG_WAIT_S)
        return next_at

    # --- one session ----------------------------------------------------------------------------------

    def _read(self, account_id: str, token: str, first_job: str | None, call: str) -> tuple[Account | None, _Opened]:
        """The account, its pacing state, Redis's clock and (when nothing must acknowledge it first) the first
        job's BEGIN, in the session's one first round trip. ``call`` names that BEGIN: this read retried after
        a lost reply finds it done and answering the same."""
        templates: dict[str, str] = {}
        got = self.ledger.open_session(
            account_id, token, first_job, lease_ttl_s=self.settings.lease_ttl_s, call=call, templates=templates
        )
        return self._from_opening(account_id, got, templates)

    def _from_opening(
        self, account_id: str, got: OpenedSession, templates: dict[str, str]
    ) -> tuple[Account | None, _Opened]:
        """The account and what the session's first round trip read (``templates``: filled by its BEGIN)."""
        clock = RedisClock(got.redis_time, got.sent, got.received)
        opened = _Opened(got.pace, got.window, clock, got.first, templates)
        return self.accounts.from_hash(account_id, got.account), opened

    def _give_back(self, account_id: str, token: str, begun: Begin | None, error_class: str, error: str) -> None:
        """The first job, marked ``sending`` in the session's first round trip, goes back to the head of its
        queue, its attempt not counted, when the session cannot start: no vendor call was made."""
        if begun is None or begun.status is not BeginStatus.GO or begun.job is None:
            return
        entry = self._entry(begun.job, time.time(), account_id)
        entry.update(ended=entry["started"], outcome="requeue", error_class=error_class, error=error)
        self._durable(self.ledger.finish_requeue,
            account_id, token, begun.job.id, error_class=error_class, error=error, history=entry, pace=None,
        )  # fmt: skip

    def _open(self, account: Account, token: str, report: SessionReport, opened: _Opened) -> Session:
        """The session, from what its first round trip read."""
        return Session(
            account=account,
            token=token,
            backend=self.backend_factory(account.vendor_account(), self._http_for(account.id)),
            state=PaceState.from_redis(opened.pace, opened.window),
            clock=opened.clock,
            vendor_limited=account.spec.vendor in self._limited_vendors(),
            templates=opened.templates,
            report=report,
            holds=account_holds(account),
        )

    def _template(self, session: Session, job: Job) -> AnyMessage:
        """The job's message before personalisation, parsed once per session, and a campaign's once per
        process (its accounts' sessions all share it; messages are frozen, so sharing is safe)."""
        own = job.fields.get("message")
        cache = session.parsed if own else self._campaign_templates
        raw = own or job.campaign_message
        parsed = cache.get(raw)
        if parsed is None:
            if not own and len(cache) >= CAMPAIGN_TEMPLATES_KEPT:
                cache.clear()
            parsed = cache[raw] = job.message()
        return parsed

    def _next_start(self, session: Session, group: bool | None) -> float:
        """When the account's next send may start (Redis time), by the one set of pacing rules: to a group
        (``group``), to a person, or the earlier of the two (None)."""
        got = allowance(
            session.account.spec.limits,
            session.state,
            session.clock.now(),
            unpaced_batch=self.settings.batch_size,
            clock_offset_s=self.settings.clock_offset_s,
        )
        if group is None:
            return min(got.group_at, got.private_at)
        return got.group_at if group else got.private_at

    def _begin(self, session: Session, job_id: str, start_at: float) -> Begin:
        """BEGIN once Redis's clock has reached ``start_at`` (it refuses earlier starts and says how much).
        One id for the call: a BEGIN retried after a lost reply answers as the first did."""
        call = os.urandom(8).hex()
        for _ in range(10):
            wait = start_at - session.clock.now()
            if wait > 0:
                self._sleep(wait)
            sent = time.monotonic()
            begin = self._durable(
                self.ledger.begin,
                session.id,
                session.token,
                job_id,
                lease_ttl_s=self.settings.lease_ttl_s,
                not_before=start_at,
                templates=session.templates,
                recipient_cap=cap.as_args() if (cap := session.account.spec.limits.recipient_cap) else None,
                call=call,
            )
            received = time.monotonic()
            if begin.status is BeginStatus.EARLY:
                session.clock.sync(start_at - begin.wait_s, sent, received)
                continue
            if begin.redis_now:
                session.clock.sync(begin.redis_now, sent, received)
            return cast(Begin, begin)
        return cast(Begin, begin)

    def _one(
        self,
        session: Session,
        job_id: str,
        start_at: float,
        group: bool = False,
        *,
        last: bool = False,
        begun: Begin | None = None,
        following: bool | None = None,
    ) -> SessionStop | None:
        """One job: begin (unless it was ``begun`` in the session's first round trip), send, finish. Returns
        why the session must stop, or None to go on. A sent job ends the session in its FINISH (one round
        trip fewer) when it is the ``last`` or when the next job (to a group: ``following``) starts too far
        away to wait for (``PACED``/``BATCH_TIME``, as the session's loop would find before it)."""
        report = session.report
        begin = begun if begun is not None else self._begin(session, job_id, start_at)
        if begin.status is BeginStatus.LOST:
            return SessionStop.LEASE_LOST
        if begin.status is BeginStatus.YIELD:
            return SessionStop.CHANGED  # the next session is claimed under the new state (priority, pause, cancel…)
        if begin.status is not BeginStatus.GO or begin.job is None:
            report.skipped += 1
            return None
        job = begin.job
        if not begin.confirmed:
            return self._unconfirmed(session, job)
        report.attempted += 1
        if job.revoke_of is not None:
            return self._revoke(session, job, job.revoke_of)
        started = time.time()
        entry = self._entry(job, started, session.id)
        vendor = session.account.spec.vendor
        try:
            message = self._template(session, job).render(job.variables)
        except (MessageError, ValueError) as exc:
            self._invalid(session, job, entry, started, exc)
            return None
        if isinstance(message, SequenceMessage):
            return self._sequence(session, job, message, group)
        hold = held(session.holds, message.kind)
        if hold is not None:  # this kind is held for the account (a daily cap): wait for its end, no vendor call
            self._defer(session, job, entry, hold, None)
            return None
        try:
            result = self._under_lease(session, lambda: session.backend.send(job.to, message))
        except MessageError as exc:
            # raised while building the request, before anything was written: never sent
            self._invalid(session, job, entry, started, exc)
            return None
        except VendorError as error:
            if isinstance(error, DailyCapError):  # the kind waits for the account's next local day; others go on
                hold = hold_for_daily_cap(
                    self.accounts, session.account, message.kind, error, clock_offset_s=self.settings.clock_offset_s
                )
                session.holds[message.kind] = hold
                record = self._pace_record(session, sent=False, throttled=False)
                self._defer(session, job, entry, hold, record, code=error.code)
                return None
            return self._failed(session, job, message, error, entry, started)
        except Exception as exc:
            # a bug reading the vendor's answer: the request did leave, so the outcome is unknown
            log.exception("unexpected error in a vendor call", extra={"job_id": job.id, "account": session.id})
            unreadable = AmbiguousError(
                f"the vendor's answer could not be processed ({type(exc).__name__})", vendor=vendor
            )
            return self._failed(session, job, message, unreadable, entry, started)
        ended = time.time()
        entry.update(ended=round(ended, 6), latency_ms=round((ended - started) * 1000, 2), outcome="sent")
        entry.update({k: v for k, v in result.ids_as_strings().items() if v is not None})
        record = self._pace_record(session, sent=True, throttled=False)
        # FINISH records `record` as is: the state it leaves, and so the account's next moment, are known now
        self._advance(session, record)
        next_at = None if last else self._next_start(session, following)
        paced = None if next_at is None else self._too_far(session, next_at)
        release_at = self._release_at(session, following, start_at=next_at) if last or paced else None
        finished = self._durable(self.ledger.finish_sent,
            session.id, session.token, job.id, result, entry, pace=record, release_at=release_at,
        )  # fmt: skip
        session.released = finished.released is not None
        self.counters.record(
            account=session.id, vendor=vendor, kind=message.kind, outcome="sent", latency_ms=entry["latency_ms"]
        )
        report.sent += 1
        self._log(job.id, session.id, vendor, "sent", started, ids=result.ids_as_strings())
        return self._stop_unless_confirmed(session, job, finished) or paced

    @staticmethod
    def _entry(job: Job, started: float, account: str) -> dict[str, Any]:
        """The attempt's history entry; ``call`` (its BEGIN's id) lets FINISH recognise itself run twice."""
        entry: dict[str, Any] = {"n": job.attempts, "started": round(started, 6), "account": account}
        if job.fields.get("call"):
            entry["call"] = job.fields["call"]
        return entry

    def _unconfirmed(self, session: Session, job: Job) -> SessionStop:
        """The ``sending`` mark did not reach the replicas in time (BROADCAST_REPLICA_ACKS): a failover now
        could bring the job back ``queued`` after a send, so the vendor is not called. The job goes back to
        the head of its queue (the attempt not counted) and the account waits a moment."""
        error = "the send's mark was not on a replica in time (BROADCAST_REPLICA_ACKS): not sent, tried again"
        entry = self._entry(job, time.time(), session.id)
        entry.update(ended=entry["started"], outcome="requeue", error_class="replica_lag", error=error)
        self._durable(self.ledger.finish_requeue,
            session.id, session.token, job.id, error_class="replica_lag", error=error, history=entry, pace=None,
        )  # fmt: skip
        session.report.requeued += 1
        log.warning("send put back: %s", error, extra={"job_id": job.id, "account": session.id})
        return SessionStop.REPLICA_LAG

    @staticmethod
    def _stop_unless_confirmed(session: Session, job: Job, finished: Finished) -> SessionStop | None:
        """An outcome the replicas did not acknowledge in time may be lost in a failover: the job would then
        be ``sending`` on the new primary, an unknown outcome at recovery, never resent. The session stops
        rather than build on it; the account waits a moment."""
        if finished.confirmed:
            return None
        log.warning(
            "outcome not on a replica in time (BROADCAST_REPLICA_ACKS): session stopped",
            extra={"job_id": job.id, "account": session.id},
        )
        return SessionStop.REPLICA_LAG

    # --- sequences (docs/design.md, "Sequences") -----------------------------------------------------------

    def _sequence(self, session: Session, job: Job, message: SequenceMessage, group: bool) -> SessionStop | None:
        """A sequence job: its parts in order, each its own vendor call fenced by PART begin/end, the
        account's gap held between them. The first part fails like a single send (retried, deferred,
        dead); a later part that does not go out stops the rest (``skipped``), never retried on its own, so
        the parts never arrive apart. A replay resumes at the first part not sent."""
        parts = message.parts
        start = int(job.fields.get("part") or 0)
        first: SendResult | None = SendResult.from_dict({**job.fields, "to": job.to}) if start else None
        try:
            for k in range(start, len(parts)):
                part = parts[k]
                at = self._part_start(session, group) if k > start else 0.0
                began = self._part_begin(session, job, k, len(parts), at)
                if began == "lost":
                    return SessionStop.LEASE_LOST
                if began == "busy":  # another sequence is sending to this recipient
                    if k == start:
                        self._wait_turn(session, job)
                        return None
                    return self._part_failed(session, job, k, part, None, "another sequence took the recipient")
                outcome = self._part_call(session, job, k, part, first is None)
                if isinstance(outcome, SendResult):
                    first = first or outcome
                    continue
                return outcome
            assert first is not None  # the loop ran at least once: a sequence has a part
            entry = self._entry(job, time.time(), session.id)
            entry.update(parts=len(parts), outcome="sent", ended=round(time.time(), 6))
            done = self._durable(self.ledger.finish_sent, session.id, session.token, job.id, first, entry, pace=None)
            return self._stop_unless_confirmed(session, job, done)
        finally:
            self._durable(self.ledger.part_unlock, session.id, session.token, job.id)

    def _part_start(self, session: Session, group: bool) -> float:
        """When a sequence's next part may start: the account's gap and per-minute rate, by the same rules
        as any send. A sequence under way finishes: its later parts do not wait for a daily cap reached or
        quiet hours begun meanwhile (that would hold the rest for hours, apart from the first parts)."""
        limits = session.account.spec.limits.model_copy(update={"daily_cap": 0, "quiet_hours": None})
        got = allowance(limits, session.state, session.clock.now(), unpaced_batch=self.settings.batch_size)
        return got.group_at if group else got.private_at

    def _part_begin(self, session: Session, job: Job, k: int, of: int, at: float) -> str:
        """PART begin once Redis's clock reached ``at``; the lease is renewed while waiting for it."""
        for _ in range(1000):
            wait = at - session.clock.now()
            if wait > 0:
                self._sleep(min(wait, self.settings.lease_ttl_s / 3))
                if wait > self.settings.lease_ttl_s / 3:
                    self._durable(self.ledger.touch, session.id, session.token, lease_ttl_s=self.settings.lease_ttl_s)
                    continue
            sent = time.monotonic()
            began = self._durable(
                self.ledger.part_begin,
                session.id,
                session.token,
                job.id,
                k,
                of=of,
                not_before=at,
                lease_ttl_s=self.settings.lease_ttl_s,
            )
            received = time.monotonic()
            if began.status == "early":
                session.clock.sync(at - float(began.detail), sent, received)
                continue
            if began.status == "go":
                session.clock.sync(float(began.detail), sent, received)
            return str(began.status)
        return "lost"

    def _part_call(
        self, session: Session, job: Job, k: int, part: SingleMessage, first: bool
    ) -> SendResult | SessionStop | None:
        """One part's vendor call and its PART end: the result when sent, else what the session does."""
        started = time.time()
        entry = self._entry(job, started, session.id)
        entry["part"] = k
        vendor = session.account.spec.vendor
        hold = held(session.holds, part.kind)
        if hold is not None:
            if first:  # nothing went out yet: the whole sequence waits for the hold's end, like a single send
                self._defer(session, job, entry, hold, None)
                return None
            return self._part_failed(session, job, k, part, None, f"{part.kind} held: {hold.reason}")
        try:
            result = self._under_lease(session, lambda: session.backend.send(job.to, part))
        except MessageError as exc:
            if first:
                self._invalid(session, job, entry, started, exc)
                return None
            return self._part_failed(session, job, k, part, None, str(exc))
        except VendorError as error:
            if first:  # nothing went out yet: the first part fails like a single send
                if isinstance(error, DailyCapError):
                    hold = hold_for_daily_cap(
                        self.accounts, session.account, part.kind, error, clock_offset_s=self.settings.clock_offset_s
                    )
                    session.holds[part.kind] = hold
                    self._defer(session, job, entry, hold, self._pace_record(session, sent=False, throttled=False))
                    return None
                return self._failed(session, job, part, error, entry, started)
            return self._part_failed(session, job, k, part, error, str(error))
        except Exception as exc:
            log.exception("unexpected error in a vendor call", extra={"job_id": job.id, "account": session.id})
            unreadable = AmbiguousError(
                f"the vendor's answer could not be processed ({type(exc).__name__})", vendor=vendor
            )
            if first:
                return self._failed(session, job, part, unreadable, entry, started)
            return self._part_failed(session, job, k, part, unreadable, str(unreadable))
        latency = round((time.time() - started) * 1000, 2)
        record: dict[str, Any] = {"status": "sent", "kind": part.kind, "endpoint": result.endpoint, **_call_of(job)}
        record.update({key: v for key, v in result.ids_as_strings().items() if v is not None})
        record.update(result.media)
        record["sent_at"] = round(time.time(), 6)
        ids = None
        if first:  # the job's own ids are its first part's: the recall window counts from its createTime
            ids = {"vendor": result.vendor, "endpoint": result.endpoint, "has_ids": "1" if result.has_ids else "0"}
            ids["sent_at"] = f"{time.time():.6f}"
            ids.update({key: v for key, v in result.ids_as_strings().items() if v is not None})
        pace = self._pace_record(session, sent=True, throttled=False)
        finished = self._durable(self.ledger.part_end,
            session.id, session.token, job.id, k, record, advance=True, pace=pace, ids=ids,
            lease_ttl_s=self.settings.lease_ttl_s,
        )  # fmt: skip
        self._advance(session, pace)
        self.counters.record(account=session.id, vendor=vendor, kind=part.kind, outcome="sent", latency_ms=latency)
        self._log(job.id, session.id, vendor, "sent", started, part=k, ids=result.ids_as_strings())
        if finished.status != "ok":
            return SessionStop.LEASE_LOST
        session.report.sent += 1
        return result

    def _part_failed(
        self, session: Session, job: Job, k: int, part: SingleMessage, error: VendorError | None, text: str
    ) -> SessionStop | None:
        """A later part did not go out (or may have): it is recorded, the rest are skipped, the job is
        dead (``unknown_outcome`` when that part may have gone out, else ``sequence_stopped``)."""
        unknown = isinstance(error, AmbiguousError)
        record: dict[str, Any] = {"status": "unknown" if unknown else "dead", "kind": part.kind, "error": text}
        record.update(_call_of(job))
        if error is not None:
            record.update(error_class=error.error_class, code=error.code)
        throttled = isinstance(error, ThrottledError)
        pace = self._pace_record(session, sent=False, throttled=throttled) if error is not None else None
        finished = self._durable(self.ledger.part_end,
            session.id, session.token, job.id, k, record, advance=False, pace=pace,
            lease_ttl_s=self.settings.lease_ttl_s,
        )  # fmt: skip
        if pace is not None:
            self._advance(session, pace)
        reason = DeadReason.UNKNOWN_OUTCOME if unknown else DeadReason.SEQUENCE_STOPPED
        if isinstance(error, PermanentError):
            reason = DeadReason.PERMANENT
        error_class = error.error_class if error is not None else "sequence"
        message = f"part {k + 1} ({part.kind}): {text}; remaining parts: skipped"
        entry = self._entry(job, time.time(), session.id)
        entry.update(part=k, outcome="dead", error_class=error_class, error=message, ended=round(time.time(), 6))
        done = self._durable(self.ledger.finish_dead,
            session.id, session.token, job.id, reason=reason, error_class=error_class, error=message,
            history=entry, pace=None,
        )  # fmt: skip
        session.report.dead += 1
        if isinstance(error, NotFriendError) and done.status == "ok":  # as for a single send (suppressed)
            self._not_a_friend(session, job, error)
        vendor = session.account.spec.vendor
        self.counters.record(account=session.id, vendor=vendor, kind=part.kind, outcome="dead", latency_ms=0.0,
                             error_class=error_class)  # fmt: skip
        self._log(job.id, session.id, vendor, "dead", time.time(), part=k, error=message)
        if isinstance(error, AccountDownError):
            self._account_status(session.id, "down", str(error), "account.down")
            return SessionStop.ACCOUNT_DOWN
        if throttled:
            self._pause_if_restricted(session, finished, error)  # type: ignore[arg-type]
            return SessionStop.THROTTLED
        cooling = self._cool_down(session, error) if error is not None else None
        return self._stop_unless_confirmed(session, job, done) or cooling

    def _hold_gap(self, session: Session, *, group: bool) -> None:
        """Between two revoke calls of one revoke job (a sequence's parts): count the call that just ended
        in the session's pacing state and wait the account's gap (FINISH records the last call)."""
        record = self._pace_record(session, sent=False, throttled=False)
        session.state = session.state.after_call(
            record.ended, fraction=record.fraction, slowdown=None, day=record.day, day_sends=record.day_sends,
            keep=record.keep,
        )  # fmt: skip
        wait = self._next_start(session, group) - session.clock.now()
        if wait > 0:
            self._sleep(wait)

    def _wait_turn(self, session: Session, job: Job) -> None:
        """Another sequence holds the recipient: this one goes back through the due set, no vendor call."""
        entry = self._entry(job, time.time(), session.id)
        error = "another sequence is sending to this recipient; waiting for it to end"
        entry.update(outcome="retry", error_class="sequence_busy", error=error, ended=round(time.time(), 6))
        self._durable(self.ledger.finish_retry,
            session.id, session.token, job.id, due_at=time.time() + SEQUENCE_BUSY_RETRY_S,
            error_class="sequence_busy", error=error, history=entry, pace=None,
        )  # fmt: skip
        session.report.retrying += 1

    def _revoke(self, session: Session, job: Job, target_id: str) -> SessionStop | None:
        """A revoke job: the vendor's revoke with the exact ids its send returned, only while the window is
        open on Redis's clock (read at its latest, right before the call). Never retried past the quick
        retries of a request that provably did not leave: an unreadable answer is ``failed`` (exactly once)."""
        started = time.time()
        entry = self._entry(job, started, session.id)
        entry.update(op="revoke", target=target_id)
        target = self._durable(self.ledger.get, target_id)
        deadline = float(job.fields.get("deadline") or 0)
        outcome, error, called, throttled = RecallOutcome.RECALLED, "", False, False
        down: AccountDownError | None = None
        abandoned: AbandonedError | None = None
        parts = sent_parts(target) if target is not None else []
        if target is None or (target.state != "sent" and not parts):
            outcome, error = RecallOutcome.FAILED, "the message is no longer on the books"
        elif session.clock.latest() > deadline:
            outcome, error = RecallOutcome.TOO_LATE, f"the revoke window ended at {deadline:.3f}"
        else:
            # a sequence revokes every part that went out, in order, each while the window is open and
            # the account's gap after the previous call; a part its vendor cannot revoke does not stop the others
            todo = [(i, sent) for i, sent in parts] or [(0, SendResult.from_dict({**target.fields, "to": target.to}))]
            refused: list[str] = []
            taken: list[int] = []  # the parts the vendor took back (1-based)
            for n, (index, sent) in enumerate(todo):
                where = f"part {index + 1}: " if parts else ""
                if n:
                    if called:
                        self._hold_gap(session, group=target.to.endswith("@chatroom"))
                    if session.clock.latest() > deadline:
                        refused.append(f"{where}the revoke window ended at {deadline:.3f}")
                        continue
                try:
                    self._under_lease(session, lambda sent=sent: session.backend.revoke(sent))  # type: ignore[misc]
                    called = True
                    taken.append(index + 1)
                except UnsupportedError as exc:  # decided without a request
                    outcome, error = RecallOutcome.UNSUPPORTED, str(exc)
                    break
                except (RevokeRefusedError, MessageError) as exc:  # an id is missing or 0: refused before sending
                    refused.append(f"{where}not revocable: {exc}")
                except VendorError as exc:
                    called, throttled = True, isinstance(exc, ThrottledError)
                    outcome, error = RecallOutcome.FAILED, f"{where}{exc.error_class}: {exc}"
                    down = exc if isinstance(exc, AccountDownError) else None
                    abandoned = exc if isinstance(exc, AbandonedError) else None
                    break
                except Exception as exc:
                    log.exception("unexpected error in a revoke", extra={"job_id": job.id, "account": session.id})
                    called = True
                    outcome = RecallOutcome.FAILED
                    error = f"{where}ambiguous: the vendor's answer could not be processed ({type(exc).__name__})"
                    break
            if refused and outcome is RecallOutcome.RECALLED:
                # not all of it came back: failed, saying which parts did (a GeWe image cannot be revoked)
                recalled = f"recalled part {', '.join(map(str, taken))}; " if parts and taken else ""
                outcome, error = RecallOutcome.FAILED, recalled + "; ".join(refused)
        pace = self._pace_record(session, sent=False, throttled=throttled) if called else None
        ended = time.time()
        entry.update(ended=round(ended, 6), latency_ms=round((ended - started) * 1000, 2), outcome=outcome.value)
        if error:
            entry["error"] = error
        self._durable(self.ledger.finish_recall,
            session.id, session.token, job.id, outcome=outcome, error=error, history=entry, pace=pace,
        )  # fmt: skip
        if pace is not None:
            self._advance(session, pace)
        vendor = session.account.spec.vendor
        self.counters.record(
            account=session.id, vendor=vendor, kind="revoke", outcome=outcome.value, latency_ms=entry["latency_ms"]
        )
        if outcome is RecallOutcome.RECALLED:
            session.report.revoked += 1
        self._log(job.id, session.id, vendor, f"revoke_{outcome.value}", started, target=target_id, error=error)
        if down is not None:
            self._account_status(session.id, "down", str(down), "account.down")
            return SessionStop.ACCOUNT_DOWN
        if throttled:
            return SessionStop.THROTTLED
        return self._cool_down(session, abandoned) if abandoned is not None else None

    def _failed(
        self,
        session: Session,
        job: Job,
        message: AnyMessage,
        error: VendorError,
        entry: dict[str, Any],
        started: float,
    ) -> SessionStop | None:
        report = session.report
        ended = time.time()
        options = session.account.spec.options
        decision = self.policy.decide(
            error, job.error_count(error.error_class), unknown_outcome=options.get("unknown_outcome")
        )
        entry.update(
            ended=round(ended, 6),
            latency_ms=round((ended - started) * 1000, 2),
            outcome=decision.action,
            error_class=error.error_class,
            error=str(error),
            code=error.code,
        )
        throttled = isinstance(error, ThrottledError)
        pace = self._pace_record(session, sent=False, throttled=throttled)
        common = (session.id, session.token, job.id)
        if decision.action == "retry":
            finished = self._durable(self.ledger.finish_retry,
                *common, due_at=ended + decision.delay_s, error_class=error.error_class,
                error=str(error), history=entry, pace=pace,
            )  # fmt: skip
            report.retrying += 1
        elif decision.action == "requeue":
            finished = self._durable(self.ledger.finish_requeue,
                *common, error_class=error.error_class, error=str(error), history=entry, pace=pace,
            )  # fmt: skip
            report.requeued += 1
        else:
            finished = self._durable(self.ledger.finish_dead,
                *common, reason=decision.reason, error_class=error.error_class, error=str(error),
                history=entry, pace=pace,
            )  # fmt: skip
            report.dead += 1
            if isinstance(error, NotFriendError) and finished.status == "ok":
                # not a friend: the next campaign from this account skips them (the first reason stays)
                self._not_a_friend(session, job, error)
        self._advance(session, pace)
        vendor = session.account.spec.vendor
        self.counters.record(
            account=session.id,
            vendor=vendor,
            kind=message.kind,
            outcome=decision.action,
            latency_ms=entry["latency_ms"],
            error_class=error.error_class,
        )
        self._log(job.id, session.id, vendor, decision.action, started, error=str(error), error_class=error.error_class)
        if isinstance(error, AccountDownError):
            self._account_status(session.id, "down", str(error), "account.down")
            return SessionStop.ACCOUNT_DOWN
        if throttled:
            self._pause_if_restricted(session, finished, error)
            return SessionStop.THROTTLED
        cooling = self._cool_down(session, error)  # always: the hold shows even when the session stops anyway
        return self._stop_unless_confirmed(session, job, finished) or cooling

    def _cool_down(self, session: Session, error: VendorError) -> SessionStop | None:
        """After a call abandoned unanswered, the account waits ``abandoned_cooldown_s`` (a hold it shows):
        the vendor may still be carrying it out, and a second call now would be two in flight."""
        cooldown = self.settings.abandoned_cooldown_s
        if not isinstance(error, AbandonedError) or cooldown <= 0:
            return None
        hold = hold_after_abandoned(self.accounts, session.id, error, until=session.clock.latest() + cooldown)
        session.cooldown_until = hold.until
        session.state = replace(session.state, cool_until=hold.until)
        return SessionStop.COOLDOWN

    def _pause_if_restricted(self, session: Session, finished: Finished, error: VendorError) -> None:
        """Pause the account after too many throttling answers in a row despite the slow-down: a vendor
        that keeps saying "too fast" is how an account gets restricted, and a person should look first."""
        limit = session.account.spec.limits.pause_after_throttles
        if limit is None:
            limit = self.settings.pause_after_throttles
        if limit <= 0 or finished.throttles < limit:
            return
        reason = f"auto-paused: {finished.throttles} throttling answers in a row despite the slow-down (last: {error})"
        self._account_status(session.id, "paused", reason, "account.auto_pause")
        log.warning("account auto-paused", extra={"account": session.id, "error": reason})

    def _account_status(self, account_id: str, status: Status, reason: str, action: str) -> None:
        """Mark the account down or paused on the worker's own judgement, and say so in the audit trail."""
        self.accounts.set_status(account_id, status, reason)
        self._audit(action, f"account:{account_id}")

    def _not_a_friend(self, session: Session, job: Job, error: VendorError) -> None:
        """The vendor said the recipient is not a friend: the next campaign from this account skips them
        (the first reason stays), and a new entry is on the record."""
        stored = self._durable(self.suppressions.add,
            session.id, job.to, SuppressionReason.NOT_FRIEND, by="vendor", note=str(error), keep_existing=True,
        )  # fmt: skip
        if stored:
            self._audit("suppression.add_not_friend", f"suppression:{session.id}/{job.to}")

    def _audit(self, action: str, target: str) -> None:
        """One audit entry under the key and role "worker"; a Redis error loses the entry (logged), never the
        session's outcome, which is already recorded."""
        try:
            self.audit.record_own(WORKER, action, target)
        except redis.RedisError:
            log.exception("audit entry not recorded", extra={"action": action, "target": target})

    def _under_lease(self, session: Session, call: Callable[[], T]) -> T:
        """One vendor call (a send, a part, a revoke) with the quick retries for what provably never left,
        the account's lease renewed before each retry so it outlives the call."""
        return call_under_lease(
            call,
            self.settings,
            lambda: self.ledger.touch(session.id, session.token, lease_ttl_s=self.settings.lease_ttl_s),
            self.sleep,
        )

    def _invalid(self, session: Session, job: Job, entry: dict[str, Any], started: float, exc: Exception) -> None:
        """A message that cannot be built for this vendor: dead, never sent (no vendor call was made)."""
        error = str(exc) if isinstance(exc, MessageError) else f"the message cannot be built ({type(exc).__name__})"
        entry.update(ended=round(time.time(), 6), outcome="dead", error_class="invalid_message", error=error)
        self._durable(self.ledger.finish_dead,
            session.id, session.token, job.id, reason=DeadReason.INVALID_MESSAGE, error_class="invalid_message",
            error=error, history=entry, pace=None,
        )  # fmt: skip
        session.report.dead += 1
        self._log(job.id, session.id, session.account.spec.vendor, "dead", started, error=error)

    def _defer(
        self,
        session: Session,
        job: Job,
        entry: dict[str, Any],
        hold: KindHold,
        record: PaceRecord | None,
        code: str | None = None,
    ) -> None:
        """Send a job of a held kind back through the due set, due when the hold ends (``record``: the
        vendor call that brought the hold, which counts for pacing)."""
        error, history = held_entry(entry, hold, code)
        self._durable(self.ledger.finish_retry,
            session.id, session.token, job.id, due_at=hold.until, error_class=DailyCapError.error_class,
            error=error, history=history, pace=record,
        )  # fmt: skip
        if record is not None:
            self._advance(session, record)
        session.report.retrying += 1
        log.info(
            "send held",
            extra={
                "job_id": job.id,
                "account": session.id,
                "outcome": "held",
                "error_class": "daily_cap",
                "error": error,
            },
        )

    # --- pacing state -----------------------------------------------------------------------------------

    def _pace_record(self, session: Session, *, sent: bool, throttled: bool) -> PaceRecord:
        """How the call that just ended counts for pacing; the state advances the same way in _advance."""
        limits = session.account.spec.limits
        # the latest Redis's clock can read now: the next send waits its full gap after this end
        ended = session.clock.latest()
        day = local_day(ended + self.settings.clock_offset_s, limits.timezone)
        slowdown = throttled_slowdown(session.state, ended) if throttled else None
        return PaceRecord(
            ended=ended,
            fraction=self.rng.random(),
            slowdown=slowdown,
            day=day,
            day_sends=session.state.sent_on(day) + (1 if sent else 0),
            sent=sent,
            keep=limits.per_minute,
            vendor=session.account.spec.vendor if session.vendor_limited else "",
        )

    @staticmethod
    def _advance(session: Session, record: PaceRecord) -> None:
        """Advance the session's copy of the pacing state exactly as FINISH (or PART) advanced Redis's: with the
        record it was given, its end to the microsecond (what the script stores and answers as ``end``)."""
        session.state = session.state.after_call(
            record.recorded_end,
            fraction=record.fraction,
            slowdown=record.slowdown,
            day=record.day,
            day_sends=record.day_sends,
            keep=record.keep,
        )

    # --- helpers ----------------------------------------------------------------------------------------

    def _limited_vendors(self) -> set[str]:
        """Vendors with a vendor-wide rate (re-read every few seconds): their sessions take one job."""
        with self._vendor_limits_lock:
            read_at, vendors = self._vendor_limits
            if time.monotonic() - read_at > 5.0:
                with contextlib.suppress(redis.RedisError):
                    vendors = {str(v) for v in self.ledger.redis.hkeys(self.ledger.keys.vendor_limits)}
                self._vendor_limits = (time.monotonic(), vendors)
            return vendors

    def _dead_all(
        self, account_id: str, token: str, job_ids: list[str], report: SessionReport, first: Begin | None
    ) -> None:
        for i, job_id in enumerate(job_ids):
            if i == 0 and first is not None:  # begun in the session's first round trip
                begin = first
            else:
                begin = self.ledger.begin(account_id, token, job_id, lease_ttl_s=self.settings.lease_ttl_s)
            if begin.status is not BeginStatus.GO:
                continue
            entry = {"n": 1, "started": time.time(), "outcome": "dead", "error_class": "config"}
            self._durable(self.ledger.finish_dead,
                account_id, token, job_id, reason=DeadReason.ACCOUNT_MISSING, error_class="config",
                error=f"account {account_id!r} is not configured", history=entry,
            )  # fmt: skip
            report.dead += 1

    def _http_for(self, account_id: str) -> httpx.Client:
        return self.http[zlib.crc32(account_id.encode()) % len(self.http)]

    def _sleep(self, seconds: float) -> None:
        (self.sleep or time.sleep)(seconds)

    def _durable(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Record an outcome even across a short Redis outage (restart, failover): the vendor call is done
        and its ids must reach the books. Gives up after the lease TTL; recovery takes over from there."""
        try:  # the usual case, without building tenacity's machinery
            return write(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError):
            pass
        retrying = Retrying(
            retry=retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
            stop=stop_after_delay(self.settings.lease_ttl_s),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            reraise=True,
        )
        if self.sleep is not None:
            retrying.sleep = self.sleep
        return retrying(write, *args, **kwargs)

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
