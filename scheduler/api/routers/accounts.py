"""``/v1/accounts``: the sending accounts, their limits and status. A token is write-only."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from scheduler.api.errors import ApiError, invalid
from scheduler.api.models import AccountId
from scheduler.api.state import AUTH, ApiState, Stores, audit_targets
from scheduler.console import sent_today
from scheduler.intake.callbacks import (
    APPLY_MAX,
    HELD_MAX,
    HELD_TTL_S,
    CallbackInbox,
    HeldChanges,
    callback_url,
    new_key,
)
from worker.errors import ConfigError, VendorError
from worker.logs import REDACTOR
from worker.runtime.connections import VendorNetwork
from worker.store.accounts import Account, AccountChangedError, AccountSpec, TokenRequiredError
from worker.store.audit import valid_cursor
from worker.store.sealed import SecretKeyRequired

router = APIRouter(tags=["accounts"], dependencies=AUTH)


class AccountPatch(BaseModel):
    """``PATCH /v1/accounts/{id}``: only the fields given change; limits/options merge key by key."""

    model_config = ConfigDict(extra="forbid")
    base_url: str | None = None
    token: SecretStr | None = None
    instance: str | None = None
    limits: dict[str, Any] | None = None
    options: dict[str, str] | None = None


class CallbackIn(BaseModel):
    """``POST /v1/accounts/{id}/callback``: the account's callback key, made once; a new one only with
    ``rotate`` (the old one stops working at once, so the vendor must get the new URL)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    #: Replace an existing key (without it, an account that has one answers 409 ``callback_exists``).
    rotate: bool = False
    #: Also register the URL with the vendor (GeWe ``/login/setCallback``, E云 ``/setHttpCallbackUrl``).
    at_vendor: bool = Field(default=False, alias="register")
    #: The address vendors reach this API at (default ``BROADCAST_PUBLIC_URL``).
    public_url: str | None = Field(default=None, max_length=500, pattern=r"^https?://[^\s?#@]+$")


class HeldApplyIn(BaseModel):
    """``POST /v1/accounts/{id}/callback/held/apply``: the held changes to apply (their ``id``), or all of
    them, oldest first, up to the call's maximum."""

    model_config = ConfigDict(extra="forbid")
    ids: list[str] | None = Field(default=None, max_length=APPLY_MAX)


def _public(state: ApiState, account: Account) -> dict[str, Any]:
    """An account as answered: never its token; ``sent_today`` to set against ``limits.daily_cap``;
    ``callback_set`` whether a callback key exists (the key itself is shown once, when made)."""
    return {
        **account.public(),
        "sent_today": sent_today(state.redis, state.settings.key_prefix, account),
        "callback_set": CallbackInbox(state.redis, state.settings.key_prefix).has_key(account.id),
    }


def _existing(state: ApiState, account_id: str) -> Account:
    account = state.accounts.get(account_id)
    if account is None:
        raise ApiError(404, "not_found", f"no account {account_id!r}", "account_id")
    return account


def _stored(
    state: ApiState, account_id: str, spec: AccountSpec, *, based_on: tuple[str, ...] | None = None
) -> dict[str, Any]:
    try:
        refused = VendorNetwork.from_settings(state.settings).literal_refused(urlsplit(spec.base_url).hostname or "")
    except ValueError as exc:  # a malformed BROADCAST_VENDOR_DENY/ALLOW
        raise ApiError(500, "config", str(exc), None) from None
    if refused:
        message = f"base_url: {refused} is an address vendor calls may not reach (BROADCAST_VENDOR_DENY)"
        raise ApiError(422, "invalid", message, "base_url")
    try:
        return _public(state, state.accounts.put(account_id, spec, based_on=based_on))
    except AccountChangedError:
        if based_on is None:
            raise ApiError(
                409, "account_changed", f"account {account_id!r} kept changing meanwhile: try again", None
            ) from None
        raise
    except TokenRequiredError as exc:
        raise ApiError(422, "token_required", str(exc), "token") from None
    except SecretKeyRequired as exc:
        raise ApiError(409, "secret_key_required", str(exc), "token") from None


def _plain_http(url: str) -> bool:
    """``http://`` to anything but this machine (the callback URL would carry its key in clear)."""
    parts = urlsplit(url)
    return parts.scheme == "http" and (parts.hostname or "") not in ("localhost", "127.0.0.1", "::1")


@router.put("/v1/accounts/{account_id}")
def put_account(account_id: AccountId, spec: AccountSpec, state: Stores) -> dict[str, Any]:
    """Create or update an account. The token is write-only: never echoed; omit it to keep the old one,
    except when ``base_url`` or ``vendor`` changes: then the token is required again (422 otherwise)."""
    try:
        return _stored(state, account_id, spec)
    except ConfigError as exc:
        raise ApiError(422, "invalid", str(exc), "account_id") from None


@router.patch("/v1/accounts/{account_id}")
def patch_account(account_id: AccountId, body: AccountPatch, state: Stores) -> dict[str, Any]:
    """Change some fields; ``limits`` and ``options`` are merged key by key (one atomic write). Changing
    ``base_url`` needs ``token`` in the same request (422 otherwise): the stored token never follows a new URL."""
    given = body.model_dump(exclude_unset=True)
    if "token" in given:
        given["token"] = body.token.get_secret_value() if body.token else ""
    # merged onto what is stored and written only if that is still what is stored: a concurrent edit
    # (another PATCH, a PUT) is merged again rather than undone (a rotated token or address stays rotated)
    for _ in range(10):
        account, version = state.accounts.versioned(account_id)
        if account is None:
            raise ApiError(404, "not_found", f"no account {account_id!r}", "account_id")
        current = account.spec.model_dump()
        current["token"] = ""  # kept by the store only while vendor and base_url stay the same
        changes = dict(given)
        for key in ("limits", "options"):
            if key in changes:
                current[key] = {**current[key], **(changes.pop(key) or {})}
        try:
            spec = AccountSpec.model_validate({**current, **changes})
        except ValidationError as exc:
            raise invalid(exc) from None
        try:
            return _stored(state, account_id, spec, based_on=version)
        except AccountChangedError:
            continue
    raise ApiError(409, "account_changed", f"account {account_id!r} kept changing meanwhile: try again", None)


@router.get("/v1/accounts")
def list_accounts(state: Stores) -> dict[str, Any]:
    return {"accounts": [_public(state, a) for a in state.accounts.all()]}


@router.get("/v1/accounts/{account_id}")
def get_account(account_id: AccountId, state: Stores) -> dict[str, Any]:
    """The account with its status (``active | paused | down``) and the reason."""
    return _public(state, _existing(state, account_id))


@router.post("/v1/accounts/{account_id}/pause")
def pause_account(account_id: AccountId, state: Stores) -> dict[str, Any]:
    _existing(state, account_id)
    state.accounts.set_status(account_id, "paused", "paused by operator")
    return _public(state, _existing(state, account_id))


@router.post("/v1/accounts/{account_id}/resume")
def resume_account(account_id: AccountId, state: Stores, check_online: bool = True) -> dict[str, Any]:
    """Resume sending; by default asks the vendor first whether the account is online."""
    account = _existing(state, account_id)
    note = ""
    if check_online:
        from worker.execution.lease import probe_resume
        from worker.runtime.connections import vendor_http_client
        from worker.vendors import backend_for

        # a down account also needs a successful probe send: one "online" answer is weak evidence. The
        # check holds the account's lease: never a second call in flight for it, and the pacing counts it
        settings = state.settings
        try:
            backend = backend_for(account.vendor_account(), vendor_http_client(settings))
            verdict = probe_resume(state.accounts, account, backend, settings)
        except ConfigError as exc:
            raise ApiError(409, "account_busy", str(exc), None) from None
        if not verdict.ok:
            raise ApiError(409, "account_offline", verdict.reason, None)
        note = verdict.reason
    # only if nothing changed the status while the vendor was asked (a pause, an Offline callback)
    if not state.accounts.set_status(account_id, "active", note, unchanged_since=account.status_changed):
        now = _existing(state, account_id)
        message = f"the account's status changed while it was checked (now {now.status}): not resumed"
        raise ApiError(409, "account_changed", message, None)
    return _public(state, _existing(state, account_id))


@router.post("/v1/accounts/{account_id}/callback")
def rotate_callback(
    account_id: AccountId, state: Stores, response: Response, body: CallbackIn | None = None
) -> dict[str, Any]:
    """Create (or, with ``rotate``, replace) the account's callback key and answer the URL to give the
    vendor (the key is shown only here: only its hash is kept). An existing key is never replaced by
    accident: a registered vendor would keep posting to the old URL (404s, opt-outs lost), so without
    ``rotate`` that answers 409 ``callback_exists``. ``register``: first set it at the vendor (needs a
    public URL: the body's or ``BROADCAST_PUBLIC_URL``); a vendor that refuses or cannot be reached answers
    409 and nothing changes (the previous key keeps working)."""
    account = _existing(state, account_id)
    body = body or CallbackIn()
    inbox = CallbackInbox(state.redis, state.settings.key_prefix)
    if not body.rotate and inbox.has_key(account_id):
        message = (
            "the account already has a callback key (only its hash is kept, so its URL cannot be shown again);"
            " send rotate: true to replace it: the old URL stops working at once, so register the new one"
            " (register: true) or update it at the vendor"
        )
        raise ApiError(409, "callback_exists", message, "rotate")
    base = body.public_url or state.settings.public_url
    if base and state.settings.env == "prod" and _plain_http(base):
        message = "public_url: must be https:// in prod (the URL carries the callback key); http:// only in dev"
        raise ApiError(422, "invalid", message, "public_url")
    if body.at_vendor and not base:
        raise ApiError(422, "invalid", "public_url: needed to register (or set BROADCAST_PUBLIC_URL)", "public_url")
    key = new_key()
    REDACTOR.add(key)  # the URL carries it: never in a log line, even inside a vendor's error text
    url = callback_url(base or "", account_id, key)
    if body.at_vendor:
        from worker.runtime.connections import vendor_http_client
        from worker.vendors import backend_for

        try:
            backend_for(account.vendor_account(), vendor_http_client(state.settings)).set_callback(url)
        except VendorError as exc:
            said = str(exc).replace(key, "***")  # a vendor may echo the URL back: the key stays out of errors
            message = f"the vendor did not take the callback URL, nothing changed: {said}"
            raise ApiError(409, "callback_not_registered", message, None) from None
    inbox.rotate(account_id, key)
    response.headers["Cache-Control"] = "no-store"  # the answer carries the key
    return {"account": account_id, "url": url, "path_only": not base, "registered": body.at_vendor}


def _held(state: ApiState) -> HeldChanges:
    return HeldChanges(state.redis, state.settings.key_prefix)


def _held_id(value: str, field: str) -> str:
    if not valid_cursor(value):
        raise ApiError(422, "invalid", f"{field}: not a held change's id (<ms>-<seq>)", field)
    return value


@router.get("/v1/accounts/{account_id}/callback/held")
def list_held_callback_changes(
    account_id: AccountId,
    state: Stores,
    cursor: Annotated[str, Query(max_length=60)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The changes the account's callbacks asked for past ``BROADCAST_CALLBACK_CHANGES_PER_H``: held, not
    applied (oldest first; each with its reason, ``from``, the body's SHA-256 and when it was received)."""
    _existing(state, account_id)
    held = _held(state)
    items, next_cursor = held.page(account_id, cursor=_held_id(cursor, "cursor") if cursor else "", limit=limit)
    return {
        "held": [i.public() for i in items],
        "total": held.count(account_id),
        "next_cursor": next_cursor or None,
        "kept_s": HELD_TTL_S,
        "max": HELD_MAX,
    }


@router.post("/v1/accounts/{account_id}/callback/held/apply")
def apply_held_callback_changes(
    account_id: AccountId, request: Request, state: Stores, body: HeldApplyIn | None = None
) -> dict[str, Any]:
    """Apply held changes (``ids``, or the oldest up to the call's maximum) as the suppressions they asked
    for, dated when they were received, ``by`` ``callback``; audited once per suppression written."""
    _existing(state, account_id)
    ids = None if body is None or body.ids is None else [_held_id(i, "ids") for i in body.ids]
    caller = getattr(getattr(request.state, "caller", None), "name", "") or "api"
    done = _held(state).apply(account_id, by=caller, ids=ids)
    if done.applied:
        audit_targets(request, "suppression", [f"{account_id}/{who}" for who in done.applied])
    return {"applied": len(done.applied), "already_suppressed": done.already, "remaining": done.remaining}
