"""One step of an account's contact sync: one vendor call under the account's lease, then the lease back.

A sync is vendor traffic on a real WeChat account, so it runs like a send: the dispatcher hands a step out
only when no session holds the account (``contacts_begin.lua`` takes the lease, and flags a session in
flight so it ends at its next job); the step makes exactly one call, writes its result and the advanced
cursor (guarded by the run's id), frees the lease and asks for its next step after the contact calls' own
gap (``BROADCAST_CONTACTS_GAP_MIN_S``…``MAX_S``, drawn at random: E云's docs ask for 300-800 ms). The call
goes through ``call_under_lease`` like a send: a failure that provably never left is retried at once, the
step's lease renewed first. Sends on the
account go on between two steps; a 10,000-friend sync never holds the account longer than one call.

Phases: ``labels`` → ``list`` (GeWe ``fetchContactsList``, E云 ``initAddressList``) → ``poll`` while the
vendor is still gathering (GeWe's list cache, E云's ``getAddressList``) → ``details`` (one batch of ids a
step) → ``rooms`` (one group's member list a step, only with the account option ``contacts_members``: a
member list is a heavy call, made for a count) → the book is assembled and replaces the last one in one write. A worker killed mid-step leaves the
cursor where it was: the step is handed out again once the lease expired, and repeats the read.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

import httpx

from worker.errors import AccountDownError, PermanentError, ThrottledError, UnsupportedError, VendorError
from worker.execution.lease import call_under_lease
from worker.logs import REDACTOR
from worker.settings import Settings
from worker.store.accounts import AccountStore
from worker.store.contacts import Contact, ContactBook, ContactStore, clean_name
from worker.vendors.base import HttpBackend, backend_for

log = logging.getLogger("broadcast.contacts")

#: Most ids detailed in one call, whatever an account option asks (GeWe's schema: ``maxItems: 100``).
BATCH_MAX = 100
#: Marks a staged row that carries a group's member count (``[MEMBERS, room, count]``), not a contact.
MEMBERS = "@members"

T = TypeVar("T")


class ContactSyncRunner:
    """Runs sync steps for one worker process (thread-safe: every step reads its state from Redis)."""

    def __init__(self, settings: Settings, store: ContactStore, accounts: AccountStore, http: httpx.Client) -> None:
        self.settings = settings
        self.store = store
        self.accounts = accounts
        self.http = http
        self.rng = random.Random()
        self.sleep: Callable[[float], None] | None = None  # the quick retries' waits (tests inject one)

    def gap(self) -> float:
        """The wait before the next contact call on the account: random within the configured bounds."""
        low, high = self.settings.contacts_gap_min_s, self.settings.contacts_gap_max_s
        return self.rng.uniform(low, max(low, high))

    def step(self, account_id: str, token: str) -> dict[str, Any]:
        """Run the sync's next step under the lease ``token`` (taken by the dispatcher)."""
        if not self.store.holds(account_id, token, ttl_s=self.settings.lease_ttl_s):
            return {"account": account_id, "step": "lease_lost"}  # a stale message: the step was handed out again
        state = self.store.state(account_id)
        run = state.get("run", "")
        if state.get("status") != "running" or not run:
            self.store.end_step(account_id, token, None)
            return {"account": account_id, "step": "none"}
        account = self.accounts.get(account_id)
        if account is None:
            self.store.fail(account_id, run, "the account was deleted", now=time.time())
            self.store.end_step(account_id, token, None)
            return {"account": account_id, "step": "failed"}
        REDACTOR.add(account.spec.token.get_secret_value())
        backend = cast(HttpBackend, backend_for(account.vendor_account(), self.http))
        phase = state.get("phase") or "labels"
        next_at: float | None = None
        try:
            done = self._phase(account_id, token, run, phase, state, backend, account.spec.options)
            next_at = None if done else time.time() + self.gap()
        except UnsupportedError as exc:
            self.store.fail(account_id, run, f"contacts_unsupported: {exc}", now=time.time())
        except VendorError as exc:
            next_at = self._failed(account_id, run, phase, state, exc)
        except Exception as exc:  # a bug reading an answer: say so on the sync, never leave it running
            log.exception("contact sync step failed", extra={"account": account_id})
            self.store.fail(
                account_id, run, f"{phase}: {type(exc).__name__}: the answer could not be read", now=time.time()
            )
        finally:
            self.store.end_step(account_id, token, next_at)
        log.info("contact sync step", extra={"account": account_id, "outcome": phase})
        return {"account": account_id, "step": phase, "next_at": next_at}

    # --- phases -------------------------------------------------------------------------------------------

    def _phase(
        self,
        account_id: str,
        token: str,
        run: str,
        phase: str,
        state: dict[str, str],
        backend: HttpBackend,
        options: dict[str, str],
    ) -> bool:
        """One vendor call of ``phase`` and its result written; True when the sync finished."""
        store = self.store

        def renew() -> bool:
            return store.holds(account_id, token, ttl_s=self.settings.lease_ttl_s)

        def under_lease(call: Callable[[], T]) -> T:
            """The step's call: quick retries for what never left, the step's lease renewed before each."""
            return call_under_lease(call, self.settings, renew, self.sleep)

        if phase == "labels":
            labels = under_lease(backend.contact_labels)
            fields: dict[str, str | int | float] = {
                "labels_json": json.dumps(labels, ensure_ascii=False), "phase": "list", "attempts": 0,
            }  # fmt: skip
            store.advance(account_id, run, fields)
            return False
        if phase in ("list", "poll"):
            timeout_s = self.settings.contacts_list_timeout_s
            listed = under_lease(lambda: backend.contact_list(first=phase == "list", timeout_s=timeout_s))
            if listed is None:
                polls = int(state.get("polls") or 0) + (phase == "poll")
                if polls > self.settings.contacts_max_polls:
                    raise _NotReady(f"the vendor's contact list was not ready after {polls} polls")
                store.advance(account_id, run, {"phase": "poll", "polls": polls, "attempts": 0})
                return False
            friends = [i for i in listed.friends if not i.startswith("gh_")]
            ghs = sorted({*listed.ghs, *(i for i in listed.friends if i.startswith("gh_"))})
            friend_ids, room_ids = list(dict.fromkeys(friends)), list(dict.fromkeys(listed.chatrooms))
            ids = [*friend_ids, *room_ids]
            fields = {
                "phase": "details", "cursor": 0, "total": len(ids), "attempts": 0,
                "ghs_json": json.dumps(ghs), "lists": f"{len(friend_ids)},{len(room_ids)}",
            }  # fmt: skip
            store.advance(account_id, run, fields, ids=ids)
            if not ids:
                return self._assemble(account_id, run)
            return False
        if phase == "details":
            cursor, total = int(state.get("cursor") or 0), int(state.get("total") or 0)
            if cursor >= total:
                return self._assemble(account_id, run)
            batch = min(BATCH_MAX, max(1, _int(options.get("contacts_batch"), backend.contact_batch)))
            ids = store.ids(account_id, cursor, batch)
            details = {d.wxid: d for d in under_lease(lambda: backend.contact_details(ids))}
            rows: list[list[Any]] = []
            for wxid in ids:  # every id asked keeps its place, with its name when the vendor gave one
                d = details.get(wxid)
                rows.append([
                    wxid, clean_name(d.nickname) if d else "", clean_name(d.remark) if d else "",
                    ",".join(d.labels) if d else "", d.members if d else None,
                ])  # fmt: skip
            done = cursor + len(ids) >= total
            kept = int((state.get("lists") or "0,0").split(",")[1])
            members = done and kept > 0 and options.get("contacts_members", "").lower() in ("1", "true", "yes")
            step: dict[str, str | int | float] = {"attempts": 0, **({"phase": "rooms", "room": 0} if members else {})}
            store.advance(account_id, run, step, rows=rows, incr_cursor=len(ids))
            return self._assemble(account_id, run) if done and not members else False
        if phase == "rooms":  # one group's member list a step (the account option ``contacts_members``)
            listed_friends, kept = (int(x) for x in (state.get("lists") or "0,0").split(","))
            room_no = int(state.get("room") or 0)
            if room_no >= kept:
                return self._assemble(account_id, run)
            room = store.ids(account_id, listed_friends + room_no, 1)[0]
            count = under_lease(lambda: backend.contact_room_members(room))
            store.advance(account_id, run, {"attempts": 0, "room": room_no + 1}, rows=[[MEMBERS, room, count]])
            return self._assemble(account_id, run) if room_no + 1 >= kept else False
        raise _NotReady(f"unknown sync phase {phase!r}")

    def _assemble(self, account_id: str, run: str) -> bool:
        """Build the book from the run's staging and replace the account's contacts with it."""
        state = self.store.state(account_id)
        labels = {str(lid): clean_name(name) for lid, name in json.loads(state.get("labels_json") or "[]")}
        ghs = json.loads(state.get("ghs_json") or "[]")
        book = ContactBook(synced_at=time.time(), labels=labels)
        counts: dict[str, int | None] = {}
        for row in self.store.rows(account_id):
            if row[0] == MEMBERS:
                counts[row[1]] = row[2]
                continue
            wxid, nickname, remark, label_csv, members = row
            if str(wxid).endswith("@chatroom"):
                book.chatrooms.append(Contact(wxid, "chatroom", nickname, members=members))
            else:
                book.friends.append(
                    Contact(wxid, "friend", nickname, remark, tuple(x for x in label_csv.split(",") if x))
                )
        for room in book.chatrooms:
            room.members = counts.get(room.wxid, room.members)
        book.ghs = [Contact(str(g), "gh") for g in ghs]
        self.store.finish(account_id, run, book, now=book.synced_at)
        return True

    def _failed(self, account_id: str, run: str, phase: str, state: dict[str, str], exc: VendorError) -> float | None:
        """A failed call: an account that is down or a refused call ends the sync with the reason; anything
        else (the call may simply have failed) is tried again after a growing wait, a few times."""
        now = time.time()
        attempts = int(state.get("attempts") or 0) + 1
        final = isinstance(exc, AccountDownError | PermanentError | _NotReady)
        if final or attempts >= self.settings.contacts_max_attempts:
            self.store.fail(account_id, run, f"{phase}: {exc.error_class}: {exc}", now=now)
            return None
        wait = min(60.0, 2.0**attempts) * (3 if isinstance(exc, ThrottledError) else 1)
        self.store.advance(account_id, run, {"attempts": attempts, "error": f"{phase}: {exc.error_class}: {exc}"})
        return now + wait + self.gap()


class _NotReady(PermanentError):
    """The vendor never produced the list, or the sync's state is not one this code knows."""

    error_class = "not_ready"


def new_token() -> str:
    """A lease token for one sync step (never a send session's or a probe's)."""
    return f"csync:{uuid.uuid4().hex}"


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default
