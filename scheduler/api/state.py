"""What the routes share: the stores, built once per app, and the one check of who is calling.

``create_app`` puts one :class:`ApiState` on ``app.state``; a route asks for it with a ``Stores``
parameter, so nothing lives in module globals and two apps (tests) never share a connection.
:func:`authorize` is every ``/v1`` router's dependency: key → caller (401), the route's role
(:mod:`scheduler.api.roles`, 403 naming it), the key's rate (429 with ``Retry-After``).
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from redis import Redis
from starlette.types import ASGIApp, Receive, Scope, Send

from scheduler.api.errors import ApiError, error_response
from scheduler.api.roles import OWN_KEY_PREFIX, rule_at_door, rule_for
from scheduler.dispatch.schedules import Schedules
from scheduler.intake.campaigns import Campaigns
from scheduler.intake.producer import Producer
from worker.errors import ConfigError
from worker.settings import Settings
from worker.store.accounts import AccountStore
from worker.store.audit import AuditLog
from worker.store.deadletter import DeadLetters
from worker.store.ledger import Ledger
from worker.store.operators import ANONYMOUS_NAME, BOOTSTRAP_NAME, Caller, OperatorKeys, Role


@dataclass(frozen=True, slots=True)
class ApiState:
    """The settings, the Redis client and every store the routes use."""

    settings: Settings
    redis: Redis
    #: The accepted API keys (``BROADCAST_API_TOKEN``, comma-separated for rotation); empty only in ``dev``.
    tokens: tuple[bytes, ...]
    ledger: Ledger
    accounts: AccountStore
    producer: Producer
    campaigns: Campaigns
    dead_letters: DeadLetters
    schedules: Schedules
    operators: OperatorKeys
    audit: AuditLog

    @classmethod
    def build(cls, settings: Settings, client: Redis) -> ApiState:
        """Build the stores. Raises ConfigError when no API token is configured outside ``dev``."""
        tokens = tuple(t.encode() for t in settings.api_tokens())
        if not tokens and settings.env != "dev":
            raise ConfigError(
                "BROADCAST_API_TOKEN is not set: refusing to start without API keys (or BROADCAST_ENV=dev)"
            )
        ledger = Ledger(client, settings.key_prefix)
        accounts = AccountStore(
            client, settings.key_prefix, secret_keys=settings.secret_keys(), require_key=settings.env != "dev"
        )
        producer = Producer(ledger, accounts)
        campaigns = Campaigns(ledger, accounts, settings=settings)
        return cls(
            settings=settings,
            redis=client,
            tokens=tokens,
            ledger=ledger,
            accounts=accounts,
            producer=producer,
            campaigns=campaigns,
            dead_letters=DeadLetters(ledger),
            schedules=Schedules(client, settings.key_prefix, producer, campaigns, settings),
            operators=OperatorKeys(client, settings.key_prefix),
            audit=AuditLog(client, settings.key_prefix, settings.audit_retention_days * 86400),
        )


async def api_state(request: Request) -> ApiState:
    return cast(ApiState, request.app.state.api)


#: A route parameter that receives the app's stores.
Stores = Annotated[ApiState, Depends(api_state)]


#: Who ``BROADCAST_API_TOKEN`` is in the audit trail: the bootstrap key, always an admin, not rate limited.
BOOTSTRAP = Caller(BOOTSTRAP_NAME, Role.ADMIN)
#: Who calls a ``dev`` API started without any token (and without presenting a known key).
ANONYMOUS = Caller(ANONYMOUS_NAME, Role.ADMIN)


def _unauthorized() -> ApiError:
    """401: the caller's key is missing, unknown, or revoked (at the door or since)."""
    return ApiError(401, "unauthorized", "missing, unknown or revoked bearer key", "Authorization")


def identify(request: Request, state: ApiState) -> Caller:
    """The caller behind ``Authorization: Bearer <key>``: a ``BROADCAST_API_TOKEN`` (compared in constant
    time to each) or an operator key (looked up by its SHA-256). 401 for a missing, unknown or revoked key."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    given = presented.strip()
    if scheme.lower() == "bearer" and given:
        encoded = given.encode("utf-8", "surrogatepass")
        if any(hmac.compare_digest(encoded, t) for t in state.tokens):
            return BOOTSTRAP
        caller = state.operators.authenticate(given)
        if caller is not None:
            return caller
    if not state.tokens:
        return ANONYMOUS  # dev without keys: the API is open (it refuses to start so elsewhere)
    raise _unauthorized()


#: Methods that change nothing: their caller's key is not looked at again after the door.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def authorize(request: Request, state: Stores) -> Caller:
    """Every ``/v1`` route: who is calling (401), may their role call this route (403 naming the role
    needed), and are they within their rate (429 with ``Retry-After``; checked first, so refusals count).
    A call that changes something is refused (401) when its key was revoked since the door, where
    :class:`AuthFirst` identified it before the body arrived. The caller is left on ``request.state.caller``
    for the audit trail."""
    route = request.scope.get("route")
    caller = getattr(request.state, "caller", None) or identify(request, state)  # AuthFirst's, at the door
    request.state.caller = caller
    check_rate(caller, state.settings)
    check_role(caller, rule_for(request.method, getattr(route, "path", "")).role)
    if request.method not in SAFE_METHODS:
        still_authorized(request, state)
    return caller


async def read_body(request: Request, state: ApiState) -> bytes:
    """The body of a route that reads it itself (FastAPI then runs :func:`authorize` before it arrives),
    refused when the caller's key was revoked while it arrived."""
    body = await request.body()
    await run_in_threadpool(still_authorized, request, state)
    return body


def still_authorized(request: Request, state: ApiState) -> None:
    """401 when the operator key that made this call was revoked since the door (:class:`AuthFirst`): a
    write whose body took its time must not be done for a key that no longer exists."""
    caller = getattr(request.state, "caller", None)
    if caller is not None and not state.operators.active(caller):
        raise _unauthorized()


#: Each role's Chinese name, as the console shows it (``role_…`` in its i18n table).
ROLE_ZH = {Role.VIEWER: "只读", Role.OPERATOR: "操作员", Role.ADMIN: "管理员"}


def role_needed(caller: Caller, needed: Role) -> str:
    """``this needs the operator role; key 'vera' is viewer / 需要“操作员”角色，密钥 'vera' 的角色是“只读”``."""
    return (
        f"this needs the {needed.value} role; key {caller.name!r} is {caller.role.value} / "
        f"需要“{ROLE_ZH[needed]}”角色，密钥 {caller.name!r} 的角色是“{ROLE_ZH[caller.role]}”"
    )


def check_role(caller: Caller, needed: Role) -> None:
    """403 naming the role needed, in both languages."""
    if not caller.role.allows(needed):
        raise ApiError(403, "forbidden", role_needed(caller, needed), "Authorization")


def check_rate(caller: Caller, settings: Settings) -> None:
    """429 with ``Retry-After`` once a key made more requests this minute than its rate allows."""
    limit = caller.rate or settings.key_rate_per_min
    if caller.used and limit and caller.used > limit:
        retry = 60 - int(time.time()) % 60
        raise ApiError(
            429,
            "rate_limited",
            f"key {caller.name!r} made more than {limit} requests this minute; retry in {retry} s",
            "Authorization",
            headers={"Retry-After": str(retry)},
        )


#: ``dependencies=`` of every authenticated router.
AUTH = [Depends(authorize)]


#: Where a route names a variant of its action that must stand out in the audit trail (``force``: the
#: entry's action is ``dead_letter.replay_force``, not ``dead_letter.replay``; :mod:`scheduler.api.audit`).
AUDIT_VARIANT = "audit_variant"


def audit_variant(request: Request, variant: str) -> None:
    """Record this call as the ``<action>_<variant>`` of its route (a forced replay of an unknown outcome)."""
    setattr(request.state, AUDIT_VARIANT, variant)


#: Where a route names the objects one call acted on, when they are several (a bulk replay): the audit
#: trail gets one entry per object, so ``--target dead_letter:j…`` finds who replayed that job.
AUDIT_TARGETS = "audit_targets"


def audit_targets(request: Request, kind: str, ids: list[str], *, also: tuple[str, ...] = ()) -> None:
    """Record this call once for each of ``ids`` (``<kind>:<id>``), not once for the route; ``also``: whole
    targets recorded first (a key's revocation: the key, then what it paused or cancelled)."""
    setattr(request.state, AUDIT_TARGETS, [*also, *(f"{kind}:{i}" for i in ids)])


class AuthFirst:
    """Authenticate (:func:`identify`) at the door of every ``/v1`` request, before a submission slot is
    taken or a byte of the body is read (FastAPI reads a route's body, a 200 MB upload too, before its
    dependencies). The caller is left on the request state, where :func:`authorize` (the routes' ``AUTH``,
    which knows the matched route) takes it for the role and rate checks: a key is counted once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        # a vendor's callback carries its own key (checked by its route, roles.OWN_KEY): no bearer key here
        if (
            scope["type"] == "http"
            and (path == "/v1" or path.startswith("/v1/"))
            and not path.startswith(OWN_KEY_PREFIX)
        ):
            request = Request(scope)
            try:
                request.state.caller = await run_in_threadpool(identify, request, await api_state(request))
            except ApiError as exc:
                await error_response(exc.status, exc.code, exc.message, exc.field)(scope, receive, send)
                return
        await self.app(scope, receive, send)


#: The scope entry where :class:`RoleFirst` leaves the rule and parameters of a call it refused.
DOOR_RULE = "broadcast.door_rule"


class RoleFirst:
    """The role the request path needs and the key's rate, checked before a submission slot is taken or
    a byte of the body is read: a viewer, or a key over its rate, gets its 403/429 at once instead of
    holding an upload slot while FastAPI reads its 200 MB form (FastAPI reads a body before a route's
    dependencies). It sits inside the audit trail, so such a refusal is on the record with the caller;
    :func:`authorize` checks again on the route FastAPI matched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = scope.get("state", {}).get("caller") if scope["type"] == "http" else None
        door = rule_at_door(scope["method"], scope.get("path", "")) if caller is not None else None
        if caller is not None and door is not None:
            try:
                check_rate(caller, scope["app"].state.api.settings)  # first: refusals count toward the rate
                check_role(caller, door[0].role)
            except ApiError as exc:
                scope[DOOR_RULE] = door  # for the audit entry: no route was matched
                await error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)
