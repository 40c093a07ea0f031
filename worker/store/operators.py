"""Operator keys: named API keys with a role, created and revoked at run time (``/v1/keys``).

A key is 32 random bytes shown once; Redis keeps only its SHA-256 (``opkey:{name}``) and a digest → name
index (``opkeys``). A high-entropy key needs no slow hash: nobody can guess one from its digest. Lookup is
by the digest (so no comparison ever runs on key material), and the stored digest is compared again with
``hmac.compare_digest``. Revoking deletes both entries in one transaction: the next request is 401.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import redis
from redis.exceptions import WatchError
from redis.typing import EncodableT, FieldT

from worker.store import scripts
from worker.store.keys import Keys

#: A key's name: what the audit trail shows. Short and plain, so it is safe in a URL and a log line.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
#: Created keys start with this, so a leaked one is recognisable (secret scanners, logs).
KEY_PREFIX = "bck_"


class Role(StrEnum):
    """What a key may do; each role includes the ones before it."""

    VIEWER = "viewer"  # reads only
    OPERATOR = "operator"  # campaigns, messages, dead letters, suppressions, schedules
    ADMIN = "admin"  # also accounts (tokens), vendor limits, keys

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


def digest(key: str) -> str:
    """The SHA-256 (hex) of a presented key: what is stored and looked up."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: a key's name and role, and its requests in the current minute (0 = not counted)."""

    name: str
    role: Role
    rate: int = 0
    used: int = 0
    #: the SHA-256 of an operator key ('' for a BROADCAST_API_TOKEN): :meth:`OperatorKeys.active` looks it up
    digest: str = ""


#: Who calls without a stored key: the bootstrap token (``BROADCAST_API_TOKEN``) and a dev API without keys.
BOOTSTRAP_NAME, ANONYMOUS_NAME = "bootstrap", "anonymous"


def owner_args(name: str | None, key_digest: str) -> list[str]:
    """The two script arguments naming the operator key that creates something: its name and the SHA-256 it
    is stored under ('', '' for the bootstrap token, which cannot be revoked). The script that commits it
    stores it only as the key's while ``opkey:{name}`` still holds that digest: a revocation while the request
    was being handled, and a new key given the same name since, cannot adopt it."""
    return [name or "", key_digest] if name and key_digest else ["", ""]


class KeyExists(Exception):
    """``POST /v1/keys`` with a name already taken, in any case (revoke it first); ``args[0]`` the taken name."""


class OperatorKeys:
    """Create, list, revoke and authenticate operator keys."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.prefix = prefix
        self._auth = scripts.register(client, "operator_auth")

    def create(self, name: str, role: Role, rate_per_min: int = 0) -> str:
        """A new key for ``name``; the key itself is returned once and never stored."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record: dict[FieldT, EncodableT] = {
            "role": role.value,
            "digest": digest(key),
            "created": time.time(),
            "rate": rate_per_min,
        }
        folded = name.casefold()
        for _ in range(50):
            with self.redis.pipeline() as pipe:
                # WATCH the name and the lookup, so two creates of one name (in any case) cannot both win
                pipe.watch(self.keys.operator_key(name), self.keys.operator_keys)  # type: ignore[no-untyped-call]
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in pipe.hvals(self.keys.operator_keys)]
                # 'vera' and 'VERA' would read as one key in the audit trail, with two roles
                taken = next((n for n in names if n.casefold() == folded), None)
                if taken is not None or pipe.exists(self.keys.operator_key(name)):
                    raise KeyExists(taken or name)
                pipe.multi()
                pipe.hset(self.keys.operator_key(name), mapping=record)
                pipe.hset(self.keys.operator_keys, str(record["digest"]), name)
                try:
                    pipe.execute()
                except WatchError:  # a key was created or revoked meanwhile: judge the name again
                    continue
            return key
        raise KeyExists(name)  # contended for ever: refused rather than risk two keys of one name

    def get(self, name: str) -> dict[str, Any] | None:
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.operator_key(name)))
        return _public(name, raw) if raw else None

    def all(self) -> list[dict[str, Any]]:
        """Every key's name, role, created and last used time: never key material (nor its digest)."""
        names = sorted(cast(list[str], self.redis.hvals(self.keys.operator_keys)))
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.operator_key(name))
            records = cast(list[dict[str, str]], pipe.execute())
        return [_public(name, raw) for name, raw in zip(names, records, strict=True) if raw]

    def revoke(self, name: str) -> bool:
        """Delete the key at once; False when there was none."""
        key = self.keys.operator_key(name)
        stored = cast(str | None, self.redis.hget(key, "digest"))
        if stored is None:
            return False
        with self.redis.pipeline() as pipe:
            pipe.hdel(self.keys.operator_keys, stored)
            pipe.delete(key)
            pipe.execute()
        return True

    def authenticate(self, presented: str, now: float | None = None) -> Caller | None:
        """The caller a presented key belongs to (its request counted for the rate limit), or None."""
        wanted = digest(presented)
        found = self._auth(args=[self.prefix, wanted, int(now or time.time())])
        if not found:
            return None
        name, role, stored, rate, used = (v.decode() if isinstance(v, bytes) else str(v) for v in found)
        if not hmac.compare_digest(stored, wanted):
            return None
        return Caller(name, Role(role), int(rate), int(used), stored)

    def active(self, caller: Caller) -> bool:
        """Whether the operator key a caller presented is still there (not revoked since it was checked);
        always True for a ``BROADCAST_API_TOKEN`` (no digest: it lasts as long as the setting)."""
        if not caller.digest:
            return True
        name = self.redis.hget(self.keys.operator_keys, caller.digest)
        return (name.decode() if isinstance(name, bytes) else name) == caller.name


def _public(name: str, raw: dict[str, str]) -> dict[str, Any]:
    last = raw.get("last_used")
    return {
        "name": name,
        "role": raw.get("role", ""),
        "created": float(raw.get("created", 0)),
        "last_used": float(last) if last else None,
        "rate_per_min": int(raw.get("rate", 0)) or None,
    }
