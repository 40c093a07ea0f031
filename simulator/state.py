"""In-memory state of the vendor simulator: accounts, send records, faults and id generation.

Kept free of I/O and of any web framework so that tests (and the benchmark) can drive and inspect it
directly, in process, while the HTTP layer (`simulator.app`) stays a thin translation of the vendors'
wire formats. The server runs in its own thread while tests read this object from theirs, so every
mutation and every read of the shared lists happens under one (uncontended, hence cheap) lock.

Ids follow the vendors' shapes: `newMsgId` is a random 64-bit integer in ``[2**62, 2**63 - 1]`` so it
never survives a float round-trip, `msgId` and `clientMsgId` are random positive 32-bit integers and
`createTime` is the Unix time in seconds. One `random.Random` per state, seedable, makes runs
reproducible.

Every revoke call is recorded (:class:`RevokeRecord`) with the ids it was given and what it did, whether or
not it matched a send, so tests can prove each message was revoked exactly once and that revokes were paced
like sends. WeChat refuses a revoke more than two minutes after the message's ``createTime``
(:data:`REVOKE_WINDOW_S`); tests can shorten that window through the admin API.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

JSONDict = dict[str, Any]

VENDORS: Final = ("gewe", "gewe-legacy", "ecloud", "ohwxapi")

#: Fault kinds. Transport-level kinds answer without a vendor envelope; the others answer with the
#: vendor's own error envelope.
FAULT_KINDS: Final = frozenset(
    {
        "http_500",
        "http_503",
        "http_429",
        "slow",
        "timeout_before",
        "timeout_after",
        "throttled",
        "offline",
        "token_invalid",
        "not_friend",
        "generic",
        # the account is offline but the vendor's online check still says online (Devo919/Gewechat#36, #224)
        "offline_hidden",
        # the daily mini-program cap: only mini-program sends hit it; WeChat's words "Too many attempts. Try
        # again later" (wechaty/python-wechaty#133)
        "daily_cap",
        # a mini-program refused for its cover: GeWe 发送小程序失败 + data.code "-2" (Devo919/Gewechat#176,
        # #182: "cover under 50 KB")
        "cover_refused",
        # a recipient who has not accepted the friend request yet, in the words that read like throttling
        # (发送消息过于频繁，等待对方接受你的好友请求后再发: youfou/wxpy#21)
        "friend_pending",
    }
)

#: Kinds that also apply to online checks and revokes (they describe the account, not one send).
ACCOUNT_FAULT_KINDS: Final = frozenset({"offline", "token_invalid"})

#: Default sleep for the kinds that delay (seconds).
#: The timeouts outlast the worker's default 30 s read timeout by a margin, so they really time out.
DEFAULT_DELAYS: Final = {"slow": 2.0, "timeout_before": 40.0, "timeout_after": 40.0}

#: Upper bound of the configurable answer latency (seconds): vendor clients time out after 15-60 s.
MAX_LATENCY_S: Final = 600.0

#: WeChat lets a sender revoke a message for two minutes after its ``createTime``.
REVOKE_WINDOW_S: Final = 120.0

#: Contacts every account gets on first use (friends, groups): ``broadcast simulator --friends --groups``.
DEMO_CONTACTS: Final = (300, 8)

NEW_MSG_ID_MIN: Final = 2**62
NEW_MSG_ID_MAX: Final = 2**63 - 1
MSG_ID_MAX: Final = 2**31 - 1
CLIENT_MSG_ID_MAX: Final = 2**32 - 1


@dataclass(frozen=True, slots=True)
class SimAccount:
    """One sending account as the vendor knows it.

    `instance` is the vendor's account id (GeWe `appId`, legacy `appid`, E云 `wId`, ohwxapi `wxid`
    query parameter); `token` is the raw auth value (empty for ohwxapi means: no auth required).
    """

    vendor: str
    instance: str
    token: str
    wxid: str | None = None

    def __post_init__(self) -> None:
        if self.vendor not in VENDORS:
            raise ValueError(f"unknown vendor {self.vendor!r}; expected one of {', '.join(VENDORS)}")
        if not isinstance(self.instance, str) or not self.instance:
            raise ValueError("instance must be a non-empty string")
        if not isinstance(self.token, str):
            raise ValueError("token must be a string")
        if self.wxid is not None and not isinstance(self.wxid, str):
            raise ValueError("wxid must be a string")

    def public(self) -> JSONDict:
        """The account as the admin API shows it: the token is never echoed."""
        return {
            "vendor": self.vendor,
            "instance": self.instance,
            "token": "***" if self.token else "",
            "wxid": self.wxid,
        }

    @classmethod
    def from_json(cls, data: object) -> SimAccount:
        """Build an account from a JSON/TOML mapping, raising `ValueError` on bad input."""
        if not isinstance(data, dict):
            raise ValueError("account must be an object")
        unknown = set(data) - {"vendor", "instance", "token", "wxid"}
        if unknown:
            raise ValueError(f"unknown account field(s): {', '.join(sorted(unknown))}")
        for name in ("vendor", "instance"):
            if not isinstance(data.get(name), str):
                raise ValueError(f"account field {name!r} must be a string")
        return cls(
            vendor=data["vendor"],
            instance=data["instance"],
            token=data.get("token", ""),
            wxid=data.get("wxid"),
        )


DEMO_ACCOUNTS: Final[tuple[SimAccount, ...]] = (
    SimAccount("gewe", "wx_demo_gewe", "demo-gewe-token"),
    SimAccount("gewe-legacy", "wx_demo_legacy", "demo-legacy-token"),
    SimAccount("ecloud", "demo-ecloud-wid", "demo-ecloud-auth"),
    SimAccount("ohwxapi", "wxid_demo_ohwx", ""),
)


@dataclass(slots=True)
class SendRecord:
    """One accepted send, as the vendor would have put it on the wire."""

    seq: int
    vendor: str
    instance: str
    endpoint: str
    to: str
    kind: str
    body: JSONDict
    msg_id: int | None
    new_msg_id: int | None
    client_msg_id: int | None
    create_time: int | None
    received_at: float
    sent_at: float
    revoked: bool = False
    #: seq of every revoke call that named this send (a second one is refused, but still recorded)
    revokes: list[int] = field(default_factory=list)

    def to_json(self) -> JSONDict:
        """JSON view; ids stay Python ints (exact 64-bit)."""
        return {
            "seq": self.seq,
            "vendor": self.vendor,
            "instance": self.instance,
            "endpoint": self.endpoint,
            "to": self.to,
            "kind": self.kind,
            "body": self.body,
            "msg_id": self.msg_id,
            "new_msg_id": self.new_msg_id,
            "client_msg_id": self.client_msg_id,
            "create_time": self.create_time,
            "received_at": self.received_at,
            "sent_at": self.sent_at,
            "revoked": self.revoked,
            "revokes": list(self.revokes),
        }


@dataclass(slots=True)
class RevokeRecord:
    """One revoke call as the vendor received it: the ids it named and what became of it.

    ``outcome``: ``revoked``; ``already_revoked``; ``too_late`` (past the revoke window after the send's
    createTime); ``no_match`` (no send with exactly these ids: GeWe still answers success).
    """

    seq: int
    vendor: str
    instance: str
    to: str
    ids: JSONDict
    received_at: float
    answered_at: float
    outcome: str
    send_seq: int | None

    def to_json(self) -> JSONDict:
        """JSON view; ids stay Python ints (exact 64-bit)."""
        return asdict(self)


@dataclass(slots=True)
class Fault:
    """A fault rule: applies to a request when every given selector matches.

    `times` is how many requests it may still hit (None = unlimited); `probability` is the chance of
    hitting a matching request; `delay_s` overrides the kind's default sleep.
    """

    id: int
    kind: str
    vendor: str | None = None
    instance: str | None = None
    to: str | None = None
    times: int | None = None
    probability: float = 1.0
    delay_s: float | None = None
    hits: int = field(default=0)

    @property
    def delay(self) -> float:
        """Seconds this fault sleeps (kinds that do not sleep answer 0)."""
        if self.delay_s is not None:
            return self.delay_s
        return DEFAULT_DELAYS.get(self.kind, 0.0)

    def matches(self, vendor: str, instance: str, to: str | None) -> bool:
        """True when every selector given on the fault matches the request."""
        return (
            (self.vendor is None or self.vendor == vendor)
            and (self.instance is None or self.instance == instance)
            and (self.to is None or self.to == to)
        )

    def to_json(self) -> JSONDict:
        """JSON view for the admin API."""
        return {
            "id": self.id,
            "kind": self.kind,
            "vendor": self.vendor,
            "instance": self.instance,
            "to": self.to,
            "times": self.times,
            "probability": self.probability,
            "delay_s": self.delay_s,
            "hits": self.hits,
        }


def _opt_str(data: JSONDict, name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _opt_number(data: JSONDict, name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    return float(value)


class SimState:
    """Everything the simulator knows; safe to read from another thread."""

    def __init__(self, accounts: Iterable[SimAccount] = DEMO_ACCOUNTS, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._accounts: dict[tuple[str, str], SimAccount] = {}
        self._tokens: dict[str, frozenset[str]] = {}
        self._sends: list[SendRecord] = []
        self._by_new_msg_id: dict[int, SendRecord] = {}
        self._seq = 0
        self._faults: list[Fault] = []
        self._fault_seq = 0
        self._latency: tuple[float, float] = (0.0, 0.0)
        #: extra seconds a media send (image, file) takes: the vendor fetches the URL itself
        self._media_s: tuple[float, float] = (0.0, 0.0)
        self._revokes: list[RevokeRecord] = []
        self._revoke_seq = 0
        self._revoke_window_s = REVOKE_WINDOW_S
        #: (friends, groups) an account gets on its first contact call (``/_sim/contacts`` sets one account's)
        self.contact_size: tuple[int, int] = DEMO_CONTACTS
        for account in accounts:
            self.add_account(account)

    # -- accounts -------------------------------------------------------------------------------

    def add_account(self, account: SimAccount) -> None:
        """Register an account, replacing any with the same vendor and instance."""
        with self._lock:
            self._accounts[(account.vendor, account.instance)] = account
            self._tokens = {
                vendor: frozenset(a.token for a in self._accounts.values() if a.vendor == vendor) for vendor in VENDORS
            }

    def account(self, vendor: str, instance: str) -> SimAccount | None:
        """The account registered for (vendor, instance), if any."""
        return self._accounts.get((vendor, instance))

    def token_known(self, vendor: str, token: str | None) -> bool:
        """Whether some account of `vendor` uses this token (vendors check the token first)."""
        return token is not None and token in self._tokens.get(vendor, frozenset())

    def accounts(self) -> list[SimAccount]:
        """All registered accounts."""
        with self._lock:
            return list(self._accounts.values())

    # -- ids ------------------------------------------------------------------------------------

    def new_msg_id(self) -> int:
        """A fresh random 64-bit newMsgId in [2**62, 2**63-1], unique within this state."""
        while True:
            value = self._rng.randint(NEW_MSG_ID_MIN, NEW_MSG_ID_MAX)
            if value not in self._by_new_msg_id:
                return value

    def msg_id(self) -> int:
        """A random positive 32-bit msgId."""
        return self._rng.randint(1, MSG_ID_MAX)

    def client_msg_id(self) -> int:
        """A random positive 32-bit clientMsgId."""
        return self._rng.randint(1, CLIENT_MSG_ID_MAX)

    # -- sends ----------------------------------------------------------------------------------

    def record_send(
        self,
        *,
        vendor: str,
        instance: str,
        endpoint: str,
        to: str,
        kind: str,
        body: JSONDict,
        msg_id: int | None,
        new_msg_id: int | None,
        client_msg_id: int | None,
        create_time: int | None,
        received_at: float,
    ) -> SendRecord:
        """Append one accepted send and return it."""
        with self._lock:
            self._seq += 1
            record = SendRecord(
                seq=self._seq,
                vendor=vendor,
                instance=instance,
                endpoint=endpoint,
                to=to,
                kind=kind,
                body=body,
                msg_id=msg_id,
                new_msg_id=new_msg_id,
                client_msg_id=client_msg_id,
                create_time=create_time,
                received_at=received_at,
                sent_at=time.time(),
            )
            self._sends.append(record)
            if new_msg_id is not None:
                self._by_new_msg_id[new_msg_id] = record
            return record

    def sends(
        self,
        vendor: str | None = None,
        instance: str | None = None,
        to: str | None = None,
        since_seq: int | None = None,
    ) -> list[SendRecord]:
        """Recorded sends matching every given filter, oldest first (`since_seq` is exclusive)."""
        with self._lock:
            records = list(self._sends)
        return [
            r
            for r in records
            if (vendor is None or r.vendor == vendor)
            and (instance is None or r.instance == instance)
            and (to is None or r.to == to)
            and (since_seq is None or r.seq > since_seq)
        ]

    def find_send(self, vendor: str, instance: str, new_msg_id: int) -> SendRecord | None:
        """The send with this newMsgId from this account, if any."""
        record = self._by_new_msg_id.get(new_msg_id)
        if record is None or record.vendor != vendor or record.instance != instance:
            return None
        return record

    def revoke(
        self,
        record: SendRecord | None,
        *,
        vendor: str,
        instance: str,
        to: str,
        ids: JSONDict,
        received_at: float,
        now: float | None = None,
    ) -> str:
        """Record one revoke call and apply it to ``record`` (the send its ids matched exactly, or None);
        returns the outcome (:class:`RevokeRecord`). Too late means past the window after createTime (the
        send's own time when the vendor gives none)."""
        now = time.time() if now is None else now
        with self._lock:
            if record is None:
                outcome = "no_match"
            elif record.revoked:
                outcome = "already_revoked"
            elif now - (record.create_time or record.sent_at) > self._revoke_window_s:
                outcome = "too_late"
            else:
                outcome = "revoked"
                record.revoked = True
            self._revoke_seq += 1
            entry = RevokeRecord(
                seq=self._revoke_seq,
                vendor=vendor,
                instance=instance,
                to=to,
                ids=dict(ids),
                received_at=received_at,
                answered_at=now,
                outcome=outcome,
                send_seq=None if record is None else record.seq,
            )
            self._revokes.append(entry)
            if record is not None:
                record.revokes.append(entry.seq)
            return outcome

    def revokes(self, vendor: str | None = None, instance: str | None = None) -> list[RevokeRecord]:
        """Recorded revoke calls matching every given filter, oldest first."""
        with self._lock:
            records = list(self._revokes)
        return [
            r
            for r in records
            if (vendor is None or r.vendor == vendor) and (instance is None or r.instance == instance)
        ]

    def set_revoke_window(self, window_s: float) -> None:
        """How long after createTime a revoke is accepted (WeChat: 120 s); tests shorten it."""
        if isinstance(window_s, bool) or not isinstance(window_s, int | float) or not 0 <= window_s <= 86400:
            raise ValueError("window_s must be a number within [0, 86400]")
        with self._lock:
            self._revoke_window_s = float(window_s)

    def revoke_window(self) -> float:
        """Seconds after createTime a revoke is still accepted."""
        return self._revoke_window_s

    # -- faults ---------------------------------------------------------------------------------

    def add_fault(
        self,
        kind: str,
        *,
        vendor: str | None = None,
        instance: str | None = None,
        to: str | None = None,
        times: int | None = None,
        probability: float = 1.0,
        delay_s: float | None = None,
    ) -> Fault:
        """Install a fault rule (checked in insertion order); raises `ValueError` on bad input."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(sorted(FAULT_KINDS))}")
        if vendor is not None and vendor not in VENDORS:
            raise ValueError(f"unknown vendor {vendor!r}")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise ValueError("times must be a positive integer")
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if delay_s is not None and delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        with self._lock:
            self._fault_seq += 1
            fault = Fault(
                id=self._fault_seq,
                kind=kind,
                vendor=vendor,
                instance=instance,
                to=to,
                times=times,
                probability=float(probability),
                delay_s=delay_s,
            )
            self._faults.append(fault)
            return fault

    def add_fault_json(self, data: object) -> Fault:
        """Install a fault from the admin API's JSON body; raises `ValueError` on bad input."""
        if not isinstance(data, dict):
            raise ValueError("fault must be an object")
        unknown = set(data) - {"kind", "vendor", "instance", "to", "times", "probability", "delay_s"}
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        kind = data.get("kind")
        if not isinstance(kind, str):
            raise ValueError("kind must be a string")
        times = data.get("times")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int)):
            raise ValueError("times must be an integer")
        probability = _opt_number(data, "probability")
        return self.add_fault(
            kind,
            vendor=_opt_str(data, "vendor"),
            instance=_opt_str(data, "instance"),
            to=_opt_str(data, "to"),
            times=times,
            probability=1.0 if probability is None else probability,
            delay_s=_opt_number(data, "delay_s"),
        )

    def faults(self) -> list[Fault]:
        """Installed faults, in the order they are checked."""
        with self._lock:
            return list(self._faults)

    def remove_fault(self, fault_id: int) -> bool:
        """Remove one fault; False if there was none with that id."""
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.id == fault_id:
                    del self._faults[i]
                    return True
            return False

    def clear_faults(self) -> int:
        """Remove every fault; returns how many there were."""
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
            return count

    def take_fault(
        self,
        vendor: str,
        instance: str,
        to: str | None,
        kinds: frozenset[str] | None = None,
    ) -> Fault | None:
        """The first fault that hits this request (consuming one of its `times`), or None.

        At most one fault applies per request. A matching fault whose probability roll misses is
        skipped without being consumed, and the next one is tried. `kinds` restricts the eligible
        kinds (online checks and revokes only see `ACCOUNT_FAULT_KINDS`).
        """
        if not self._faults:  # the hot path: no faults installed
            return None
        with self._lock:
            for i, fault in enumerate(self._faults):
                if kinds is not None and fault.kind not in kinds:
                    continue
                if not fault.matches(vendor, instance, to):
                    continue
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                fault.hits += 1
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        del self._faults[i]
                return fault
            return None

    # -- latency --------------------------------------------------------------------------------

    def set_latency(self, latency_s: float, spread_s: float = 0.0) -> None:
        """Answer every send after ``latency_s`` ± ``spread_s`` (uniform): real vendors take 0.2-2 s (GeWe
        fetches media by URL itself), and benchmarks must see that, not a 1 ms loopback answer."""
        if isinstance(latency_s, bool) or not isinstance(latency_s, int | float) or not 0 <= latency_s <= MAX_LATENCY_S:
            raise ValueError(f"latency_s must be a number within [0, {MAX_LATENCY_S:g}]")
        if isinstance(spread_s, bool) or not isinstance(spread_s, int | float) or not 0 <= spread_s <= latency_s:
            raise ValueError("spread_s must be a number within [0, latency_s]")
        with self._lock:
            self._latency = (float(latency_s), float(spread_s))

    def set_media_latency(self, low_s: float, high_s: float) -> None:
        """Media sends (image, file) take uniformly ``low_s``–``high_s`` more: GeWe and E云 fetch the URL
        before they answer (real fetches take 2–10 s; vendor clients use 15–60 s timeouts)."""
        for value in (low_s, high_s):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_LATENCY_S:
                raise ValueError(f"media_s bounds must be numbers within [0, {MAX_LATENCY_S:g}]")
        if high_s < low_s:
            raise ValueError("media_s: the upper bound is below the lower one")
        with self._lock:
            self._media_s = (float(low_s), float(high_s))

    def media_latency(self) -> tuple[float, float]:
        """The configured media fetch time bounds (0, 0: none)."""
        return self._media_s

    def draw_media_latency(self) -> float:
        """Seconds a media send spends fetching its URL."""
        low, high = self._media_s
        return low if high == low else self._rng.uniform(low, high)

    def latency(self) -> tuple[float, float]:
        """The configured (latency_s, spread_s); (0, 0) answers at once."""
        return self._latency

    def draw_latency(self) -> float:
        """Seconds to hold the next send's answer: fixed, or uniform within latency ± spread."""
        latency, spread = self._latency
        if spread == 0.0:
            return latency
        return self._rng.uniform(latency - spread, latency + spread)

    # -- whole state ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget sends, revokes, faults, latency and the revoke window; keep accounts (sequence numbers
        keep counting up)."""
        with self._lock:
            self._latency = (0.0, 0.0)
            self._media_s = (0.0, 0.0)
            self._revoke_window_s = REVOKE_WINDOW_S
            self._revokes.clear()
            self._sends.clear()
            self._by_new_msg_id.clear()
            self._faults.clear()
