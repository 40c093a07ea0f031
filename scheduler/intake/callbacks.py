"""Vendor callbacks (issue 19): store first, process after.

``POST /v1/callbacks/{account}?key=…`` checks the account's callback key (stored as its SHA-256, compared in
constant time), then appends the raw body to the stream ``cb:in`` and answers 200: vendors give up after
about three seconds, so nothing else happens in the request. The dispatcher's process reads the stream
(:class:`CallbackProcessor`, a consumer group: an entry read by a process that died is claimed again) and
acts on what it understands:

- a private text whose whole content is an opt-out keyword (``BROADCAST_OPTOUT_KEYWORDS``) suppresses the
  sender for the account (``opted_out``) and, when ``BROADCAST_OPTOUT_REPLY`` is set, queues one reply
  (paced like any send; sent once per recipient: only a new suppression replies, under an idempotency key);
- GeWe ``DelContacts`` suppresses the removed contact (``contact_removed``);
- GeWe ``Offline`` marks the account ``down`` with the vendor's word, as a send that finds it offline does,
  once the vendor's online check agrees (``worker/execution/offline.py``: a worker asks it under the
  account's lease; a forged notice cannot stop an account the vendor calls online).

Shapes (``docs/vendors.md``, "Callbacks"): GeWe's 回调消息详解 page (``Wangnov/gewe-rs``,
``docs/GeweAPI-Official/消息模块/回调消息详解.md``: AddMsg, DelContacts, Offline; dedupe on
``Appid + Data.NewMsgId``); E云's private text ``messageType`` 60001 with ``data.fromUser``, ``content``,
``newMsgId``, ``self`` (the ``2048537793/WkApi`` mirror; dedupe on ``toUser + newMsgId + fromUser``, as its
callback page says). Vendors repeat deliveries (Devo919/Gewechat#173), so a message id is remembered for
``BROADCAST_CALLBACK_DEDUPE_H`` hours; ``Offline`` and ``DelContacts``, which carry none, are known by what
they mean (the account, the removed contact, the vendor's ``CreateTime`` if any), not by their bytes
(:func:`_event_once`). A body that is not JSON, past :data:`CALLBACK_JSON_LIMITS`
(``worker.jsonsafe``, the bounded parser every untrusted JSON goes through), or of no known shape is kept a
while in ``cb:odd`` (newest first, bounded) and counted; it still gets a 200 so the vendor stops retrying.

Dedupe stops replays, not forgeries: whoever holds an account's callback URL can write new events. So what
callbacks may change is capped per account (``BROADCAST_CALLBACK_CHANGES_PER_H`` new suppressions an hour).
An opt-out is a compliance matter and is never dropped for being over the cap: it is held
(:class:`HeldChanges`, the stream ``cb:held:{account}``, bounded in length and age), counted
``held_over_cap``, and the audit trail gets one marker (``callback.over_cap``) per account and hour; an
operator lists and applies held changes (``/v1/accounts/{id}/callback/held``) or lets them expire.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, cast

import redis

from scheduler.intake.producer import RECIPIENT, Producer
from worker import jsonsafe
from worker.settings import Settings, optout_form
from worker.store.accounts import Account, AccountStore
from worker.store.audit import CALLBACK, AuditLog
from worker.store.keys import Keys
from worker.store.suppressions import SuppressionReason, Suppressions

log = logging.getLogger("broadcast.callbacks")

#: Bodies above this are not stored (answered 200, counted ``oversize``): what we act on (a private text whose
#: whole content is an opt-out keyword, DelContacts, Offline) is about 1 KiB; only image/file callbacks with
#: an inline thumbnail come near this, and those are ignored anyway. A 4xx would only make the vendor retry.
MAX_CALLBACK_BODY = 64 * 1024
#: JSON past these is malformed (GeWe's deepest documented field is three levels down).
CALLBACK_JSON_LIMITS = replace(jsonsafe.SMALL_JSON_LIMITS, depth=16)
#: The inbox holds at most this many unprocessed entries and about this many bytes of bodies (a stopped
#: dispatcher must not fill Redis): past either, a delivery is refused with 503 and Retry-After, so the
#: vendor retries later instead of it being dropped. Bound: INBOX_BYTES + INBOX_MAXLEN × ~100 B of overhead.
INBOX_MAXLEN = 100_000
INBOX_BYTES = 64 * 1024 * 1024
INBOX_RETRY_S = 60
#: Unknown or malformed bodies kept for a look: this many, newest first, each cut to ODD_BYTES, for ODD_TTL_S.
ODD_KEEP = 500
ODD_BYTES = 4096
ODD_TTL_S = 3 * 86400
GROUP = "process"
#: ``Offline`` notices checked with the vendor per account and hour at most: each check is a vendor call the
#: account's pacing counts, so forged notices (or a vendor's repeats: a notice the vendor checks is not kept
#: for the dedupe window) must not use up its sends. Past it a notice does nothing (``offline_over_cap``): an
#: account really logged out is found by its next send.
OFFLINE_CHECKS_PER_H = 6
#: Held changes (over the hourly cap) kept per account at most, and for how long: an attacker with a leaked
#: URL cannot grow Redis past HELD_MAX entries (~200 B each) per account. Past HELD_MAX a change is not kept:
#: counted ``held_full`` and logged (the audit marker of the hour says the account is over its cap).
HELD_MAX = 10_000
HELD_TTL_S = 7 * 86400
#: Held changes one apply call writes at most (the rest stay held: call again).
APPLY_MAX = 1000


#: A vendor message id longer than this is remembered by its digest (GeWe's and E云's ids are numbers).
SEEN_ID_MAX = 200


class Kind(StrEnum):
    """What a callback turned out to be (the ``broadcast_callbacks`` metric's label)."""

    OPTED_OUT = "opted_out"
    CONTACT_REMOVED = "contact_removed"
    OFFLINE = "offline"
    TEXT = "text"  # a private text that is not an opt-out: nothing to do
    IGNORED = "ignored"  # a known shape we do not act on (group messages, images, contact changes…)
    DUPLICATE = "duplicate"
    MISMATCH = "mismatch"  # for another instance, or another vendor's shape: kept in cb:odd, nothing done
    STALE = "stale"  # an Offline from before the account was last resumed: nothing done
    HELD_OVER_CAP = "held_over_cap"  # a new suppression past the account's hourly cap: held, not applied
    #: an Offline past OFFLINE_CHECKS_PER_H vendor checks this hour: nothing done (the sends find a logout)
    OFFLINE_OVER_CAP = "offline_over_cap"
    HELD_FULL = "held_full"  # the same, but the account's held changes are at their bound: not kept (logged)
    UNKNOWN = "unknown"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Event:
    """A parsed callback: its kind, the vendor's message id (``dedupe``), the person and the text; whose it
    is (``vendor``, ``instance``: GeWe ``Appid`` / E云 ``data.wId``, the account's ``instance``; ``own``: the
    account's own wxid, GeWe ``Wxid`` / E云 ``wcId``) and when the vendor says it happened (``at``, or 0)."""

    kind: Kind
    dedupe: str = ""
    who: str = ""
    text: str = ""
    vendor: str = ""
    instance: str = ""
    own: str = ""
    at: float = 0.0


def new_key() -> str:
    """A fresh callback key: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def callback_url(base: str, account: str, key: str) -> str:
    return f"{base.rstrip('/')}/v1/callbacks/{account}?key={key}"


class CallbackInbox:
    """The receiving side (the API): keys and the raw inbox."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)

    def rotate(self, account: str, key: str | None = None) -> str:
        """Make ``key`` (default: a new one) the account's; the old one stops working at once. Only its
        digest is stored."""
        key = key or new_key()
        self.redis.set(self.keys.callback_key(account), _digest(key))
        return key

    def has_key(self, account: str) -> bool:
        return bool(self.redis.exists(self.keys.callback_key(account)))

    def verify(self, account: str, key: str) -> bool:
        """The key is the account's, compared in constant time."""
        stored = self.redis.get(self.keys.callback_key(account))
        return bool(stored) and bool(key) and hmac.compare_digest(_digest(key), str(stored))

    def full(self) -> bool:
        """The inbox holds INBOX_MAXLEN entries or INBOX_BYTES of bodies (two cheap reads)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.keys.callback_inbox)
        pipe.get(self.keys.callback_inbox_bytes)
        length, size = pipe.execute()
        return int(length) >= INBOX_MAXLEN or int(size or 0) >= INBOX_BYTES

    def store(self, account: str, body: bytes) -> None:
        """Append one delivery to the inbox (its size added to the inbox's byte count) and wake the
        dispatcher (it processes the inbox)."""
        now = f"{time.time():.3f}"
        try:
            text, bad = body.decode("utf-8"), False
        except UnicodeDecodeError:  # kept readable (the store answers text); processed as malformed
            text, bad = body.decode("utf-8", "replace"), True
        # what is stored is counted: a byte that is not UTF-8 is stored as U+FFFD, three bytes
        size = len(text.encode("utf-8")) if bad else len(body)
        fields = {"a": account, "b": text, "t": now, "n": str(size)}
        if bad:
            fields["bad"] = "1"
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self.keys.callback_inbox, fields)  # type: ignore[arg-type]
        pipe.incrby(self.keys.callback_inbox_bytes, size)
        pipe.hincrby(self.keys.stat("callbacks"), "received", 1)
        pipe.lpush(self.keys.wake, "1")
        pipe.ltrim(self.keys.wake, 0, 9)
        pipe.execute()

    def odd(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest unknown or malformed bodies kept (newest first)."""
        raw = cast(list[str], self.redis.lrange(self.keys.callback_odd, 0, limit - 1))
        return [json.loads(r) for r in raw]


# --- parsing (pure) -------------------------------------------------------------------------------------


def load_bounded(body: bytes) -> Any:
    """The body as JSON within :data:`worker.jsonsafe.SMALL_JSON_LIMITS` (depth, breadth, values), or
    ValueError (a :class:`~worker.jsonsafe.JsonLimitError` is one). Size is bounded by the route (413)."""
    return jsonsafe.loads(body.decode("utf-8"), CALLBACK_JSON_LIMITS, "callback")


def _string(value: Any) -> str:
    """GeWe wraps strings as ``{"string": …}``; E云 sends them plain. Text Redis cannot store (a lone
    surrogate, from a ``\\ud800`` escape) has it replaced: an id then matches nothing, and processing goes on."""
    if isinstance(value, dict):
        value = value.get("string")
    return _storable(value) if isinstance(value, str) else ""


def _storable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return ""
    return _storable(str(value))


def _epoch(value: Any) -> float:
    """A vendor's timestamp or 0: seconds, milliseconds past 1e12, microseconds past 1e15, as a number or a
    string of digits; anything else (not finite, negative, past the year 9999) is no time."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    try:
        seconds = float(value)
    except OverflowError:  # an integer past any float: no time
        return 0.0
    if seconds > 1e15:
        seconds /= 1e6
    elif seconds > 1e12:
        seconds /= 1e3
    return seconds if 0 < seconds < 253402300800 else 0.0  # math.isfinite too: nan fails both comparisons


def _person(value: str) -> str:
    return value if RECIPIENT.fullmatch(value) else ""


def parse(body: bytes) -> Event:
    """What one callback body says (never raises)."""
    try:
        doc = load_bounded(body)
    except (ValueError, RecursionError):
        return Event(Kind.MALFORMED)
    if not isinstance(doc, dict):
        return Event(Kind.MALFORMED)
    if isinstance(doc.get("TypeName"), str):
        return _gewe(doc)
    if isinstance(doc.get("messageType"), str | int) and not isinstance(doc.get("messageType"), bool):
        return _ecloud(doc)
    return Event(Kind.UNKNOWN)


def _gewe(doc: dict[str, Any]) -> Event:
    kind, appid, own = doc["TypeName"], _id(doc.get("Appid")), _string(doc.get("Wxid"))
    data = doc.get("Data")
    data = data if isinstance(data, dict) else {}
    base = Event(Kind.IGNORED, vendor="gewe", instance=appid, own=own)
    at = _epoch(data.get("CreateTime") or doc.get("CreateTime"))
    if kind == "Offline":
        text = "GeWe Offline callback: the account was logged out (掉线)"
        return replace(base, kind=Kind.OFFLINE, dedupe=_event_once(appid, kind, at), text=text, at=at)
    if kind == "DelContacts":
        who = _person(_string(data.get("UserName")))
        if not who:
            return Event(Kind.MALFORMED)
        return replace(base, kind=Kind.CONTACT_REMOVED, dedupe=_event_once(appid, kind, at, who), who=who, at=at)
    if kind != "AddMsg":
        return replace(base, kind=Kind.IGNORED)  # ModContacts and the rest: nothing to do
    if data.get("MsgType") != 1:
        return replace(base, kind=Kind.IGNORED)
    sender, msg_id = _person(_string(data.get("FromUserName"))), _id(data.get("NewMsgId"))
    if not sender or not msg_id:
        return Event(Kind.MALFORMED)
    if sender == own or sender.endswith("@chatroom"):
        return replace(base, kind=Kind.IGNORED)  # our own message, or a group's
    text = _string(data.get("Content"))
    return replace(base, kind=Kind.TEXT, dedupe=f"gewe:{appid}:{msg_id}", who=sender, text=text)


def _event_once(appid: str, kind: str, at: float, *what: str) -> str:
    """The dedupe key of a GeWe ``Offline`` or ``DelContacts``, which carry no message id: what the event
    means, never its bytes, so the same event sent again with other spacing, its keys in another order or
    fields added (or changed that nothing here reads: ``Wxid``, ``DeleteContactScen``) is a duplicate.

    It is the account (``Appid``, which must be the account's instance), the removed contact for
    ``DelContacts`` (``what``) and when the vendor says the event happened (``at``: ``Data.CreateTime`` or
    ``CreateTime``, seconds or milliseconds, by :func:`_epoch`), so a later logout or removal that says so
    acts again. GeWe's 回调消息详解 page (``Wangnov/gewe-rs``, ``docs/GeweAPI-Official/消息模块/``) shows both
    without a ``CreateTime`` (Offline ``{TypeName, Appid, Wxid}``, DelContacts ``{…, Data: {UserName,
    DeleteContactScen}}``): then nothing in the body tells a later event from a replay, and the event acts
    once per dedupe window (``BROADCAST_CALLBACK_DEDUPE_H``). A canonical form of the whole document would
    still let an added field through. Missing a real one is the safe side: the next send to an account
    logged out again finds it offline and marks it down, and one to a contact removed again suppresses it
    ``not_friend``; acting on a replay would stop an account an operator has just resumed."""
    meaning = json.dumps([kind, f"{at:.3f}" if at else "", *what])
    return f"gewe:{appid}:{kind}:{hashlib.sha256(meaning.encode()).hexdigest()[:32]}"


def _ecloud(doc: dict[str, Any]) -> Event:
    data = doc.get("data")
    data = data if isinstance(data, dict) else {}
    own = _string(doc.get("wcId"))
    base = Event(Kind.IGNORED, vendor="ecloud", instance=_id(data.get("wId") or doc.get("wId")), own=own)
    if str(doc["messageType"]) != "60001":  # 60001: a private text
        return replace(base, kind=Kind.IGNORED)
    if data.get("self") in (True, 1, "true", "True", "1"):  # the account's own message (sent as text too)
        return replace(base, kind=Kind.IGNORED)
    sender, msg_id = _person(_string(data.get("fromUser"))), _id(data.get("newMsgId"))
    if not sender or not msg_id:
        return Event(Kind.MALFORMED)
    if sender == own or sender.endswith("@chatroom"):
        return replace(base, kind=Kind.IGNORED)  # our own message, or a group's
    dedupe = f"ecloud:{_string(data.get('toUser'))}:{msg_id}:{sender}"
    return replace(base, kind=Kind.TEXT, dedupe=dedupe, who=sender, text=_string(data.get("content")))


#: Ids an opt-out reply never goes to: WeChat's system accounts (文件传输助手, 微信团队, 朋友推荐消息, …).
SYSTEM_IDS = frozenset(
    {"filehelper", "weixin", "fmessage", "medianote", "floatbottle", "qmessage", "qqmail", "tmessage", "qqsync",
     "newsapp", "blogapp", "masssendapp", "feedsapp", "voipapp", "voicevoip", "voiceinputapp", "officialaccounts",
     "notification_messages", "notifymessage", "wxitil", "userexperience_alarm", "helper_entry", "mphelper",
     "lbsapp", "shakeapp", "linkedinplugin", "facebookapp", "meishiapp", "cardpackage", "exmail_tool", "pc_share"}
)  # fmt: skip


def repliable(who: str, *own: str) -> bool:
    """A person an automatic reply may go to: not a system id, an official account (gh_…), a group or
    another kind of id (…@openim, …@stranger), nor the account itself."""
    return bool(who) and who not in SYSTEM_IDS and not who.startswith("gh_") and "@" not in who and who not in own


# --- changes held over the hourly cap ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Held:
    """A change a callback asked for past the account's hourly cap: the suppression it would have added
    (``reason``, ``who``: the sender or removed contact, ``note``), the SHA-256 of the body that asked
    (``digest``), when the API received it (``at``) and when it was held (``held_at``)."""

    id: str
    reason: str
    who: str
    note: str
    digest: str
    at: float
    held_at: float

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "reason": self.reason, "from": self.who, "note": self.note, "digest": self.digest,
                "at": self.at, "held_at": self.held_at}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Applied:
    """What one apply did: suppressions written, held changes already suppressed, held changes left."""

    applied: list[str]
    already: int
    remaining: int


class HeldChanges:
    """The per-account stream of held changes: appended by the processor, listed and applied by operators,
    trimmed by age (:data:`HELD_TTL_S`) as entries are added or read."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.suppressions = Suppressions(client, prefix)

    def _oldest(self) -> str:
        return str(max(0, int((time.time() - HELD_TTL_S) * 1000)))

    def hold(self, account: str, *, reason: str, who: str, note: str, digest: str, at: float) -> bool:
        """Keep one change; False when the account already holds :data:`HELD_MAX` (not kept). The same
        person's same change already held is not kept twice (a sender repeating TD past the cap filled the
        bound with copies of one opt-out, attack round 4): True, it is held."""
        key = self.keys.callback_held(account)
        index = self.keys.callback_held_index(account)
        self.redis.xtrim(key, minid=self._oldest(), approximate=False)
        whose = _whose(reason, who)
        earlier = cast(str | None, self.redis.hget(index, whose))
        if earlier and self.redis.xrange(key, earlier, earlier):
            return True
        if int(self.redis.xlen(key)) >= HELD_MAX:
            return False
        fields = {"reason": reason, "who": who, "note": note, "digest": digest, "at": f"{at:.3f}",
                  "held_at": f"{time.time():.3f}"}  # fmt: skip
        entry_id = cast(str, self.redis.xadd(key, fields))  # type: ignore[arg-type]
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(index, whose, entry_id)
        pipe.pexpire(key, HELD_TTL_S * 1000)
        pipe.pexpire(index, HELD_TTL_S * 1000)
        pipe.execute()
        return True

    def count(self, account: str) -> int:
        key = self.keys.callback_held(account)
        self.redis.xtrim(key, minid=self._oldest(), approximate=False)
        return int(self.redis.xlen(key))

    def page(self, account: str, *, cursor: str = "", limit: int = 100) -> tuple[list[Held], str]:
        """The oldest held changes first (after ``cursor``, a stream id), and the next cursor ('' at the end)."""
        key = self.keys.callback_held(account)
        self.redis.xtrim(key, minid=self._oldest(), approximate=False)
        start = f"({cursor}" if cursor else "-"
        raw = cast(list[tuple[str, dict[str, str]]], self.redis.xrange(key, start, "+", count=limit + 1))
        items = [_held(entry_id, fields) for entry_id, fields in raw[:limit]]
        return items, (items[-1].id if len(raw) > limit else "")

    def apply(self, account: str, *, by: str, ids: list[str] | None = None) -> Applied:
        """Write the held changes (``ids``, else the oldest :data:`APPLY_MAX`) as the suppressions they
        asked for, dated when they were received and ``by`` ``callback`` (the recipient's own doing), the
        note naming the key that applied them; each leaves the stream. An entry already suppressed stays as
        it is (``keep_existing``, as a callback's would)."""
        key = self.keys.callback_held(account)
        if ids is None:
            items, _ = self.page(account, limit=APPLY_MAX)
        else:
            pipe = self.redis.pipeline(transaction=False)
            for entry_id in list(dict.fromkeys(ids))[:APPLY_MAX]:  # an id given twice is one change
                pipe.xrange(key, entry_id, entry_id)
            found = cast(list[list[tuple[str, dict[str, str]]]], pipe.execute())
            items = [_held(i, f) for entries in found for i, f in entries]
        applied: list[str] = []
        for item in items:
            note = f"{item.note}; held over the hourly callback cap, applied by {by}"[:500]
            if self.suppressions.add(account, item.who, item.reason, by="callback", note=note, keep_existing=True,
                                at=item.at):  # fmt: skip
                applied.append(item.who)
            done = self.redis.pipeline(transaction=False)
            done.xdel(key, item.id)
            done.hdel(self.keys.callback_held_index(account), _whose(item.reason, item.who))
            done.execute()
        return Applied(applied=applied, already=len(items) - len(applied), remaining=self.count(account))


def _whose(reason: str, who: str) -> str:
    """The held index's field for one person's one change (``cb:heldby:{account}``)."""
    return f"{reason}\x1f{who}"


def _held(entry_id: str, fields: dict[str, str]) -> Held:
    return Held(
        id=entry_id,
        reason=fields.get("reason", ""),
        who=fields.get("who", ""),
        note=fields.get("note", ""),
        digest=fields.get("digest", ""),
        at=_number(fields.get("at")),
        held_at=_number(fields.get("held_at")),
    )


# --- processing (the dispatcher's process) ---------------------------------------------------------------


class CallbackProcessor:
    """Reads the inbox and acts on each delivery; every action is idempotent (a re-read entry is harmless)."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        accounts: AccountStore,
        producer: Producer,
        *,
        check_offline: Callable[[str, str, float], None] | None,
    ) -> None:
        """``check_offline(account, reason, received)`` hands a fresh ``Offline`` notice to be checked with
        the vendor before it counts (the dispatcher: the worker task ``broadcast.check_offline``). None
        takes the notice at its word: only for this processor's own tests, which have no worker."""
        self.check_offline = check_offline
        self.settings = settings
        self.redis = client
        self.keys = Keys(settings.key_prefix)
        self.accounts = accounts
        self.producer = producer
        self.suppressions = Suppressions(client, settings.key_prefix)
        self.held = HeldChanges(client, settings.key_prefix)
        # what a callback changes is on the record like an operator's change, under the key "callback"
        self.audit = AuditLog(client, settings.key_prefix, settings.audit_retention_days * 86400)
        self.words = settings.optout_words()
        self.consumer = secrets.token_hex(6)
        self._group_ready = False

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.redis.xgroup_create(self.keys.callback_inbox, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def drain(self, count: int = 200) -> int:
        """Process what is waiting (and entries a dead process left unacknowledged); returns how many."""
        try:
            return self._drain(count)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # the inbox lost its group (deleted, or a Redis that came back empty): made again, read again
            self._group_ready = False
            return self._drain(count)

    def _drain(self, count: int) -> int:
        self._ensure_group()
        inbox = self.keys.callback_inbox
        _, stale, *_ = cast(
            tuple[Any, ...], self.redis.xautoclaim(inbox, GROUP, self.consumer, min_idle_time=60_000, count=count)
        )
        fresh = cast(list[Any], self.redis.xreadgroup(GROUP, self.consumer, {inbox: ">"}, count=count))
        entries = list(stale) + [e for _, batch in fresh for e in batch]
        for entry_id, fields in entries:
            if fields:
                try:
                    self.handle(
                        _text(fields.get("a")),
                        _raw(fields.get("b")),
                        malformed=bool(fields.get("bad")),
                        received=_number(fields.get("t")),
                    )
                except redis.ConnectionError:
                    raise
                except Exception:  # a bad entry must not block the inbox: logged, counted, dropped
                    log.exception("callback processing failed")
                    self.redis.hincrby(self.keys.stat("callbacks"), "failed", 1)
            pipe = self.redis.pipeline(transaction=False)
            pipe.xack(inbox, GROUP, entry_id)
            pipe.xdel(inbox, entry_id)
            if fields:  # the inbox's byte count (CallbackInbox.full) goes down by what was taken out
                pipe.decrby(self.keys.callback_inbox_bytes, int(_number(fields.get("n"))))
            pipe.execute()
        if entries and not self.redis.xlen(inbox):
            self.redis.set(self.keys.callback_inbox_bytes, 0)  # empty: any drift (a crash between steps) is gone
        return len(entries)

    def handle(self, account: str, body: bytes, *, malformed: bool = False, received: float = 0.0) -> Kind:
        """Act on one delivery for ``account``; returns what it was (``malformed``: not UTF-8 as received;
        ``received``: when the API stored it). A delivery acts only on the account it names: the vendor's
        shape must be the account's vendor's and its instance the account's (``mismatch`` otherwise)."""
        event = Event(Kind.MALFORMED) if malformed else parse(body)
        kind = event.kind
        current = None if kind in (Kind.UNKNOWN, Kind.MALFORMED) else self.accounts.get(account)
        if kind in (Kind.UNKNOWN, Kind.MALFORMED):
            self._keep_odd(account, kind, body)
        elif current is None:
            kind = Kind.IGNORED  # the account was removed meanwhile
        elif event.vendor != current.spec.vendor or not _same_instance(event, current.spec.instance):
            kind = Kind.MISMATCH
            self._keep_odd(account, kind, body)
        elif event.dedupe and self.redis.exists(self._seen_key(account, event.dedupe)):
            kind = Kind.DUPLICATE
        else:
            kind, changed = self._act(current, event, received, body)
            if event.dedupe and changed:  # per account: two accounts on one instance each act once
                ttl = int(self.settings.callback_dedupe_h * 3600)
                self.redis.set(self._seen_key(account, event.dedupe), "1", ex=ttl)
        self.redis.hincrby(self.keys.stat("callbacks"), kind.value, 1)
        return kind

    def _seen_key(self, account: str, dedupe: str) -> str:
        """The key that remembers an event for the dedupe window: a vendor id the sender chose the length of
        (up to the 64 KiB body) is kept as its digest, so a flood of long ids cannot fill Redis."""
        if len(dedupe) > SEEN_ID_MAX:
            dedupe = "sha256:" + hashlib.sha256(dedupe.encode("utf-8", "replace")).hexdigest()
        return self.keys.callback_seen(f"{account}:{dedupe}")

    def _act(self, current: Account, event: Event, received: float, body: bytes) -> tuple[Kind, bool]:
        """What the event was, and whether it changed anything (only then is it remembered for the dedupe
        window: a text that is no opt-out, an opt-out of someone suppressed already, leave no key behind;
        a held change is remembered, so the vendor's retries of it are not held twice). An ``Offline`` taken
        at its word is always remembered: a replay must not stop an account an operator resumed since; one
        the vendor's check decides is not (a refuted forgery would otherwise hide a real notice)."""
        account = current.id
        if event.kind is Kind.TEXT:
            word = optout_form(event.text)
            if word not in self.words:
                return Kind.TEXT, False
            new = self._suppress(
                account, event, SuppressionReason.OPTED_OUT, f"replied {word[:40]} / 回复“{word[:40]}”", received, body
            )
            if not isinstance(new, bool):
                return new, new is Kind.HELD_OVER_CAP
            if new:
                self._audit("suppression.add_opted_out", f"suppression:{account}/{event.who}")
            if new and self.settings.optout_reply and repliable(event.who, event.own, current.spec.instance):
                self._reply(account, event)
            log.info("recipient opted out", extra={"account": account, "to": event.who})
            return Kind.OPTED_OUT, new
        if event.kind is Kind.CONTACT_REMOVED:
            note = "the vendor reported the contact removed / 服务商报告对方已删除联系人"
            new = self._suppress(account, event, SuppressionReason.CONTACT_REMOVED, note, received, body)
            if not isinstance(new, bool):
                return new, new is Kind.HELD_OVER_CAP
            if new:
                self._audit("suppression.add_contact_removed", f"suppression:{account}/{event.who}")
            return Kind.CONTACT_REMOVED, new
        if event.kind is Kind.OFFLINE:
            resumed = current.status_changed
            if current.status == "active" and resumed and (0 < event.at < resumed or 0 < received < resumed):
                log.info("offline callback from before the last resume ignored", extra={"account": account})
                return Kind.STALE, True  # said (or received) before an operator resumed the account: old news
            if current.status == "active":  # a paused account stays as the operator left it
                if self.check_offline is not None:  # down only once the vendor agrees
                    # not remembered for the dedupe window: a notice the vendor refutes (a forgery) must not
                    # make a real one that says no time (GeWe's usual shape) a duplicate; the vendor's check
                    # decides each, and the hourly bound keeps repeats from spending the account's pacing
                    _, checks = self._this_hour(self.keys.offline_checks, account)
                    if checks > OFFLINE_CHECKS_PER_H:  # forged ones must not spend the account's pacing
                        log.warning("offline callbacks over the hourly checks: left to the sends",
                                    extra={"account": account})  # fmt: skip
                        return Kind.OFFLINE_OVER_CAP, False
                    self.check_offline(account, event.text, received or time.time())
                    log.info("offline callback: asking the vendor", extra={"account": account})
                    return Kind.OFFLINE, False
                self.accounts.set_status(account, "down", event.text)
                self._audit("account.down", f"account:{account}")
                log.warning("account down by callback", extra={"account": account, "error": event.text})
            return Kind.OFFLINE, True
        return event.kind, False

    def _suppress(
        self, account: str, event: Event, reason: SuppressionReason, note: str, received: float, body: bytes
    ) -> bool | Kind:
        """Suppress the event's person for the account, within the hourly cap on what callbacks may change:
        True when a new entry was written, False when one was there (nothing changes, nothing counts), or
        past the cap what :meth:`_hold` did (``held_over_cap``, or ``held_full``)."""
        if self.redis.hexists(self.keys.suppressions(account), event.who):
            return False
        hour, changes = self._this_hour(self.keys.callback_changes, account)
        if changes > self.settings.callback_changes_per_h:
            return self._hold(account, event, reason, note, received or time.time(), body, hour)
        return self.suppressions.add(account, event.who, reason, by="callback", note=note, keep_existing=True)

    def _this_hour(self, key: Callable[[str, int], str], account: str) -> tuple[int, int]:
        """(this hour, the account's count in it after one more): a per-hour counter kept two hours."""
        hour = int(time.time() // 3600)
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(key(account, hour))
        pipe.expire(key(account, hour), 7200)
        count, _ = pipe.execute()
        return hour, int(count)

    def _hold(
        self, account: str, event: Event, reason: SuppressionReason, note: str, at: float, body: bytes, hour: int
    ) -> Kind:
        """Keep a change past the cap for an operator (not applied, never silently dropped); the first of
        the account's hour puts one marker in the audit trail."""
        digest = hashlib.sha256(body).hexdigest()
        kept = self.held.hold(account, reason=reason.value, who=event.who, note=note, digest=digest, at=at)
        if not kept:  # the account holds HELD_MAX already: counted and logged, the marker below still says so
            log.error("held callback changes at their bound: this one is not kept",
                      extra={"account": account, "to": event.who, "reason": reason.value})  # fmt: skip
        else:
            log.warning("callback change over the hourly cap: held, not applied",
                        extra={"account": account, "to": event.who, "reason": reason.value})  # fmt: skip
        if self.redis.set(self.keys.callback_over_cap(account, hour), "1", nx=True, ex=7200):
            self._audit("callback.over_cap", f"account:{account}")
        return Kind.HELD_OVER_CAP if kept else Kind.HELD_FULL

    def _audit(self, action: str, target: str) -> None:
        self.audit.record_own(CALLBACK, action, target)

    def _reply(self, account: str, event: Event) -> None:
        """One reply to a new opt-out, queued like any message (paced), sent although they are suppressed;
        at most ``BROADCAST_OPTOUT_REPLY_PER_H`` an hour per account (past it: counted ``reply_capped``)."""
        _, replies = self._this_hour(self.keys.optout_replies, account)
        if replies > self.settings.optout_reply_per_h:
            self.redis.hincrby(self.keys.stat("callbacks"), "reply_capped", 1)
            log.warning("opt-out reply over the hourly bound: not sent", extra={"account": account})
            return
        idem = "optout-reply:" + hashlib.sha256(f"{account}|{event.who}".encode()).hexdigest()[:32]
        try:
            self.producer.submit_message(
                account=account,
                to=event.who,
                message={"kind": "text", "text": self.settings.optout_reply},
                idempotency_key=idem,
                ignore_suppression="opt-out reply",
            )
        except Exception:
            log.exception("the opt-out reply could not be queued", extra={"account": account})

    def _keep_odd(self, account: str, kind: Kind, body: bytes) -> None:
        entry = json.dumps(
            {"account": account, "kind": kind.value, "at": round(time.time(), 3), "size": len(body),
             "body": body[:ODD_BYTES].decode("utf-8", "replace")},
            ensure_ascii=False,
        )  # fmt: skip
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(self.keys.callback_odd, entry)
        pipe.ltrim(self.keys.callback_odd, 0, ODD_KEEP - 1)
        pipe.expire(self.keys.callback_odd, ODD_TTL_S)
        pipe.execute()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def _number(value: Any) -> float:
    try:
        return float(_text(value) or 0)
    except ValueError:
        return 0.0


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value or "").encode("utf-8", "surrogateescape")


def _same_instance(event: Event, instance: str) -> bool:
    """The delivery names the account's own instance. An E云 body without ``data.wId`` is taken on the
    URL's key alone: vendors.md documents only ``{wcId, account, messageType, data}`` for E云, and ``wId``
    inside ``data`` comes from third-party code, so a deployment that leaves it out must not lose every
    opt-out. GeWe always names its ``Appid`` (its 回调消息详解 page), so a GeWe body must match."""
    if not event.instance:
        return event.vendor == "ecloud"
    return event.instance == instance
