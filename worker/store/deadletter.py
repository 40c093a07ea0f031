"""The dead-letter store: jobs that will not be sent without a person deciding.

A dead job keeps its id, its reason (``permanent``, ``retries_exhausted``, ``unknown_outcome``,
``invalid_message``, ``account_missing``), the error class and its whole attempt history. Replay puts it
back in its account's queue under the same id; the ledger's state machine guarantees it is sent at most
once. An ``unknown_outcome`` may already be in the recipient's chat, so replaying one needs ``force``.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

from worker.store.ledger import Job, Ledger
from worker.store.suppressions import SuppressionReason, Suppressions
from worker.store.vocabulary import DeadReason as DeadReason


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead job as listed."""

    job: Job
    dead_at: float

    def to_dict(self) -> dict[str, Any]:
        """The job's public view, cut to what deciding on a dead letter needs (texts never null)."""
        view = self.job.public()
        entry = {name: view[name] for name in ("id", "account", "to", "campaign")}
        entry |= {name: view[name] or "" for name in ("reason", "error_class", "error")}
        return {**entry, "attempts": view["attempts"], "dead_at": self.dead_at}


class DeadLetters:
    """List, inspect, replay and delete dead jobs."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.redis = ledger.redis
        self.key = ledger.keys.dlq

    def count(self) -> int:
        return int(self.redis.zcard(self.key))

    def list(
        self,
        *,
        account: str | None = None,
        campaign: str | None = None,
        reason: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[DeadLetter]:
        """Newest first, filtered; scans in pages so a large store stays cheap on memory."""
        out: builtins.list[DeadLetter] = []
        skipped = 0
        start = 0
        page = 500
        while len(out) < limit:
            chunk: builtins.list[tuple[str, float]] = self.redis.zrevrange(
                self.key, start, start + page - 1, withscores=True
            )  # type: ignore[assignment]
            if not chunk:
                break
            start += page
            jobs = self.ledger.get_many(job_id for job_id, _ in chunk)
            for (job_id, score), job in zip(chunk, jobs, strict=True):
                if job is None:  # expired after the retention: prune the index entry
                    self.redis.zrem(self.key, job_id)
                    continue
                if job.state != "dead":
                    continue
                if account and job.account != account:
                    continue
                if campaign and job.campaign != campaign:
                    continue
                if reason and job.fields.get("reason") != reason:
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                out.append(DeadLetter(job, score))
                if len(out) >= limit:
                    break
        return out

    def inspect(self, job_id: str) -> dict[str, Any] | None:
        """A dead job with its full attempt history."""
        job = self.ledger.get(job_id)
        if job is None or job.state != "dead" or job.fields.get("dismissed"):
            return None
        score = self.redis.zscore(self.key, job_id)
        entry = DeadLetter(job, float(score or 0)).to_dict()
        entry["history"] = self.ledger.history(job_id)
        return entry

    def replay(
        self, job_ids: builtins.list[str], *, force: bool = False, by: str = "", by_key: str = "", admin: bool = False
    ) -> dict[str, str]:
        """Replay each job; the answer maps id -> 'ok' or why not. Replaying a "not a friend" failure is an
        operator's "try again": the ``not_friend`` suppression it left is lifted first (a new refusal puts it
        back); any other suppression (an opt-out) still skips it. ``by``, ``by_key``, ``admin``: who replays
        (:meth:`Ledger.replay`: a message of a revoked key is an admin's to replay)."""
        suppressions = Suppressions(self.redis, self.ledger.prefix)
        answers: dict[str, str] = {}
        for job_id in job_ids:
            job = self.ledger.get(job_id)
            if job is not None and job.state == "dead":
                entry = suppressions.get(job.account, job.to)
                if entry is not None and entry.reason == SuppressionReason.NOT_FRIEND:
                    suppressions.remove(job.account, job.to)
            answers[job_id] = self.ledger.replay(job_id, force=force, by=by, by_key=by_key, admin=admin)
        return answers

    def delete(self, job_id: str) -> bool:
        """Drop a dead job from the store (its record stays, ``dead``, for the campaign's books)."""
        removed = int(self.redis.zrem(self.key, job_id))
        if removed and self.redis.exists(self.ledger.keys.job(job_id)):
            self.redis.hset(self.ledger.keys.job(job_id), "dismissed", "1")
        return bool(removed)
