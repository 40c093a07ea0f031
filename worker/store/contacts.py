"""An account's contacts (friends, groups, public accounts, labels) and the state of its contact sync.

The last finished sync is one compact value per account (``contacts:{account}``: zlib-compressed JSON,
≈ 30 bytes a friend, see docs/benchmarks.md): it is always read whole (an audience, a filtered listing), and a
finished sync replaces it in one write, so a reader never sees half of two syncs. Public accounts (``gh_…``)
are kept in their own list and are never part of an audience.

A running sync is a small hash (``csync:{account}``: status, phase, cursor, counts) plus its staging lists
(the ids still to detail, the detail answers so far). Every step is one vendor call; its result and the
advanced cursor are written together, guarded by the run's id, so a step that finishes after a cancel or a
newer run writes nothing, and a step cut short by SIGKILL is simply done again (contact calls only read).
"""

from __future__ import annotations

import json
import re
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import redis

from worker.store import scripts
from worker.store.keys import Keys

#: What a listing's ``kind`` may be.
KINDS: Final = ("friend", "chatroom", "gh")
#: Characters a WeChat name may carry that cannot be sent back in a message (control characters but tab,
#: lone surrogates, U+FFFE/U+FFFF): dropped when a contact is stored, so ``{name}`` always renders.
_UNSENDABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
#: Longest name kept (WeChat nicknames are short; a vendor's garbage is bounded).
NAME_MAX: Final = 200
#: Format version of the stored value.
VERSION: Final = 1


def clean_name(value: Any) -> str:
    """A vendor's name as we keep it: text, sendable, bounded, without surrounding blanks."""
    if not isinstance(value, str):
        return ""
    return _UNSENDABLE.sub("", value).strip()[:NAME_MAX]


@dataclass(slots=True)
class Contact:
    """One friend, group or public account of an account."""

    wxid: str
    kind: str
    nickname: str = ""
    remark: str = ""
    #: label ids (as the vendor numbers them); friends only
    labels: tuple[str, ...] = ()
    #: members of a group, when the vendor said
    members: int | None = None

    @property
    def name(self) -> str:
        """What ``{name}`` renders: the remark the account gave, or else the contact's own nickname."""
        return self.remark or self.nickname


@dataclass(slots=True)
class ContactBook:
    """An account's contacts as of its last finished sync."""

    synced_at: float
    labels: dict[str, str] = field(default_factory=dict)
    friends: list[Contact] = field(default_factory=list)
    chatrooms: list[Contact] = field(default_factory=list)
    ghs: list[Contact] = field(default_factory=list)

    def of_kind(self, kind: str | None) -> list[Contact]:
        """Friends, groups or public accounts (all three when ``kind`` is None)."""
        if kind == "friend":
            return self.friends
        if kind == "chatroom":
            return self.chatrooms
        if kind == "gh":
            return self.ghs
        return [*self.friends, *self.chatrooms, *self.ghs]

    def label_ids(self, name: str) -> list[str]:
        """Ids of the labels called ``name`` (two after a rename: the caller decides it is ambiguous)."""
        return [lid for lid, lname in self.labels.items() if lname == name]

    def label_names(self, contact: Contact) -> list[str]:
        return [self.labels.get(lid, lid) for lid in contact.labels]

    def encode(self) -> bytes:
        """The stored form: short keys, lists not objects, then zlib."""
        doc = {
            "v": VERSION,
            "at": round(self.synced_at, 3),
            "l": [[lid, name] for lid, name in self.labels.items()],
            "f": [[c.wxid, c.nickname, c.remark, ",".join(c.labels)] for c in self.friends],
            "r": [[c.wxid, c.nickname, c.members] for c in self.chatrooms],
            "g": [[c.wxid, c.nickname] for c in self.ghs],
        }
        return zlib.compress(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(), 6)

    @classmethod
    def decode(cls, raw: bytes) -> ContactBook:
        doc = json.loads(zlib.decompress(raw))
        return cls(
            synced_at=float(doc["at"]),
            labels={str(lid): str(name) for lid, name in doc["l"]},
            friends=[Contact(w, "friend", n, r, tuple(x for x in str(ls).split(",") if x)) for w, n, r, ls in doc["f"]],
            chatrooms=[Contact(w, "chatroom", n, members=m) for w, n, m in doc["r"]],
            ghs=[Contact(w, "gh", n) for w, n in doc["g"]],
        )


class SyncStatus:
    """Values of a sync's ``status``."""

    RUNNING: Final = "running"
    DONE: Final = "done"
    FAILED: Final = "failed"
    CANCELLED: Final = "cancelled"


#: Fields of the sync hash that belong to one run (reset by a new run); the others describe the last
#: finished sync and stay until the next one finishes.
RUN_FIELDS: Final = (
    "status", "run", "phase", "cursor", "total", "attempts", "polls", "started_at", "ended_at", "error",
    "waiting", "calls", "labels_json", "ghs_json", "lists", "room",
)  # fmt: skip


class ContactStore:
    """Contacts and sync state of every account, in Redis."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.prefix = prefix
        #: the stored book is binary (zlib): read and written through a client that keeps bytes
        self.raw = _bytes_client(client)
        self._begin = scripts.register(client, "contacts_begin")
        self._end = scripts.register(client, "contacts_end")
        self._touch = scripts.register(client, "touch")

    # --- reads -------------------------------------------------------------------------------------------

    def book(self, account: str) -> ContactBook | None:
        """The last finished sync's contacts, or None when the account was never synced."""
        raw = self.raw.get(self.keys.contacts(account))
        return None if raw is None else ContactBook.decode(cast(bytes, raw))

    def state(self, account: str) -> dict[str, str]:
        """The sync hash as stored (empty when no sync was ever asked for)."""
        raw = cast(dict[Any, Any], self.redis.hgetall(self.keys.contact_sync(account)))
        return {_s(k): _s(v) for k, v in raw.items()}

    def status(self, account: str) -> dict[str, Any]:
        """What ``GET …/contacts/sync`` answers: the running (or last) run and the last finished sync."""
        data = self.state(account)
        status = data.get("status") or "never"
        total = int(data.get("total") or 0)
        cursor = int(data.get("cursor") or 0)
        out: dict[str, Any] = {
            "status": status,
            "phase": data.get("phase") or None,
            "friends": int(data.get("friends") or 0),
            "chatrooms": int(data.get("chatrooms") or 0),
            "labels": int(data.get("labels") or 0),
            "ghs": int(data.get("ghs") or 0),
            "synced_at": float(data["synced_at"]) if data.get("synced_at") else None,
            "error": data.get("error") or None,
            "progress": {"done": min(cursor, total), "total": total, "calls": int(data.get("calls") or 0)},
            "started_at": float(data["started_at"]) if data.get("started_at") else None,
            "ended_at": float(data["ended_at"]) if data.get("ended_at") else None,
            "waiting": data.get("waiting") or None,
        }
        return out

    # --- a run, from the API -----------------------------------------------------------------------------

    def start(self, account: str, *, now: float | None = None) -> tuple[dict[str, Any], bool]:
        """Start a sync unless one runs (then that one is answered); returns (status, started)."""
        now = time.time() if now is None else now
        sk = self.keys.contact_sync(account)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(sk)  # type: ignore[no-untyped-call]
                    if _s(pipe.hget(sk, "status")) == SyncStatus.RUNNING:
                        pipe.reset()
                        return self.status(account), False
                    pipe.multi()
                    pipe.hdel(sk, *RUN_FIELDS)
                    pipe.hset(sk, mapping={
                        "status": SyncStatus.RUNNING, "run": uuid.uuid4().hex, "phase": "labels", "cursor": 0,
                        "total": 0, "attempts": 0, "calls": 0, "started_at": f"{now:.3f}",
                    })  # fmt: skip
                    pipe.delete(self.keys.contact_sync_ids(account), self.keys.contact_sync_rows(account))
                    pipe.zadd(self.keys.contact_sync_due, {account: 0})
                    pipe.lpush(self.keys.wake, "1")
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        return self.status(account), True

    def cancel(self, account: str, *, now: float | None = None) -> dict[str, Any] | None:
        """Stop a running sync: nothing more is called, what it gathered is dropped, the last finished
        sync stays. None when no sync runs."""
        now = time.time() if now is None else now
        sk = self.keys.contact_sync(account)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(sk)  # type: ignore[no-untyped-call]
                    if _s(pipe.hget(sk, "status")) != SyncStatus.RUNNING:
                        pipe.reset()
                        return None
                    pipe.multi()
                    pipe.hset(sk, mapping={"status": SyncStatus.CANCELLED, "ended_at": f"{now:.3f}",
                                           "error": "cancelled by an operator"})  # fmt: skip
                    pipe.hdel(sk, "run", "waiting")
                    pipe.delete(self.keys.contact_sync_ids(account), self.keys.contact_sync_rows(account))
                    pipe.zrem(self.keys.contact_sync_due, account)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        return self.status(account)

    # --- steps, from the dispatcher and the worker ------------------------------------------------------

    def due(self, now: float, limit: int = 50) -> tuple[list[str], float | None]:
        """Accounts whose sync has a step that may run now, and when the first step not due yet may run
        (None: no other sync runs), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebyscore(self.keys.contact_sync_due, "-inf", now, 0, limit)
        pipe.zrangebyscore(self.keys.contact_sync_due, f"({now}", "+inf", 0, 1, withscores=True)
        due, later = pipe.execute()
        return [_s(a) for a in due], (float(later[0][1]) if later else None)

    def begin_step(self, account: str, token: str, *, ttl_s: float, now: float) -> str:
        """Take the account's lease for one step: '1' taken, '0' busy, or 'paused'/'down'/'gone'."""
        got = self._begin(args=[self.prefix, account, token, int(ttl_s * 1000), f"{now + ttl_s:.6f}"])
        return _s(got)

    def holds(self, account: str, token: str, *, ttl_s: float) -> bool:
        """Renew the step's lease; False when it is no longer the step's (a redelivered, stale task)."""
        return bool(self._touch(args=[self.prefix, account, token, int(ttl_s * 1000)]))

    def wait(self, account: str, until: float, reason: str) -> None:
        """Look at the account's sync again at ``until`` (its account is paused or down, or busy)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.contact_sync_due, {account: until}, xx=True)
        if reason:
            pipe.hset(self.keys.contact_sync(account), "waiting", reason)
        pipe.execute()

    def end_step(self, account: str, token: str, next_at: float | None) -> bool:
        """Free the lease; the sync's next step at ``next_at`` (None: it has none)."""
        return bool(self._end(args=[self.prefix, account, token, "" if next_at is None else f"{next_at:.6f}"]))

    def ids(self, account: str, start: int, count: int) -> list[str]:
        return [_s(x) for x in self.redis.lrange(self.keys.contact_sync_ids(account), start, start + count - 1)]

    def _if_run(self, account: str, run: str, write: Callable[[Any], None], *, running: bool = True) -> bool:
        """Apply ``write`` (a function filling a MULTI pipeline) only while the sync's run is still ``run``
        (and running): a step that ends after a cancel or a newer run writes nothing. False when it did not."""
        sk = self.keys.contact_sync(account)
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(sk)  # type: ignore[no-untyped-call]
                stale = _s(pipe.hget(sk, "run")) != run
                if stale or (running and _s(pipe.hget(sk, "status")) != SyncStatus.RUNNING):
                    pipe.reset()
                    return False
                pipe.multi()
                write(pipe)
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def advance(
        self,
        account: str,
        run: str,
        fields: Mapping[str, str | int | float],
        *,
        ids: Sequence[str] = (),
        rows: Sequence[Sequence[Any]] | None = None,
        incr_cursor: int = 0,
    ) -> bool:
        """Write one step's result with the run's new state, only if the run is still the one that asked."""
        k = self.keys
        sk = k.contact_sync(account)

        def write(pipe: Any) -> None:
            if fields:
                pipe.hset(sk, mapping=dict(fields))
            pipe.hdel(sk, "waiting")
            pipe.hincrby(sk, "calls", 1)
            if incr_cursor:
                pipe.hincrby(sk, "cursor", incr_cursor)
            for start in range(0, len(ids), 1000):
                pipe.rpush(k.contact_sync_ids(account), *ids[start : start + 1000])
            if rows:
                pipe.rpush(k.contact_sync_rows(account), json.dumps(rows, ensure_ascii=False, separators=(",", ":")))

        return self._if_run(account, run, write)

    def finish(self, account: str, run: str, book: ContactBook, *, now: float) -> bool:
        """Replace the account's contacts with the sync's, end the run, drop its staging: one transaction."""
        k = self.keys
        sk = k.contact_sync(account)

        def write(pipe: Any) -> None:
            pipe.set(k.contacts(account), book.encode())
            pipe.hset(sk, mapping={
                "status": SyncStatus.DONE, "phase": "done", "ended_at": f"{now:.3f}", "synced_at": f"{now:.3f}",
                "friends": len(book.friends), "chatrooms": len(book.chatrooms), "labels": len(book.labels),
                "ghs": len(book.ghs),
            })  # fmt: skip
            pipe.hdel(sk, "run", "waiting", "labels_json", "ghs_json", "lists", "room", "error")
            pipe.delete(k.contact_sync_ids(account), k.contact_sync_rows(account))

        return self._if_run(account, run, write)

    def fail(self, account: str, run: str, error: str, *, now: float) -> bool:
        """End the run as failed with the reason; the last finished sync stays."""
        k = self.keys
        sk = k.contact_sync(account)

        def write(pipe: Any) -> None:
            pipe.hset(sk, mapping={"status": SyncStatus.FAILED, "ended_at": f"{now:.3f}", "error": error[:500]})
            pipe.hdel(sk, "run", "waiting")
            pipe.delete(k.contact_sync_ids(account), k.contact_sync_rows(account))
            pipe.zrem(k.contact_sync_due, account)

        return self._if_run(account, run, write, running=False)

    def rows(self, account: str) -> Iterable[list[Any]]:
        """Every detail row the running sync gathered, in order."""
        for raw in self.redis.lrange(self.keys.contact_sync_rows(account), 0, -1):
            yield from json.loads(raw)

    def stored_bytes(self, account: str) -> int:
        """Bytes Redis uses for the account's contacts (MEMORY USAGE), for the benchmark."""
        return int(self.redis.memory_usage(self.keys.contacts(account), samples=0) or 0)


def _bytes_client(client: redis.Redis) -> redis.Redis:
    """A client on the same server that answers bytes (the shared one decodes answers as UTF-8 text)."""
    pool = client.connection_pool
    if not pool.connection_kwargs.get("decode_responses"):
        return client
    kwargs = {**pool.connection_kwargs, "decode_responses": False}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def _s(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
