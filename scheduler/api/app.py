"""The producer HTTP API (``broadcast api``): validate, store, answer. Nothing here waits on a vendor.

Every ``/v1`` route needs ``Authorization: Bearer <key>``: a ``BROADCAST_API_TOKEN`` (admin, the
bootstrap key) or an operator key from ``/v1/keys`` with a role; each route's role is declared in
:mod:`scheduler.api.roles`, and every state-changing call lands in the audit trail. With no
``BROADCAST_API_TOKEN`` the API refuses to start unless ``BROADCAST_ENV=dev``. Errors are ``{"error": {"code", "message", "field"}}``
with a 4xx status naming the offending field; nothing is stored when a request is refused.

The routes live in :mod:`scheduler.api.routers`, one module per resource; they reach the stores through
the :class:`~scheduler.api.state.ApiState` built here once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel

from scheduler.api.audit import AuditTrail
from scheduler.api.body_limit import BodyLimit
from scheduler.api.errors import ERROR_RESPONSES, add_error_handlers
from scheduler.api.headers import SecurityHeaders, add_server_error_handler
from scheduler.api.routers import (
    accounts,
    audit,
    callbacks,
    campaigns,
    contacts,
    dead_letters,
    keys,
    messages,
    ops,
    schedules,
    stats,
    suppressions,
    vendor_limits,
)
from scheduler.api.state import AUTH, ApiState, AuthFirst, RoleFirst
from scheduler.console import mount_console
from scheduler.intake.uploads import UploadSlots
from worker.runtime.connections import redis_client
from worker.settings import Settings, get_settings


def create_app(settings: Settings | None = None, client: redis.Redis | None = None) -> FastAPI:
    """Build the API. Raises ConfigError when no API token is configured outside ``dev``."""
    settings = settings or get_settings()
    state = ApiState.build(settings, client or redis_client(settings.redis_url, settings))
    if settings.accounts_file:
        state.accounts.load_file(settings.accounts_file)
    # tokens stored before encryption, or under a key being rotated out, are sealed with the current key
    state.accounts.reseal()
    if not settings.secret_keys() and settings.env != "dev":
        logging.getLogger(__name__).warning(
            "BROADCAST_SECRET_KEY is not set: no vendor token can be stored (PUT /v1/accounts with a token "
            "answers 409 secret_key_required) until it is (docs/deployment.md#security-settings)"
        )

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the package, not from a CDN.
    app = FastAPIOffline(
        title="wechat-broadcast",
        version="1",
        description=(
            "Producer API: accounts, contacts and audiences, messages, campaigns, dead letters, schedules, "
            "suppressions, callbacks, keys, audit, stats. Ids are strings (64-bit exact)."
        ),
        responses=ERROR_RESPONSES,
        # a path with a trailing slash is 404, never a redirect built from the request's Host header (it would
        # carry a callback's ?key= to whatever host the client named)
        redirect_slashes=False,
    )
    app.state.api = state
    app.add_middleware(BodyLimit, read_timeout_s=settings.body_timeout_s)
    app.add_middleware(UploadSlots, slots=settings.max_concurrent_uploads)
    app.add_middleware(RoleFirst)  # a viewer or a key over its rate takes no slot and sends no body
    app.add_middleware(AuditTrail)
    app.add_middleware(AuthFirst)  # a stranger takes no slot and sends no body
    app.add_middleware(SecurityHeaders)  # outermost: on every answer, refusals too
    add_error_handlers(app)
    add_server_error_handler(app)
    for resource in (
        ops,
        accounts,
        contacts,
        messages,
        campaigns,
        dead_letters,
        schedules,
        vendor_limits,
        keys,
        audit,
        stats,
        suppressions,
        callbacks,
    ):
        app.include_router(resource.router)
    _declare_schema(app, campaigns.CampaignIn)
    mount_console(app, AUTH)
    app.state.started = time.time()
    return app


def _declare_schema(app: FastAPI, model: type[BaseModel]) -> None:
    """Add a model that no route parameter names (a body parsed by hand) to the OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = build()
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in schema.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components[model.__name__] = schema
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
