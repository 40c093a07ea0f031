"""Sending accounts: vendor connection, pacing limits and status, kept in Redis.

An account is the unit of pacing and of failure: a throttling answer slows it, an "account down" answer
pauses it (status ``down`` with the vendor's reason) and keeps its jobs. Accounts come from the HTTP API
or, at start, from a TOML file (``BROADCAST_ACCOUNTS_FILE``)::

    [[accounts]]
    id = "shop-gewe"
    vendor = "gewe"
    base_url = "http://api.geweapi.com/gewe/v2/api"
    token = "…"
    instance = "wx_…"          # GeWe appId / E云 wId / MagicCgi wxid
    limits = { per_minute = 30 }

The token is stored in Redis (the state store) encrypted with ``BROADCAST_SECRET_KEY``
(:mod:`worker.store.sealed`), and leaves this module only inside a :class:`~worker.vendors.base.VendorAccount`,
whose SecretStr never prints.
"""

from __future__ import annotations

import functools
import json
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import redis
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from worker.errors import ConfigError
from worker.settings import known_zone
from worker.store import scripts
from worker.store.keys import Keys
from worker.store.sealed import TokenCipher
from worker.vendors.base import VendorAccount, VendorName

Status = Literal["active", "paused", "down"]
#: The longest account id (also the API's length limit on fields naming an account).
ACCOUNT_ID_MAX = 64
#: What an account id looks like, everywhere (API path, account files, the store).
ACCOUNT_ID_PATTERN = rf"^[A-Za-z0-9_.@-]{{1,{ACCOUNT_ID_MAX}}}$"


class QuietHours(BaseModel):
    """A daily window without sends, in the account's timezone (``22:00``-``08:00`` wraps midnight)."""

    model_config = ConfigDict(extra="forbid")
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class RecipientCap(BaseModel):
    """At most ``max`` campaign messages to one recipient from the account in any ``window_h`` hours
    (counted when sent, across campaigns; test sends and single messages do not count)."""

    model_config = ConfigDict(extra="forbid")
    max: int = Field(ge=1, le=1000)
    window_h: float = Field(gt=0, le=24 * 366)

    def as_args(self) -> tuple[int, float]:
        """(max, window in seconds), as begin.lua takes them."""
        return self.max, self.window_h * 3600


class Limits(BaseModel):
    """Pacing limits. Defaults follow the vendors' advice: 20-40 a minute, ≥1 s apart, 2-5 s for groups.
    Frozen: one parsed value is shared by every account stored with the same limits (:func:`stored_limits`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Messages a minute; 0 switches pacing off for this account (tests, benchmarks).
    per_minute: int = Field(default=30, ge=0, le=100_000)
    #: Minimum gap between two sends to private chats, plus a random extra up to ``jitter_s``.
    min_interval_s: float = Field(default=1.0, ge=0, le=3600)
    jitter_s: float = Field(default=1.0, ge=0, le=3600)
    #: Minimum gap and jitter before a send to a group (``…@chatroom``): random 2-5 s by default.
    group_min_interval_s: float = Field(default=2.0, ge=0, le=3600)
    group_jitter_s: float = Field(default=3.0, ge=0, le=3600)
    #: Sends per day in ``timezone``; 0 = no cap.
    daily_cap: int = Field(default=0, ge=0, le=10_000_000)
    quiet_hours: QuietHours | None = None
    timezone: str = "Asia/Shanghai"
    #: Pause the account after this many throttling answers in a row (None: ``BROADCAST_PAUSE_AFTER_THROTTLES``,
    #: 5 by default; 0 = never).
    pause_after_throttles: int | None = Field(default=None, ge=0, le=1000)
    #: Frequency cap per recipient across campaigns (None: no cap).
    recipient_cap: RecipientCap | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        # the daily cap's day and quiet hours are local times: an unknown zone could never be paced
        return known_zone(value)


@functools.lru_cache(maxsize=1024)
def stored_limits(raw: str) -> Limits:
    """An account's limits as stored (JSON; "" for the defaults), parsed once per process and text: the
    dispatcher reads the limits of every due account at every round, and most accounts share a few."""
    return Limits.model_validate_json(raw or "{}")


#: The stored fields an account's spec is built from (``from_hash`` keeps specs by them).
_SPEC_FIELDS = ("vendor", "base_url", "token", "instance", "limits", "options")


def _stored_values(data: dict[str, str]) -> tuple[str, ...]:
    """What an account's spec is built from, as stored (the token sealed)."""
    return tuple(data.get(name, "") for name in _SPEC_FIELDS)


#: Specs one process keeps at most; past it the cache starts again (a worker's accounts: thousands).
_SPEC_CACHE = 20_000


class AccountSpec(VendorAccount):
    """What a user configures for an account (PUT /v1/accounts/{id} and the TOML file): how to reach it at
    its vendor, and its sending limits."""

    limits: Limits = Field(default_factory=Limits)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        # credentials in the address would be shown back wherever the account is (API, console, exports)
        if "@" in urlsplit(value).netloc:
            raise ValueError("must not carry credentials (user:password@): put the vendor's token in token")
        if "?" in value or "#" in value:
            # each call appends its path: a query or fragment would swallow it (a trailing ? sent the online
            # check to another path, as a POST)
            raise ValueError("must not carry a query (?…) or a fragment (#…)")
        return value.rstrip("/")

    @field_validator("options")
    @classmethod
    def _known_option_values(cls, value: dict[str, str]) -> dict[str, str]:
        # at-least-once is a deliberate, per-account choice: only the two documented spellings
        if value.get("unknown_outcome", "dead") not in ("dead", "retry"):
            raise ValueError("options.unknown_outcome must be 'dead' (default: a person reviews) or 'retry'")
        return value

    @field_validator("token")
    @classmethod
    def _header_safe(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if len(raw) > 4096:
            raise ValueError("must be at most 4,096 characters (it is sent in an HTTP header)")
        if not all(32 < ord(ch) < 127 for ch in raw):
            raise ValueError("must be printable ASCII without spaces (it is sent in an HTTP header)")
        return value


class AccountChangedError(ConfigError):
    """The account was changed by someone else between the read a change was based on and its write: the
    change is not stored (a rotated token or address must never be undone by a concurrent edit)."""


class TokenRequiredError(ConfigError):
    """A change of ``base_url`` or ``vendor`` without the token: the stored token must never follow a new
    address it was not entered for (whoever can edit an account could otherwise read the token off the wire)."""

    field = "token"


class Account(BaseModel):
    """An account as stored, with its status. ``public()`` is what may be shown anywhere."""

    id: str
    spec: AccountSpec
    status: Status = "active"
    status_reason: str = ""
    status_changed: float = 0.0
    #: Kinds the account may not send until a time, with the vendor's reason (worker/pacing/holds.py).
    holds: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: A token is stored but none of this process's keys opens it (BROADCAST_SECRET_KEY rotated in one
    #: step): it reads as unset, and a worker must not send with it (an account without a token is another
    #: thing: ohwxapi gateways may need none).
    token_unreadable: bool = False

    def vendor_account(self) -> VendorAccount:
        """The connection details a vendor backend needs (the spec is one, with limits besides)."""
        return self.spec

    def public(self) -> dict[str, Any]:
        """Everything but the token (never echoed)."""
        return {
            "id": self.id,
            "vendor": self.spec.vendor,
            "base_url": self.spec.base_url,
            "instance": self.spec.instance,
            "token_set": bool(self.spec.token.get_secret_value()),
            "limits": self.spec.limits.model_dump(),
            "options": self.spec.options,
            "status": self.status,
            "status_reason": self.status_reason,
            "status_changed": self.status_changed,
            "holds": self.holds,
        }


class AccountStore:
    """CRUD and status of accounts in Redis."""

    def __init__(
        self, client: redis.Redis, prefix: str, *, secret_keys: list[str] | None = None, require_key: bool = False
    ) -> None:
        """``require_key`` (the API and the dispatcher in prod): a token is never written without a key."""
        self.redis = client
        self.keys = Keys(prefix)
        self.prefix = prefix
        if secret_keys is None:
            from worker.settings import get_settings

            secret_keys = get_settings().secret_keys()
        self.cipher = TokenCipher(secret_keys, required=require_key)
        #: specs by their stored values (see from_hash), shared: nothing changes a spec in place (a change is
        #: a new PUT, hence new stored values)
        self._specs: dict[tuple[str, ...], tuple[AccountSpec, bool]] = {}
        self._flag_session = scripts.register(client, "flag_session")
        self._probe_begin = scripts.register(client, "probe_begin")
        self._probe_end = scripts.register(client, "probe_end")
        self._touch = scripts.register(client, "touch")
        self._set_status_if = scripts.register(client, "set_status_if")

    def put(self, account_id: str, spec: AccountSpec, *, based_on: tuple[str, ...] | None = None) -> Account:
        """Create or update; an update keeps the status and, when no token is given, the old token — unless
        ``base_url`` or ``vendor`` changes: then the token must come again (:class:`TokenRequiredError`).
        The read, the token rule and the write are one optimistic transaction (WATCH), so the rule is
        judged against what the write replaces. ``based_on``: the stored values (:meth:`versioned`) a
        partial change was merged onto; when they changed meanwhile, :class:`AccountChangedError`."""
        if not _valid_id(account_id):
            raise ConfigError(
                f"account id {account_id!r} must match {ACCOUNT_ID_PATTERN} and not be '.' or '..' (no URL can name it)"
            )
        key = self.keys.account(account_id)
        for _ in range(50):
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    data = cast(dict[str, str], pipe.hgetall(key))
                    if based_on is not None and _stored_values(data) != based_on:
                        raise AccountChangedError(f"account {account_id!r} was changed meanwhile: read it again")
                    existing = self.from_hash(account_id, data)
                    given = bool(spec.token.get_secret_value())
                    spec = self._token_kept(existing, spec)
                    # a token this process cannot open is kept as stored, never overwritten by its empty reading
                    unopened = existing is not None and existing.token_unreadable and not given
                    mapping: dict[str, str] = {
                        "vendor": spec.vendor,
                        "base_url": spec.base_url,
                        "token": data.get("token", "") if unopened else self.cipher.seal(spec.token.get_secret_value()),
                        "instance": spec.instance,
                        "limits": spec.limits.model_dump_json(),
                        "options": json.dumps(spec.options),
                    }
                    pipe.multi()
                    pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                    if existing is None:
                        status = {"status": "active", "status_reason": "", "status_changed": f"{time.time():.3f}"}
                        pipe.hset(key, mapping=status)  # type: ignore[arg-type]
                    pipe.sadd(self.keys.accounts, account_id)
                    if existing is not None:
                        # new limits count at once: an account waiting for its next slot is looked at again now
                        pipe.zadd(self.keys.sched, {account_id: 0}, xx=True)
                    pipe.execute()
                except redis.WatchError:
                    continue  # written meanwhile: judge the rule again against what is there now
            break
        else:
            raise AccountChangedError(f"account {account_id!r} kept changing while it was written: try again")
        if existing is not None:
            self._flag_session(args=[self.prefix, account_id])  # a session in flight ends at its next job
        account = self.get(account_id)
        assert account is not None
        return account

    @staticmethod
    def _token_kept(existing: Account | None, spec: AccountSpec) -> AccountSpec:
        """The spec with the stored token when none is given, unless the address or the vendor changes."""
        stored = existing is not None and (existing.token_unreadable or bool(existing.spec.token.get_secret_value()))
        if existing and not spec.token.get_secret_value() and stored:
            moved = [name for name in ("vendor", "base_url") if getattr(spec, name) != getattr(existing.spec, name)]
            if moved:
                raise TokenRequiredError(
                    f"token: changing {' and '.join(moved)} requires the token again in the same request"
                )
            spec = spec.model_copy(update={"token": existing.spec.token})
        return spec

    def versioned(self, account_id: str) -> tuple[Account | None, tuple[str, ...]]:
        """The account and the stored values it was read from (``put(based_on=…)`` for a partial change)."""
        data = cast(dict[str, str], self.redis.hgetall(self.keys.account(account_id)))
        return self.from_hash(account_id, data), _stored_values(data)

    def get(self, account_id: str) -> Account | None:
        """One account, or None."""
        return self.from_hash(account_id, cast(dict[str, str], self.redis.hgetall(self.keys.account(account_id))))

    def from_hash(self, account_id: str, data: dict[str, str]) -> Account | None:
        """The account its stored hash describes, or None (a session reads the hash in its first round trip).
        The spec (the token opened, the limits validated) is kept per process by the stored values: a
        session per account and send would otherwise decrypt and validate the same values each time."""
        if not data or "vendor" not in data:
            return None
        raw = _stored_values(data)
        cached = self._specs.get(raw)
        if cached is None:
            opened = self.cipher.open(data.get("token", ""))
            spec = AccountSpec(
                vendor=data["vendor"],
                base_url=data["base_url"],
                # a token no configured key opens reads as unset: the account shows "token not set" and must
                # get it again (BROADCAST_SECRET_KEY lost its old key)
                token=SecretStr(opened or ""),
                instance=data["instance"],
                limits=stored_limits(data.get("limits") or ""),
                options=json.loads(data.get("options") or "{}"),
            )
            if len(self._specs) >= _SPEC_CACHE:
                self._specs.clear()
            cached = self._specs[raw] = (spec, opened is None)
        spec, unreadable = cached
        return Account(
            id=account_id,
            spec=spec,
            status=data.get("status", "active"),
            status_reason=data.get("status_reason", ""),
            status_changed=float(data.get("status_changed") or 0),
            holds=_holds(data),
            token_unreadable=unreadable,
        )

    def reseal(self) -> int:
        """Seal every stored token with the first key (plain ones from before encryption, ones sealed with
        an older key); a token that changes meanwhile is left to its writer. Returns how many were sealed."""
        if not self.cipher.enabled:
            return 0
        sealed = 0
        for account_id in sorted(str(x) for x in self.redis.smembers(self.keys.accounts)):
            key = self.keys.account(account_id)
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    stored = str(pipe.hget(key, "token") or "")
                    token = self.cipher.open(stored)
                    if self.cipher.is_current(stored) or token is None:
                        continue
                    pipe.multi()
                    pipe.hset(key, "token", self.cipher.seal(token))
                    pipe.execute()
                    sealed += 1
                except redis.WatchError:
                    continue
        return sealed

    def all(self) -> list[Account]:
        """Every account, sorted by id."""
        ids = sorted(str(x) for x in self.redis.smembers(self.keys.accounts))
        return [a for a in (self.get(i) for i in ids) if a is not None]

    @contextmanager
    def probing(self, account_id: str, *, ttl_s: float) -> Iterator[Probe]:
        """Hold the account's lease while an operator's check talks to the vendor (the resume probe): one
        call in flight per account, like a send. Yields the :class:`Probe`: ``made_a_call`` once a vendor
        call was made, so the account's pacing counts it; ``renew`` before a quick retry. Raises
        ConfigError when a session holds the account."""
        token = f"probe:{uuid.uuid4().hex}"
        if not self._probe_begin(args=[self.prefix, account_id, token, int(ttl_s * 1000)]):
            raise ConfigError(f"account {account_id!r} is sending right now; try again in a moment")
        probe = Probe(lambda: bool(self._touch(args=[self.prefix, account_id, token, int(ttl_s * 1000)])))
        try:
            yield probe
        finally:
            self._probe_end(args=[self.prefix, account_id, token, "1" if probe.called else "0"])

    def set_status(
        self, account_id: str, status: Status, reason: str = "", *, unchanged_since: float | None = None
    ) -> bool:
        """Pause, resume or mark an account down (with the vendor's reason). ``unchanged_since``: only if
        the status was not changed after that moment (its ``status_changed``), e.g. a resume whose check
        took seconds must not undo a pause or an Offline callback that came meanwhile; False then."""
        key = self.keys.account(account_id)
        mapping = {"status": status, "status_reason": reason, "status_changed": f"{time.time():.3f}"}
        if unchanged_since is None:
            self.redis.hset(key, mapping=mapping)  # type: ignore[arg-type]
        elif not self._set_status_if(args=[self.prefix, account_id, f"{unchanged_since:.3f}", *mapping.values()]):
            return False
        self._flag_session(args=[self.prefix, account_id])  # a session in flight ends at its next job
        if status == "active":
            # the dispatcher looks at it at once (an account with nothing to send leaves sched again); a
            # resumed account starts a new run of throttling answers (the auto-pause counts from zero)
            pipe = self.redis.pipeline()
            pipe.hset(self.keys.pace(account_id), "throttled_n", 0)
            pipe.zadd(self.keys.sched, {account_id: 0}, nx=True)
            pipe.lpush(self.keys.wake, "1")
            pipe.execute()
        return True

    def set_vendor_limit(self, vendor: VendorName, per_second: float) -> None:
        """A vendor API's own rate across all its accounts, on top of each account's pacing (0 = none)."""
        if per_second <= 0:
            self.redis.hdel(self.keys.vendor_limits, vendor)
        else:
            self.redis.hset(self.keys.vendor_limits, vendor, str(per_second))

    def vendor_limits(self) -> dict[str, float]:
        """Every vendor rate set with :meth:`set_vendor_limit` (sends per second)."""
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.vendor_limits))
        return {vendor: float(rate) for vendor, rate in raw.items()}

    def load_file(self, path: Path) -> list[str]:
        """Create/update every account of a TOML file; returns their ids."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"accounts file {path}: {exc}") from None
        ids: list[str] = []
        for n, entry in enumerate(data.get("accounts", [])):
            entry = dict(entry)
            account_id = str(entry.pop("id", ""))
            try:
                self.put(account_id, AccountSpec.model_validate(entry))
            except (ValueError, ConfigError) as exc:
                raise ConfigError(f"accounts file {path}, accounts[{n}] ({account_id}): {exc}") from None
            ids.append(account_id)
        return ids


def _holds(data: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {kind: hold.to_dict() for kind, hold in holds_from_hash(data).items()}


def _valid_id(account_id: str) -> bool:
    import re

    # "." and ".." match the pattern, but clients resolve them out of every URL: /v1/accounts/.. could not
    # pause, resume or delete the account
    return bool(re.fullmatch(ACCOUNT_ID_PATTERN, account_id)) and account_id not in (".", "..")


#: Account hash fields ``hold:<kind>`` hold a kind the account may not send for now (worker/pacing/holds.py).
HOLD_PREFIX = "hold:"


class Probe:
    """The resume probe's hold on an account's lease (:meth:`AccountStore.probing`)."""

    def __init__(self, renew: Callable[[], bool]) -> None:
        self.called = False
        self._renew = renew

    def made_a_call(self) -> None:
        """A vendor call was made under the probe: the account's pacing counts it when the probe ends."""
        self.called = True

    def renew(self) -> bool:
        """Extend the probe's lease by its TTL (before a quick retry); False when it is no longer the probe's."""
        return self._renew()


@dataclass(frozen=True, slots=True)
class KindHold:
    """A message kind an account may not send before ``until`` (epoch seconds), and the vendor's reason."""

    kind: str
    until: float
    reason: str
    since: float

    def to_dict(self) -> dict[str, Any]:
        """JSON view for the account's public answer."""
        return {"until": self.until, "reason": self.reason, "since": self.since}


def holds_from_hash(data: dict[str, str], now: float | None = None) -> dict[str, KindHold]:
    """The holds still in force among an account hash's fields (``hold:<kind>`` → JSON)."""
    now = time.time() if now is None else now
    holds: dict[str, KindHold] = {}
    for field, raw in data.items():
        if not field.startswith(HOLD_PREFIX):
            continue
        try:
            value = json.loads(raw)
            hold = KindHold(
                field[len(HOLD_PREFIX) :], float(value["until"]), str(value["reason"]), float(value["since"])
            )
        except (ValueError, KeyError, TypeError):
            continue
        if hold.until > now:
            holds[hold.kind] = hold
    return holds
