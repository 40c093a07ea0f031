"""What the routes share: the stores, built once per app, and the bearer-token check.

``create_app`` puts one :class:`ApiState` on ``app.state``; a route asks for it with a ``Stores``
parameter, so nothing lives in module globals and two apps (tests) never share a connection.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request
from redis import Redis
from starlette.types import ASGIApp, Receive, Scope, Send

from scheduler.api.errors import ApiError, error_response
from scheduler.dispatch.schedules import Schedules
from scheduler.intake.campaigns import Campaigns
from scheduler.intake.producer import Producer
from worker.errors import ConfigError
from worker.settings import Settings
from worker.store.accounts import AccountStore
from worker.store.deadletter import DeadLetters
from worker.store.ledger import Ledger


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

    @classmethod
    def build(cls, settings: Settings, client: Redis) -> ApiState:
        """Build the stores. Raises ConfigError when no API token is configured outside ``dev``."""
        tokens = tuple(t.encode() for t in settings.api_tokens())
        if not tokens and settings.env != "dev":
            raise ConfigError(
                "BROADCAST_API_TOKEN is not set: refusing to start without API keys (or BROADCAST_ENV=dev)"
            )
        ledger = Ledger(client, settings.key_prefix)
        accounts = AccountStore(client, settings.key_prefix, secret_keys=settings.secret_keys())
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
        )


async def api_state(request: Request) -> ApiState:
    return cast(ApiState, request.app.state.api)


#: A route parameter that receives the app's stores.
Stores = Annotated[ApiState, Depends(api_state)]


async def authorize(request: Request, state: Stores) -> None:
    """Every ``/v1`` route needs ``Authorization: Bearer <key>``, compared in constant time to each key."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if state.tokens:
        given = presented.strip().encode()
        ok = scheme.lower() == "bearer" and any(hmac.compare_digest(given, t) for t in state.tokens)
        if not ok:
            raise ApiError(401, "unauthorized", "missing or invalid bearer token", "Authorization")


#: ``dependencies=`` of every authenticated router.
AUTH = [Depends(authorize)]


class AuthFirst:
    """Run :func:`authorize` at the door of every ``/v1`` request, before a submission slot is taken or a
    byte of the body is read (FastAPI reads a route's body, a 200 MB upload too, before its dependencies).
    The routes keep ``AUTH``: this only makes a stranger's answer come first and cost nothing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"] == "/v1" or scope["path"].startswith("/v1/")):
            request = Request(scope)
            try:
                await authorize(request, await api_state(request))
            except ApiError as exc:
                await error_response(exc.status, exc.code, exc.message, exc.field)(scope, receive, send)
                return
        await self.app(scope, receive, send)
