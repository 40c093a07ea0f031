"""The job store and send ledger: durable jobs, their state machine, and the vendor ids of every send.

A job is one message to one recipient from one account. It is written to Redis (a hash, plus an attempt
history list) before the producer answers, so an accepted job is a stored job. States::

    scheduled ──due──▶ queued ──claim/begin──▶ sending ──▶ sent
        │                ▲  ▲                     │
        │                │  └──── retrying ◀──────┤  (transient / throttled / generic failure, bounded)
        └── cancelled ◀──┘                         └──▶ dead  (permanent, retries exhausted, unknown outcome)

    queued ──begin──▶ skipped  (suppressed recipient, or over the account's recipient_cap: no vendor call)

All transitions are Lua scripts (:mod:`worker.store.scripts`), so each is atomic with its queue and counter
writes. Ids are stored as decimal strings: exact for 64-bit values, and safe for JavaScript readers.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, cast, get_args

import redis

from worker.messages import MESSAGE_ADAPTER, AnyMessage
from worker.store import scripts
from worker.store.keys import Keys
from worker.store.operators import owner_args
from worker.store.replication import ReplicaAcks
from worker.store.vocabulary import BeginStatus as BeginStatus
from worker.store.vocabulary import JobState as JobState
from worker.store.vocabulary import RecallOutcome as RecallOutcome
from worker.store.vocabulary import SkipReason as SkipReason
from worker.vendors.base import MEDIA_FIELDS, SendResult

#: A job's priority: ``high`` jobs wait in their own queue (``qh:``), taken before any other of the account.
Priority = Literal["normal", "high"]

#: How a FINISH ends an attempt: each is its own script, ``lua/finish_<outcome>.lua``.
FinishOutcome = Literal["sent", "retry", "dead", "requeue", "recall"]


STATES = tuple(state.value for state in JobState)
TERMINAL = frozenset({JobState.SENT, JobState.DEAD, JobState.CANCELLED, JobState.SKIPPED})
#: States a job leaves for ``cancelled`` when cancelled (cancel.lua): it has not started sending.
UNSENT = frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.RETRYING})


RECALL_OUTCOMES = tuple(o.value for o in RecallOutcome if o is not RecallOutcome.PENDING)


class RecallAsked(NamedTuple):
    """What :meth:`Ledger.request_revokes` did with the ids it was given."""

    pending: int
    too_late: int
    unsupported: int
    #: not sent, or its revoke was already asked for
    skipped: int


#: The vendor ids of a sent job (its ``result``), as the vendors name them.
RESULT_FIELDS = ("msg_id", "new_msg_id", "client_msg_id", "create_time")

#: How long an idempotency key remembers its first answer.
IDEMPOTENCY_TTL_S = 7 * 24 * 3600


def new_id(prefix: str = "j") -> str:
    """A random, URL-safe id (time-ordered prefix keeps listings roughly chronological)."""
    return f"{prefix}{int(time.time() * 1000):x}{uuid.uuid4().hex[:10]}"


@dataclass(slots=True)
class Job:
    """A job as read back from Redis."""

    id: str
    state: str
    account: str
    to: str
    fields: dict[str, str] = field(default_factory=dict)
    campaign_message: str = ""

    @property
    def campaign(self) -> str | None:
        return self.fields.get("campaign") or None

    @property
    def revoke_of(self) -> str | None:
        """For a revoke job (``op`` revoke): the sent job it takes back."""
        return self.fields.get("target") if self.fields.get("op") == "revoke" else None

    @property
    def attempts(self) -> int:
        return int(self.fields.get("attempts", "0"))

    def error_count(self, error_class: str) -> int:
        """How many long retries this job already spent on an error class."""
        return int(self.fields.get(f"n_{error_class}", "0"))

    @property
    def variables(self) -> dict[str, str]:
        raw = self.fields.get("vars")
        return dict(json.loads(raw)) if raw else {}

    def message(self) -> AnyMessage:
        """The message template (the job's own, or its campaign's), not yet personalised."""
        raw = self.fields.get("message") or self.campaign_message
        return MESSAGE_ADAPTER.validate_json(raw)

    def result(self) -> dict[str, str | None] | None:
        """The vendor ids of a sent job, as strings (and the media facts a vendor answered, when any)."""
        if self.state != "sent":
            return None
        ids = {name: self.fields.get(name) for name in RESULT_FIELDS}
        ids.update({name: self.fields[name] for name in MEDIA_FIELDS if self.fields.get(name)})
        return ids

    def public(self) -> dict[str, Any]:
        """The job as people and programs read it (API, deliveries, dead letters, exports): the state as
        ``status``, vendor ids as strings, times as epoch seconds; never the message, variables or a token."""
        f = self.fields
        return {
            "id": self.id,
            "status": self.state,
            "account": self.account,
            "to": self.to,
            "campaign": self.campaign,
            "test_of": f.get("test_of"),  # the campaign this message is a test send of (not one of its jobs)
            "attempts": self.attempts,
            "result": self.result(),
            "vendor": f.get("vendor"),
            "has_ids": f.get("has_ids") == "1" if self.state == JobState.SENT else None,
            "reason": f.get("reason"),
            "skip_reason": f.get("skip_reason"),
            "ignore_suppression": f.get("nosupp") == "1",
            "ignore_suppression_by": f.get("nosupp_by"),
            "error_class": f.get("error_class"),
            # a retrying job's latest error is ``last_error``; a dead one's final error is ``error``
            "error": f.get("error") or f.get("last_error"),
            "parts": self.parts(),
            "revoked_at": _epoch(f.get("revoked_at")),
            # the revoke's outcome (a recall, or a message's revoke): RecallOutcome, and the vendor's answer
            "recall": f.get("recall") or None,
            "recall_error": f.get("recall_error") or None,
            "created": _epoch(f.get("created")),
            "sent_at": _epoch(f.get("sent_at")),
        }

    def parts(self) -> list[dict[str, Any]] | None:
        """A sequence's parts as people read them, once it began (None for other jobs): each part's
        ``status`` (sent, dead, unknown, skipped, pending) and its own ids, as strings."""
        total = int(self.fields.get("parts_n") or 0)
        if not total:
            return None
        recorded: list[dict[str, Any]] = json.loads(self.fields.get("parts") or "[]")
        out: list[dict[str, Any]] = []
        stopped = False
        for i in range(total):
            entry = recorded[i] if i < len(recorded) and recorded[i] else None
            if entry is not None:
                stopped = stopped or entry.get("status") != "sent"
                out.append({"index": i, **entry})
                continue
            if stopped or self.state == "cancelled":
                status = "skipped"
            elif self.state == "dead":
                # the first part not on record ended the job: it may have gone out (unknown), or was refused
                status = "unknown" if self.fields.get("reason") == "unknown_outcome" else "dead"
            else:
                status = "pending"
            stopped = stopped or status != "pending"
            out.append({"index": i, "status": status})
        return out

    @classmethod
    def from_hash(cls, job_id: str, data: Mapping[str, str], campaign_message: str = "") -> Job:
        return cls(
            id=job_id,
            state=data.get("state", ""),
            account=data.get("account", ""),
            to=data.get("to", ""),
            fields=dict(data),
            campaign_message=campaign_message,
        )


def _epoch(raw: str | None) -> float | None:
    return float(raw) if raw else None


def sent_parts(job: Job) -> list[tuple[int, SendResult]]:
    """A sequence job's parts that went out, with the ids each returned (what a recall revokes)."""
    recorded: list[dict[str, Any]] = json.loads(job.fields.get("parts") or "[]")
    vendor = job.fields.get("vendor", "")
    return [
        (i, SendResult.from_dict({"vendor": vendor, **entry, "to": job.to}))
        for i, entry in enumerate(recorded)
        if entry and entry.get("status") == "sent"
    ]


class Submission(NamedTuple):
    """What :meth:`Ledger.submit` stored."""

    id: str
    created: bool
    state: str


@dataclass(frozen=True, slots=True)
class Begin:
    """What :meth:`Ledger.begin` found: :attr:`BeginStatus.GO` with the job, or why not (``why``).
    ``yield``: a high-priority job arrived, or the account or a campaign was paused, cancelled or edited:
    the session ends and the next one is claimed under the new state."""

    status: BeginStatus
    job: Job | None = None
    why: str = ""
    wait_s: float = 0.0
    #: Redis TIME when the job was marked ``sending`` (0 when no pacing start was asked for).
    redis_now: float = 0.0
    #: the mark is on the replicas BROADCAST_REPLICA_ACKS asks for (worker/store/replication.py): when
    #: False the vendor must not be called
    confirmed: bool = True


class SessionOpening(NamedTuple):
    """A session to open (:meth:`Ledger.open_sessions`): its account and lease, its first job (BEGUN in the
    opening round trip) and that BEGIN's call id, and its cache of campaign templates (filled by the BEGIN)."""

    account: str
    token: str
    first_job: str | None
    call: str
    templates: dict[str, str]


class OpenedSession(NamedTuple):
    """What :meth:`Ledger.open_session` read in a session's first round trip."""

    account: dict[str, str]
    #: Redis TIME, and the local monotonic clock just before the request left and just after the answer
    redis_time: float
    pace: dict[str, str]
    window: list[str]
    #: the first job's BEGIN, when it was part of the round trip
    first: Begin | None
    sent: float
    received: float


@dataclass(frozen=True, slots=True)
class PaceRecord:
    """How one vendor call counts for pacing: FINISH writes it to Redis, the session applies it to its own
    copy with :meth:`PaceState.after_call`."""

    #: When the answer arrived, on Redis's clock as the worker reads it (FINISH records it as is).
    ended: float
    fraction: float
    slowdown: float | None
    day: str
    #: Sends on ``day`` including this one.
    day_sends: int
    sent: bool
    keep: int
    vendor: str = ""

    @property
    def recorded_end(self) -> float:
        """The end FINISH records (``end`` in its reply): :attr:`ended` to the microsecond."""
        return float(f"{self.ended:.6f}")

    def args(self) -> list[str]:
        return [
            "1",
            f"{self.ended:.6f}",
            f"{self.fraction:.6f}",
            "" if self.slowdown is None else f"{self.slowdown:g}",
            self.day,
            str(self.day_sends),
            str(self.keep),
            self.vendor,
        ]


#: FINISH's pacing arguments for an outcome that involved no vendor call.
NO_CALL = ["0", "0", "0", "", "", "0", "0", ""]


class Finished(NamedTuple):
    """FINISH's answer: ``ok`` or ``stale``, the end time it recorded (Redis TIME), and the account's
    throttling answers in a row including this call (0 after any other answer)."""

    status: str
    end: float
    throttles: int = 0
    #: the outcome is on the replicas BROADCAST_REPLICA_ACKS asks for (when False it may be lost in a
    #: failover: the job would then be an unknown outcome, never resent)
    confirmed: bool = True
    #: the session ended in this FINISH (``release_at``): RELEASE's answer; None when it goes on
    released: int | None = None


class PartBegin(NamedTuple):
    """PART begin's answer: ``go`` (with Redis time), ``early`` (seconds to wait), ``busy`` (another
    sequence job holds the recipient) or ``lost`` (the job is no longer this session's)."""

    status: str
    detail: str


class Tick(NamedTuple):
    """What one dispatcher round found (:meth:`Ledger.tick`)."""

    promoted: int
    free: int
    #: when the soonest account in ``sched`` is due (None: none waits)
    soonest: float | None
    due: list[str]


@dataclass(frozen=True, slots=True)
class Claim:
    """A session handed out by the dispatcher: one account's jobs under one lease."""

    account: str
    token: str
    job_ids: list[str]
    #: One '1' (a group recipient) or '0' per job id.
    groups: str = ""
    #: The campaigns and message kinds among the jobs (for operators, in Flower).
    campaigns: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)


def _pairs(mapping: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in mapping.items():
        if value is None:
            continue
        out.extend(
            (
                key,
                value
                if isinstance(value, str)
                else json.dumps(value)
                if isinstance(value, dict | list)
                else str(value),
            )
        )
    return out


class Ledger:
    """All job state in Redis, behind methods that each run one atomic script."""

    def __init__(
        self, client: redis.Redis, prefix: str, *, retention_s: float = 30 * 86400, acks: ReplicaAcks | None = None
    ) -> None:
        self.redis = client
        #: replicas BEGIN and FINISH wait for (None: none; the API and dispatcher never call a vendor)
        self.acks = acks
        self.keys = Keys(prefix)
        self.prefix = prefix
        #: How long finished jobs keep their record (``BROADCAST_RETENTION_DAYS``; 0 = forever).
        self.retention_s = str(int(retention_s))
        self._submit = scripts.register(client, "submit")
        self._tick = scripts.register(client, "tick")
        self._claim = scripts.register(client, "claim")
        self._begin = scripts.register(client, "begin")
        #: FINISH, one script per outcome (finish_<outcome>.lua)
        self._finish = {outcome: scripts.register(client, f"finish_{outcome}") for outcome in get_args(FinishOutcome)}
        self._part = scripts.register(client, "part")
        self._release = scripts.register(client, "release")
        self._recover = scripts.register(client, "recover")
        self._replay = scripts.register(client, "replay")
        self._cancel = scripts.register(client, "cancel")
        self._touch = scripts.register(client, "touch")
        self._recall = scripts.register(client, "recall")

    def load_scripts(self) -> None:
        """Load the send path's scripts into Redis in one round trip (a worker's warm-up), so no session
        pays the NOSCRIPT answer and the reload; a restarted or promoted server still gets them on demand."""
        pipe = self.redis.pipeline(transaction=False)
        for script in (self._begin, *self._finish.values(), self._part, self._release, self._touch):
            script.load(pipe)
        pipe.execute()

    # --- producer side -------------------------------------------------------------------------------

    def submit(
        self,
        *,
        account: str,
        to: str,
        message: AnyMessage | None = None,
        campaign: str | None = None,
        variables: Mapping[str, str] | None = None,
        send_at: float | None = None,
        idempotency_key: str | None = None,
        priority: str = "normal",
        job_id: str | None = None,
        test_of: str | None = None,
        ignore_suppression: str | None = None,
        created_by: str | None = None,
        creator_key: str = "",
    ) -> Submission:
        """Store and enqueue one job in one round trip. An idempotency key seen before answers its first
        job (``created`` False, ``state`` ''). ``test_of``: the campaign this job is a test send of (it is
        not one of the campaign's jobs and not in its counts). ``ignore_suppression``: who asked that it be
        sent even to a suppressed recipient (the job's ``nosupp`` and ``nosupp_by``). ``created_by``: the
        key that submitted it and ``creator_key`` that key's SHA-256 (:meth:`cancel_unsent_by`; a message
        submitted while its key was being revoked is stored ``cancelled``)."""
        job_id = job_id or new_id()
        now = time.time()
        fields: dict[str, Any] = {
            "account": account,
            "to": to,
            "created": f"{now:.6f}",
            "updated": f"{now:.6f}",
            "attempts": "0",
            "priority": priority,
            "campaign": campaign,
            "message": message.model_dump_json() if message is not None else None,
            "kind": message.kind if message is not None else None,
            "vars": dict(variables) if variables else None,
            "send_at": f"{send_at:.3f}" if send_at else None,
            "idempotency_key": idempotency_key,
            "test_of": test_of,
            "nosupp": "1" if ignore_suppression else None,
            "nosupp_by": ignore_suppression or None,
            "created_by": created_by or None,
        }
        due_at = f"{send_at:.3f}" if send_at and send_at > now else ""
        reply = self._submit(
            args=[
                self.prefix,
                job_id,
                idempotency_key or "",
                IDEMPOTENCY_TTL_S,
                f"{now:.6f}",
                due_at,
                account,
                priority,
                *owner_args(created_by, creator_key),
                *_pairs(fields),
            ]
        )
        state = str(reply[2]) if len(reply) > 2 else ""
        return Submission(str(reply[1]), bool(reply[0]), state)

    def request_revokes(self, job_ids: Sequence[str], *, window_s: float, unsupported: Sequence[str]) -> RecallAsked:
        """Ask, once per job, for the revoke of sent jobs: those of a vendor in ``unsupported`` or past
        ``window_s`` after their createTime are decided at once, the others get a revoke job queued at
        high priority on their account (run by a session like a send)."""
        if not job_ids:
            return RecallAsked(0, 0, 0, 0)
        reply = self._recall(args=[self.prefix, f"{time.time():.6f}", f"{window_s:g}", ",".join(unsupported), *job_ids])
        return RecallAsked(*(int(n) for n in reply))

    def cancel(self, job_id: str) -> str:
        """Cancel a job that has not started sending; returns the state it was in."""
        return str(self._cancel(args=[self.prefix, job_id, f"{time.time():.6f}"]))

    def cancel_unsent_by(self, key_name: str, *, chunk: int = 1000) -> list[str]:
        """Cancel every message the key ``key_name`` submitted that has not started sending (it was revoked:
        nobody answers any more for what it would still send): waiting for its ``send_at``, queued behind a
        paused account, quiet hours or a cap, or retrying; the ids. A message being sent finishes."""
        listed = self.keys.key_messages(key_name)
        cancelled: list[str] = []
        for start in range(0, int(self.redis.zcard(listed)), chunk):
            ids = cast(list[str], self.redis.zrange(listed, start, start + chunk - 1))
            pipe = self.redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.hget(self.keys.job(job_id), "state")
            for job_id, state in zip(ids, pipe.execute(), strict=True):
                if state in UNSENT and self.cancel(job_id) in UNSENT:
                    cancelled.append(job_id)
        return cancelled

    # --- dispatcher side ----------------------------------------------------------------------------

    def tick(
        self, *, now: float | None = None, capacity: int = 1_000_000, most: int = 1000, promote: int = 1000
    ) -> Tick:
        """The dispatcher's round in one call: move up to ``promote`` due scheduled/retrying jobs to their
        queues, then the free capacity (``capacity`` minus sessions out) and up to that many (at most ``most``)
        accounts due in ``sched``, and when the next one will be."""
        promoted, free, soonest, *due = self._tick(
            args=[self.prefix, f"{now or time.time():.6f}", promote, capacity, most]
        )
        return Tick(int(promoted), int(free), None if soonest == "" else float(soonest), [str(a) for a in due])

    def claim(
        self,
        *,
        lease_ttl_s: float,
        candidates: Sequence[tuple[str, int, float, float]],
        now: float | None = None,
    ) -> list[Claim]:
        """Hand ready jobs to new sessions. ``candidates``: (account, batch, private_at, group_at), the
        pacing verdict on due accounts (:meth:`worker.pacing.rules.Pacer.verdict`)."""
        if not candidates:
            return []
        args: list[str | int | float] = [
            self.prefix,
            uuid.uuid4().hex,
            int(lease_ttl_s * 1000),
            f"{now or time.time():.6f}",
        ]
        for account, batch, private_at, group_at in candidates:
            args += [account, batch, f"{private_at:.6f}", f"{group_at:.6f}"]
        flat = self._claim(args=args)
        claims: list[Claim] = []
        i = 0
        while i < len(flat):
            account, token, count, groups = str(flat[i]), str(flat[i + 1]), int(flat[i + 2]), str(flat[i + 3])
            campaigns, kinds = (
                [c for c in str(flat[i + 4]).split(",") if c],
                [k for k in str(flat[i + 5]).split(",") if k],
            )
            ids = [str(x) for x in flat[i + 6 : i + 6 + count]]
            claims.append(Claim(account, token, ids, groups, campaigns, kinds))
            i += 6 + count
        return claims

    def recover(self) -> tuple[int, int]:
        """Recover batches whose lease died: (jobs requeued, sends turned into unknown outcomes)."""
        requeued, unknown = self._recover(args=[self.prefix, f"{time.time():.6f}"])
        return int(requeued), int(unknown)

    # --- worker side --------------------------------------------------------------------------------

    def begin(
        self,
        account: str,
        token: str,
        job_id: str,
        *,
        lease_ttl_s: float,
        not_before: float = 0.0,
        templates: dict[str, str] | None = None,
        recipient_cap: tuple[int, float] | None = None,
        call: str = "",
    ) -> Begin:
        """Mark a job ``sending`` right before its vendor call (or say why it must not be sent yet or at
        all). ``templates`` is the caller's cache of campaign messages: known ones are not sent again.
        ``recipient_cap``: the account's (max sends, window seconds) per recipient for campaign jobs; a
        suppressed or capped job is ``skipped`` here (status ``skip``, ``why`` the reason). ``call`` names
        this BEGIN: run again with it (a retry after a lost reply), it answers the same."""
        args = self._begin_args(account, token, job_id, lease_ttl_s, not_before, templates, recipient_cap, call)
        reply, confirmed = self._run_acked(self._begin, args)
        return self._begin_answer(job_id, reply, templates, confirmed)

    def open_session(
        self,
        account: str,
        token: str,
        first_job: str | None,
        *,
        lease_ttl_s: float,
        call: str,
        templates: dict[str, str],
    ) -> OpenedSession:
        """A session's first round trip: the account's hash, Redis TIME, its pacing state and, when nothing
        must acknowledge a BEGIN (no replica, no AOF to wait for), the BEGIN of ``first_job`` at the
        dispatcher's start (CLAIM let it start now), its recipient cap read from the account by the script.
        ``first`` is None when that BEGIN is left to :meth:`begin` (with replicas, or no job)."""
        (got,) = self.open_sessions(
            [SessionOpening(account, token, first_job, call, templates)], lease_ttl_s=lease_ttl_s
        )
        if isinstance(got, Exception):
            raise got
        return got

    def open_sessions(
        self, openings: Sequence[SessionOpening], *, lease_ttl_s: float
    ) -> list[OpenedSession | Exception]:
        """The first round trip of several sessions that start together (a Celery message's bundle: CLAIM let
        each first job start now), as :meth:`open_session` makes one, in one round trip: each session's
        reads and BEGIN, its answer or the error Redis gave it in its place. A dropped connection or a timeout
        is raised for all: each session then reads on its own with its ``call``, and a BEGIN that ran
        answers the same."""
        commands: list[tuple[Any, ...]] = []
        plans: list[tuple[SessionOpening, list[Any] | None]] = []
        no_acks = self._unacknowledged()  # the first BEGINs join the round trip
        for opening in openings:
            account = opening.account
            commands += [
                ("HGETALL", self.keys.account(account)),
                ("TIME",),
                ("HGETALL", self.keys.pace(account)),
                ("LRANGE", self.keys.pace_window(account), 0, -1),
            ]
            args = None
            if opening.first_job is not None and no_acks:
                args = self._begin_args(
                    account, opening.token, opening.first_job, lease_ttl_s, 0.0, opening.templates, None,
                    opening.call, own_cap=True,
                )  # fmt: skip
                commands.append(self._begin.command(args))
            plans.append((opening, args))
        sent = time.monotonic()
        replies = scripts.round_trip(self.redis, commands)
        received = time.monotonic()
        opened: list[OpenedSession | Exception] = []
        at = 0
        for opening, args in plans:
            stored, clock, pace, window = replies[at : at + 4]
            at += 4
            begin_reply = None
            if args is not None:
                begin_reply = replies[at]
                at += 1
            try:
                opened.append(self._opened(opening, stored, clock, pace, window, begin_reply, args, sent, received))
            except (redis.ConnectionError, redis.TimeoutError):
                raise  # a NOSCRIPT reload that could not reach Redis: the same for all
            except (redis.RedisError, ValueError, TypeError, IndexError) as error:  # this one's: it reads alone
                opened.append(error)
        return opened

    def _opened(
        self,
        opening: SessionOpening,
        stored: Any,
        clock: Any,
        pace: Any,
        window: Any,
        begin_reply: Any,
        args: list[Any] | None,
        sent: float,
        received: float,
    ) -> OpenedSession:
        """One session's part of an opening round trip (its errors raised)."""
        for reply in (stored, clock, pace, window):
            if isinstance(reply, Exception):
                raise reply
        first = None
        if args is not None and opening.first_job is not None:
            reply = self._begin.answer(begin_reply, args)  # NOSCRIPT (a new primary): loaded and run again
            first = self._begin_answer(opening.first_job, reply, opening.templates, True)
        seconds, micros = (int(part) for part in clock)
        return OpenedSession(
            scripts.hash_reply(stored),
            seconds + micros / 1_000_000,
            scripts.hash_reply(pace),
            window,
            first,
            sent,
            received,
        )

    def _begin_args(
        self,
        account: str,
        token: str,
        job_id: str,
        lease_ttl_s: float,
        not_before: float,
        templates: dict[str, str] | None,
        recipient_cap: tuple[int, float] | None,
        call: str,
        *,
        own_cap: bool = False,
    ) -> list[Any]:
        cap_max, cap_window = recipient_cap or (0, 0.0)
        return [
            self.prefix,
            account,
            token,
            job_id,
            f"{time.time():.6f}",
            int(lease_ttl_s * 1000),
            f"{not_before:.6f}",
            ",".join(templates) if templates else "",
            "@" if own_cap else cap_max,
            f"{cap_window:g}",
            call,
        ]

    @staticmethod
    def _begin_answer(job_id: str, reply: Any, templates: dict[str, str] | None, confirmed: bool) -> Begin:
        status = BeginStatus(str(reply[0]))
        if status is BeginStatus.EARLY:
            return Begin(status=status, wait_s=float(reply[1]))
        if status is not BeginStatus.GO:
            return Begin(status=status, why=str(reply[1]))
        template, redis_now, flat = str(reply[1]), str(reply[2]), reply[3]
        data = dict(zip(flat[::2], flat[1::2], strict=True))
        campaign = data.get("campaign") or ""
        if templates is not None and campaign:
            if template == "=":
                template = templates[campaign]
            else:
                templates[campaign] = template
        job = Job.from_hash(job_id, data, template)
        return Begin(
            status=BeginStatus.GO, job=job, redis_now=float(redis_now) if redis_now else 0.0, confirmed=confirmed
        )

    def _unacknowledged(self) -> bool:
        """Whether writes need no acknowledgement now (no replica, no AOF to wait for): then a session's
        first BEGIN and last RELEASE may ride on its other round trips."""
        return self.acks is None or self.acks.current().none

    def _run_acked(self, script: scripts.LuaScript, args: list[Any]) -> tuple[Any, bool]:
        """Run a script that records a send, waiting for the replicas when this ledger has ``acks``."""
        if self.acks is None:
            return script(args=args), True
        return script.acked(self.acks.current(), args)

    def finish_sent(
        self,
        account: str,
        token: str,
        job_id: str,
        result: SendResult,
        history: dict[str, Any],
        *,
        pace: PaceRecord | None = None,
        release_at: float | None = None,
    ) -> Finished:
        """Record a successful send with its vendor ids (and how the call counts for pacing). With
        ``release_at`` the session ends in the same script, as :meth:`release` would end it (one round trip
        fewer for its last job), unless replicas must acknowledge the outcome first: see :meth:`_finish_call`."""
        ids = result.ids_as_strings()
        fields = {
            "vendor": result.vendor,
            "endpoint": result.endpoint,
            "msg_type": result.msg_type,
            "has_ids": "1" if result.has_ids else "0",
            **ids,
            **result.media,
        }
        return self._finish_call(account, token, job_id, "sent", history, _pairs(fields), pace, release_at)

    def finish_retry(
        self,
        account: str,
        token: str,
        job_id: str,
        *,
        due_at: float,
        error_class: str,
        error: str,
        history: dict[str, Any],
        pace: PaceRecord | None = None,
    ) -> Finished:
        """Send the job back through the due set to be tried again later."""
        return self._finish_call(account, token, job_id, "retry", history, [f"{due_at:.6f}", error_class, error], pace)

    def finish_dead(
        self,
        account: str,
        token: str,
        job_id: str,
        *,
        reason: str,
        error_class: str,
        error: str,
        history: dict[str, Any],
        pace: PaceRecord | None = None,
    ) -> Finished:
        """Dead-letter the job with its reason."""
        return self._finish_call(account, token, job_id, "dead", history, [reason, error_class, error], pace)

    def finish_requeue(
        self,
        account: str,
        token: str,
        job_id: str,
        *,
        error_class: str,
        error: str,
        history: dict[str, Any],
        pace: PaceRecord | None = None,
    ) -> Finished:
        """Put the job back at the head of its queue without counting the attempt (account down)."""
        return self._finish_call(account, token, job_id, "requeue", history, ["", error_class, error], pace)

    def finish_recall(
        self,
        account: str,
        token: str,
        job_id: str,
        *,
        outcome: RecallOutcome,
        error: str,
        history: dict[str, Any],
        pace: PaceRecord | None = None,
    ) -> Finished:
        """End a revoke job (never retried) and put its outcome on the message it revoked."""
        return self._finish_call(account, token, job_id, "recall", history, [outcome.value, error], pace)

    def _finish_call(
        self,
        account: str,
        token: str,
        job_id: str,
        outcome: FinishOutcome,
        history: dict[str, Any],
        extra: Sequence[str],
        pace: PaceRecord | None,
        release_at: float | None = None,
    ) -> Finished:
        now = f"{time.time():.6f}"
        pacing = pace.args() if pace is not None else NO_CALL
        if release_at is not None and not self._unacknowledged():
            # the outcome must reach the replicas before the account is handed back: a session whose FINISH
            # is not acknowledged in time ends with a wait (runner, REPLICA_LAG), in its own RELEASE
            release_at = None
        args = [
            self.prefix,
            account,
            token,
            job_id,
            now,
            json.dumps(history),
            self.retention_s,
            *pacing,
            "" if release_at is None else f"{release_at:.6f}",
            *extra,
        ]
        reply, confirmed = self._run_acked(self._finish[outcome], args)
        released = int(reply[3]) if release_at is not None else None
        return Finished(str(reply[0]), float(reply[1] or 0), int(reply[2] or 0), confirmed, released)

    # --- sequences: one vendor call per part, each fenced (part.lua) ---------------------------------------

    def part_begin(
        self,
        account: str,
        token: str,
        job_id: str,
        index: int,
        *,
        of: int,
        not_before: float,
        lease_ttl_s: float,
    ) -> PartBegin:
        """Before part ``index`` of a sequence job: the lease must still be this session's, the job
        ``sending`` under it, Redis time at ``not_before``; the recipient's sequence lock is taken (first
        part) or renewed; the lease is renewed for ``lease_ttl_s``."""
        head = self._part_head(account, token, job_id, "begin", index, lease_ttl_s)
        reply = self._part(args=[*head, f"{not_before:.6f}", of])
        return PartBegin(str(reply[0]), str(reply[1]))

    def part_end(
        self,
        account: str,
        token: str,
        job_id: str,
        index: int,
        record: Mapping[str, Any],
        *,
        advance: bool,
        pace: PaceRecord | None,
        lease_ttl_s: float,
        ids: Mapping[str, Any] | None = None,
    ) -> Finished:
        """After part ``index``'s vendor call: its pacing, its record in the job's ``parts``, the next index
        when it was sent, and (first part sent) the job's top-level ids the recall window counts from."""
        pacing = pace.args() if pace is not None else NO_CALL
        reply = self._part(
            args=[
                *self._part_head(account, token, job_id, "end", index, lease_ttl_s),
                *pacing,
                json.dumps(record, ensure_ascii=False),
                "1" if advance else "0",
                *_pairs(ids or {}),
            ]
        )
        return Finished(str(reply[0]), float(reply[1] or 0), int(reply[2] or 0))

    def part_unlock(self, account: str, token: str, job_id: str) -> None:
        """Free the recipient's sequence lock this job holds (its last part ended)."""
        self._part(args=self._part_head(account, token, job_id, "unlock", 0, 0))

    def _part_head(self, account: str, token: str, job_id: str, phase: str, index: int, ttl_s: float) -> list[Any]:
        return [self.prefix, account, token, job_id, f"{time.time():.6f}", int(ttl_s * 1000), phase, index]

    def touch(self, account: str, token: str, *, lease_ttl_s: float) -> bool:
        """Renew a batch's lease; False when it was lost (recovered by the dispatcher)."""
        return bool(self._touch(args=[self.prefix, account, token, int(lease_ttl_s * 1000)]))

    def release(self, account: str, token: str, *, next_at: float = 0.0) -> int:
        """End a session: unprocessed jobs go back to the head of their queue, and the account waits in
        ``sched`` until ``next_at`` (its next sendable moment). -1 when the lease was lost."""
        return int(self._release(args=[self.prefix, account, token, f"{next_at:.6f}"]))

    # --- reads -----------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """One job, or None."""
        data = cast(dict[str, str], self.redis.hgetall(self.keys.job(job_id)))
        if not data:
            return None
        return Job.from_hash(job_id, data)

    def get_many(self, job_ids: Iterable[str]) -> list[Job | None]:
        """Several jobs in one round trip."""
        ids = list(job_ids)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.keys.job(job_id))
        return [Job.from_hash(i, d) if d else None for i, d in zip(ids, pipe.execute(), strict=True)]

    def history(self, job_id: str) -> list[dict[str, Any]]:
        """The attempt history, oldest first: a job sent at its first attempt keeps that entry in its hash
        (``h0``, one write less per send), every other entry is in its history list."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.keys.job(job_id), "h0")
        pipe.lrange(self.keys.history(job_id), 0, -1)
        first, rest = pipe.execute()
        return [json.loads(raw) for raw in ([first] if first else []) + list(rest)]

    def replay(self, job_id: str, *, force: bool = False, by: str = "", by_key: str = "", admin: bool = False) -> str:
        """Put a dead job back in its queue with the same id and history ('ok' or why not). ``by``/``by_key``:
        the key replaying it (its name and SHA-256); a single message whose own key was revoked answers
        ``owner_revoked`` unless ``admin``, whose replay makes it that key's (replay.lua)."""
        reply = self._replay(
            args=[self.prefix, job_id, f"{time.time():.6f}", "1" if force else "0", by, by_key, "1" if admin else "0"]
        )
        return str(reply[0])

    def wait_for_wake(self, timeout_s: float) -> None:
        """Block until a producer or worker nudges the dispatcher, or the timeout passes."""
        self.redis.blpop([self.keys.wake], timeout=timeout_s)
