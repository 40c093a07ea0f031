"""The audit trail: who did what, append-only, in one Redis stream trimmed by age.

Each state-changing API call adds one entry (time, key name, role, action, target, HTTP status) with
``XADD … MINID`` so entries older than ``BROADCAST_AUDIT_RETENTION_DAYS`` go as new ones arrive; there
is no call that edits or deletes an entry. Stream ids are times, so a page's cursor is the last id read.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis
from redis.typing import EncodableT, FieldT

from worker.store.keys import Keys

#: The key and role of what the worker changes on its own judgement (an account down or auto-paused, a
#: not-a-friend suppression; campaign.auto_pause is written by prelude_finish.lua): reserved, no key takes it.
WORKER = "worker"
#: The key and role of what vendor callbacks change (an opt-out, a removed contact, an account offline, and
#: the worker's check of an Offline notice): reserved too (worker/store/suppressions.py SYSTEM_BY).
CALLBACK = "callback"
#: Entries one page request looks at at most while filtering (by key or target), so a filter that
#: matches nothing answers in bounded time with a cursor to continue.
SCAN_MAX = 5000
#: Refused calls (4xx: 403, 404, 409, 422…) of one key recorded per minute at most: a key hammering routes
#: its role does not allow, or ids that do not exist, stays on the record without filling Redis (the rest of
#: that minute is one marker entry).
REFUSALS_PER_MIN = 20


class AuditLog:
    """Append and read the audit stream."""

    def __init__(self, client: redis.Redis, prefix: str, retention_s: float) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.key = self.keys.audit
        self.retention_ms = int(retention_s * 1000)

    def record(self, *, key: str, role: str, action: str, target: str, status: int) -> str:
        """Append one entry; entries past the retention are trimmed in the same command."""
        return self.record_each(key=key, role=role, action=action, targets=[target], status=status)[0]

    def record_own(self, actor: str, action: str, target: str) -> str:
        """What no person did (:data:`WORKER`, :data:`CALLBACK`): the actor is the entry's key and role."""
        return self.record(key=actor, role=actor, action=action, target=target, status=200)

    def record_each(self, *, key: str, role: str, action: str, targets: list[str], status: int) -> list[str]:
        """One entry per target of one call (a bulk replay: each job it replayed), in one round trip."""
        oldest = max(0, int(time.time() * 1000) - self.retention_ms)
        pipe = self.redis.pipeline(transaction=False)
        for target in targets:
            fields: dict[FieldT, EncodableT] = {
                "key": key,
                "role": role,
                "action": action,
                "target": target,
                "status": status,
            }
            # exact trimming: a few entries a minute at most, and "kept N days" should mean N days
            pipe.xadd(self.key, fields, minid=oldest, approximate=False)
        return cast(list[str], pipe.execute())

    def record_refusal(self, *, key: str, role: str, action: str, targets: list[str], status: int) -> list[str]:
        """A refused call (4xx), recorded as :meth:`record_each` does up to :data:`REFUSALS_PER_MIN` a minute
        for the key; the next one becomes a marker saying the rest of the minute is not recorded."""
        counter = self.keys.audit_refused(key, int(time.time() // 60))
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(counter)
        pipe.expire(counter, 120)
        seen = int(pipe.execute()[0])
        if seen > REFUSALS_PER_MIN + 1:
            return []
        if seen == REFUSALS_PER_MIN + 1:
            targets = [f"(more refusals of this key this minute are not recorded; last: {targets[0]})"]
        return self.record_each(key=key, role=role, action=action, targets=targets, status=status)

    def page(
        self, *, limit: int = 50, cursor: str | None = None, key: str | None = None, target: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The newest entries first (older than ``cursor``), filtered by key name and/or target;
        ``next_cursor`` is None when there is nothing older."""
        items: list[dict[str, Any]] = []
        start = "+"
        if cursor:
            before = _before(cursor)
            if before is None:
                return items, None  # nothing is older than 0-0
            start = before
        scanned = 0
        while len(items) < limit and scanned < SCAN_MAX:
            batch = cast(
                list[tuple[str, dict[str, str]]], self.redis.xrevrange(self.key, start, "-", count=min(500, limit * 4))
            )
            if not batch:
                return items, None
            for entry_id, fields in batch:
                scanned += 1
                start = f"({entry_id}"
                if (key is None or fields.get("key") == key) and (target is None or fields.get("target") == target):
                    items.append(_entry(entry_id, fields))
                    if len(items) == limit:
                        break
        return items, start[1:]


#: The largest part of a stream id (both halves are unsigned 64-bit).
ID_PART_MAX = 2**64 - 1


def valid_cursor(cursor: str) -> bool:
    """``<ms>-<seq>`` with both parts within 64 bits (what Redis accepts as a stream id)."""
    ms, _, seq = cursor.partition("-")
    return cursor.isascii() and ms.isdigit() and seq.isdigit() and int(ms) <= ID_PART_MAX and int(seq) <= ID_PART_MAX


def _before(cursor: str) -> str | None:
    """The id just before ``cursor`` (inclusive bound for XREVRANGE), None before ``0-0``."""
    ms, seq = (int(part) for part in cursor.split("-", 1))
    if seq:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{ID_PART_MAX}" if ms else None


def _entry(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    return {
        "id": entry_id,
        "at": int(entry_id.split("-", 1)[0]) / 1000,
        "key": fields.get("key", ""),
        "role": fields.get("role", ""),
        "action": fields.get("action", ""),
        "target": fields.get("target", ""),
        "status": int(fields.get("status", 0)),
    }
