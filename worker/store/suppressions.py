"""The suppression list: recipients an account (or every account) must not message (issue 19).

One hash per scope, ``supp:{account}`` or ``supp:*`` (every account): wxid -> a JSON record
``{reason, at, by, note}``. ``begin.lua`` reads the two hashes of a job's account at the moment of sending,
so a suppression added while a campaign runs stops its remaining deliveries; a suppressed delivery ends
``skipped`` (``skip_reason`` ``suppressed``) and costs no vendor call.

Entries come from operators (API, CLI, console, CSV import), from the vendor's callbacks (an opt-out
keyword, a removed contact) and from a permanent "not a friend" answer to a send.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, cast

import redis

from worker.store.keys import Keys

#: The scope that covers every account.
ALL_ACCOUNTS = "*"


class SuppressionReason(StrEnum):
    """Why a recipient is suppressed."""

    OPTED_OUT = "opted_out"  # they answered an opt-out keyword (退订, TD, …) in a private chat
    NOT_FRIEND = "not_friend"  # a send was refused: not (or no longer) a friend of the account
    CONTACT_REMOVED = "contact_removed"  # the vendor reported the contact removed (GeWe DelContacts)
    MANUAL = "manual"  # an operator added it


REASONS = tuple(r.value for r in SuppressionReason)

#: The ``by`` the system itself writes: a vendor callback (opt-out, contact removed) and a vendor's refusal
#: (not a friend). No operator key may be named so (``scheduler/api/routers/keys.py``), or its entries would
#: read as the recipient's own opt-out.
SYSTEM_BY = ("callback", "vendor")


@dataclass(frozen=True, slots=True)
class Suppression:
    """One entry: ``account`` is None for every account."""

    account: str | None
    to: str
    reason: str
    at: float
    by: str
    note: str

    def public(self) -> dict[str, Any]:
        return {"account": self.account, "to": self.to, "reason": self.reason, "at": self.at, "by": self.by,
                "note": self.note}  # fmt: skip


class Row(NamedTuple):
    """One entry to store in bulk (an import): ``at`` and ``by`` as a file gave them (an export read back),
    None for now and the importing key."""

    account: str | None
    to: str
    reason: str
    note: str = ""
    at: float | None = None
    by: str | None = None


def scope_of(account: str | None) -> str:
    """The hash scope of an account id (None or ``*``: every account)."""
    return ALL_ACCOUNTS if account in (None, "", ALL_ACCOUNTS) else str(account)


class Suppressions:
    """Add, read and remove suppressions."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)

    def add(
        self,
        account: str | None,
        to: str,
        reason: str,
        *,
        by: str,
        note: str = "",
        keep_existing: bool = False,
        at: float | None = None,
    ) -> bool:
        """Suppress ``to`` for ``account`` (None: every account). ``keep_existing``: an entry already there
        stays as it is (automatic sources: the first reason and time are the ones that matter). True when a
        new entry was written."""
        scope = scope_of(account)
        record = json.dumps(
            {"reason": reason, "at": round(at if at is not None else time.time(), 3), "by": by, "note": note},
            ensure_ascii=False,
        )
        pipe = self.redis.pipeline()
        if keep_existing:
            pipe.hsetnx(self.keys.suppressions(scope), to, record)
        else:
            pipe.hset(self.keys.suppressions(scope), to, record)
        pipe.sadd(self.keys.suppression_scopes, scope)
        written, _ = pipe.execute()
        return bool(written) or not keep_existing

    def add_many(self, rows: Iterable[Row | tuple[str | None, str, str, str]], *, by: str) -> tuple[int, int]:
        """Store rows (account, to, reason, note[, at, by]) in one pipeline; a row without ``at`` is dated now,
        one without ``by`` is the given ``by``'s. An entry the system wrote (``SYSTEM_BY``: the recipient's own
        opt-out, a vendor's refusal) is kept as it is: an import cannot rewrite the record of who opted out and
        when (attack round 4); lifting one is a DELETE, audited on its own. Returns (stored, kept)."""
        given_rows = [Row(*given) for given in rows]
        probe = self.redis.pipeline(transaction=False)
        for row in given_rows:
            probe.hget(self.keys.suppressions(scope_of(row.account)), row.to)
        existing = probe.execute() if given_rows else []
        pipe = self.redis.pipeline()
        n = kept = 0
        now = round(time.time(), 3)
        scopes: set[str] = set()
        for row, before in zip(given_rows, existing, strict=True):
            if before and json.loads(before).get("by") in SYSTEM_BY:
                kept += 1
                continue
            scope = scope_of(row.account)
            scopes.add(scope)
            at = now if row.at is None else round(row.at, 3)
            record = json.dumps({"reason": row.reason, "at": at, "by": row.by or by, "note": row.note},
                                ensure_ascii=False)  # fmt: skip
            pipe.hset(self.keys.suppressions(scope), row.to, record)
            n += 1
        if scopes:
            pipe.sadd(self.keys.suppression_scopes, *scopes)
        pipe.execute()
        return n, kept

    def remove(self, account: str | None, to: str) -> bool:
        """Lift one suppression; False when there was none."""
        return bool(self.redis.hdel(self.keys.suppressions(scope_of(account)), to))

    def get(self, account: str | None, to: str) -> Suppression | None:
        scope = scope_of(account)
        raw = self.redis.hget(self.keys.suppressions(scope), to)
        return _entry(scope, to, raw) if raw else None

    def page(
        self, *, account: str | None = None, reason: str | None = None, cursor: str = "", limit: int = 100
    ) -> tuple[list[Suppression], str]:
        """Up to ``limit`` entries (of one scope when ``account`` is given: an account id or ``*``), and the
        cursor of the next page ('' at the end). The cursor is ``scope|hscan cursor``."""
        scopes = (
            [scope_of(account)]
            if account is not None
            else sorted(str(s) for s in self.redis.smembers(self.keys.suppression_scopes))
        )
        start_scope, _, position = cursor.partition("|")
        if start_scope:
            scopes = [s for s in scopes if s >= start_scope]
        found: list[Suppression] = []
        for scope in scopes:
            scan = int(position) if scope == start_scope and position.isdigit() else 0
            while True:
                scan, chunk = cast(
                    tuple[int, dict[str, str]],
                    self.redis.hscan(self.keys.suppressions(scope), scan, count=max(limit, 10)),
                )
                for to, raw in sorted(chunk.items()):
                    entry = _entry(scope, to, raw)
                    if reason is None or entry.reason == reason:
                        found.append(entry)
                if scan == 0:
                    break
                if len(found) >= limit:
                    return found, f"{scope}|{scan}"
            position = ""
            if len(found) >= limit:
                later = [s for s in scopes if s > scope]
                return found, (f"{later[0]}|0" if later else "")
        return found, ""

    def all(self, *, account: str | None = None, reason: str | None = None) -> Iterator[Suppression]:
        """Every entry (exports), page by page."""
        cursor = ""
        while True:
            entries, cursor = self.page(account=account, reason=reason, cursor=cursor, limit=500)
            yield from entries
            if not cursor:
                return


def _entry(scope: str, to: str, raw: str | bytes) -> Suppression:
    try:
        data = json.loads(raw)
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    return Suppression(
        account=None if scope == ALL_ACCOUNTS else scope,
        to=to,
        reason=str(data.get("reason", "")),
        at=float(data.get("at") or 0),
        by=str(data.get("by", "")),
        note=str(data.get("note", "")),
    )
