"""``/v1/keys``: operator keys with a role, created and revoked at run time (admin only).

The key is in the 201 answer once and never again: Redis keeps its SHA-256 only.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from scheduler.api.errors import ApiError
from scheduler.api.state import AUTH, Stores, audit_targets, audit_variant, authorize
from worker.store.audit import WORKER
from worker.store.operators import ANONYMOUS_NAME, BOOTSTRAP_NAME, NAME_PATTERN, Caller, KeyExists, Role
from worker.store.suppressions import SYSTEM_BY

router = APIRouter(tags=["keys"], dependencies=AUTH)

KeyName = Annotated[str, Field(pattern=NAME_PATTERN.pattern, description="who holds the key (shown in the audit)")]


class KeyIn(BaseModel):
    """``POST /v1/keys``: a named key with a role; ``rate_per_min`` overrides ``BROADCAST_KEY_RATE_PER_MIN``."""

    model_config = ConfigDict(extra="forbid")
    name: KeyName
    role: Role
    rate_per_min: int | None = Field(default=None, ge=1, le=1_000_000, strict=True)  # `true` is no rate


#: Who the audit names for the bootstrap token, for an open dev API and for what the worker changes itself,
#: and the ``by`` of the suppressions the system writes itself: no key may pose as any of them.
RESERVED_NAMES = (BOOTSTRAP_NAME, ANONYMOUS_NAME, WORKER, *SYSTEM_BY)


def reserved_name(name: str) -> bool:
    """``Bootstrap``, ``bootstrap.`` or ``anonymous@x`` would read as the reserved names in an audit."""
    folded = name.casefold()
    return any(folded == r or (folded.startswith(r) and not folded[len(r)].isalnum()) for r in RESERVED_NAMES)


@router.post("/v1/keys", status_code=201)
def create_key(body: KeyIn, state: Stores, response: Response, request: Request) -> dict[str, Any]:
    """A new key: ``{"name", "role", "key"}``. The key is shown this once; store it now. Audited with the
    role it grants (``key.create_operator``)."""
    audit_variant(request, body.role.value)
    if reserved_name(body.name):
        raise ApiError(422, "invalid", f"name: {body.name!r} is reserved (or looks like a reserved name)", "name")
    try:
        key = state.operators.create(body.name, body.role, body.rate_per_min or 0)
    except KeyExists as taken:
        raise ApiError(409, "key_exists", f"a key named {taken.args[0]!r} exists; revoke it first", "name") from None
    response.headers["Cache-Control"] = "no-store"  # the answer carries the key
    return {"name": body.name, "role": body.role.value, "key": key}


@router.get("/v1/keys")
def list_keys(state: Stores) -> dict[str, Any]:
    """Names, roles, created and last used times (``last_used`` is refreshed at most once a minute)."""
    return {"keys": state.operators.all()}


@router.get("/v1/keys/me")
def who_am_i(caller: Annotated[Caller, Depends(authorize)]) -> dict[str, Any]:
    """The calling key's name and role (any key): the console greys out what the role cannot do."""
    return {"name": caller.name, "role": caller.role.value}


@router.delete("/v1/keys/{name}")
def revoke_key(
    name: Annotated[str, Path(pattern=NAME_PATTERN.pattern)], state: Stores, request: Request
) -> dict[str, Any]:
    """Revoke at once: the next request with this key answers 401; the schedules and unfinished campaigns
    it created are paused (``paused_schedules``, ``paused_campaigns``: an admin may resume them), its drafts
    held for an admin to start (``held_drafts``) and its messages not sent yet (scheduled, queued, retrying,
    test sends) cancelled (``cancelled_messages``). The audit trail records the revocation on the key and on each of
    those, so a campaign's own history says why it stopped."""
    if not state.operators.revoke(name):
        raise ApiError(404, "not_found", f"no key {name!r}", "name")
    schedules = state.schedules.pause_created_by(name)
    campaigns, drafts = state.campaigns.pause_created_by(name)
    messages = state.ledger.cancel_unsent_by(name)
    touched = (*(f"schedule:{i}" for i in schedules), *(f"campaign:{i}" for i in campaigns + drafts))
    audit_targets(request, "message", messages, also=(f"key:{name}", *touched))
    return {
        "revoked": name,
        "paused_schedules": schedules,
        "paused_campaigns": campaigns,
        "held_drafts": drafts,
        "cancelled_messages": messages,
    }
