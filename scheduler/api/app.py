"""The producer HTTP API (``broadcast api``): validate, store, answer. Nothing here waits on a vendor.

Every ``/v1`` route needs ``Authorization: Bearer <token>``, compared in constant time against each
configured key (``BROADCAST_API_TOKEN``, comma-separated for rotation). With no key configured the API
refuses to start unless ``BROADCAST_ENV=dev``. Errors are ``{"error": {"code", "message", "field"}}``
with a 4xx status naming the offending field; nothing is stored when a request is refused.
"""

from __future__ import annotations

import codecs
import hmac
import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal, cast

import redis
from fastapi import Depends, FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi_offline import FastAPIOffline
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from scheduler.api.exports import export_deliveries
from scheduler.console import mount_console, sent_today, with_next_firings
from scheduler.dispatch.schedules import Schedules, ScheduleSpec
from scheduler.intake.campaigns import (
    CampaignNotFound,
    Campaigns,
    CampaignStateError,
    Replayable,
    recipients_from_csv,
    recipients_from_jsonl,
)
from scheduler.intake.producer import IdempotencyConflict, Producer
from scheduler.intake.uploads import BodyNotJson, CampaignBody, UploadSlots
from worker.errors import ConfigError, MessageError
from worker.messages import Message
from worker.runtime.connections import redis_client
from worker.settings import Settings, get_settings
from worker.store.accounts import ACCOUNT_ID_PATTERN, AccountSpec, AccountStore, TokenRequiredError
from worker.store.deadletter import DeadLetters
from worker.store.ledger import STATES, Ledger
from worker.vendors.base import VendorName

#: JSON bodies above this are refused with 413 before they are read into memory.
MAX_JSON_BODY = 10 * 1024 * 1024
#: Recipient uploads (CSV/JSONL, multipart) may be larger; they are spooled to disk by the parser.
MAX_UPLOAD_BODY = 200 * 1024 * 1024
Priority = Literal["normal", "high"]
#: Recipients in one JSON campaign body (larger lists go through the upload, up to the settings' maximum).
MAX_JSON_RECIPIENTS = 200_000
#: The JSON campaign body is parsed by hand (streamed), so its schema is declared in the OpenAPI document.
CAMPAIGN_REF = {"$ref": "#/components/schemas/CampaignIn"}
#: Job, campaign and schedule ids: letters, digits, ``-`` and ``_`` only. No ``:``, so an id can never
#: reach another kind of key (``campaign:{id}:jobs`` is a list, not the campaign's hash).
OBJECT_ID = r"^[A-Za-z0-9_-]{1,100}$"
ObjectId = Annotated[str, Path(pattern=OBJECT_ID)]
AccountId = Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN)]


class ApiError(Exception):
    """An error answered as ``{"error": {...}}`` with its status code."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


# --- request / response models ------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: what went wrong and which field."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "Body is not valid JSON"),
        (401, "Missing or invalid bearer token"),
        (404, "Not found"),
        (409, "Not possible in the current state"),
        (502, "The vendor refused"),
        (413, "Body too large"),
        (422, "Invalid input; `field` names it"),
        (503, "Redis unreachable; nothing was stored"),
    )
}


class MessageIn(BaseModel):
    """``POST /v1/messages``."""

    model_config = ConfigDict(extra="forbid")
    account: str = Field(min_length=1, max_length=64)
    to: str = Field(min_length=1, max_length=128)
    message: Message
    vars: dict[str, str] | None = None
    send_at: AwareDatetime | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    priority: Priority = "normal"


class Accepted(BaseModel):
    """A stored job."""

    id: str
    status: str


class RecipientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1, max_length=128)
    account: str | None = Field(default=None, min_length=1, max_length=64)
    vars: dict[str, str | int | float] | None = None


class CampaignIn(BaseModel):
    """``POST /v1/campaigns``. Recipients without an account use ``account``, or are spread over ``accounts``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    account: str | None = Field(default=None, min_length=1, max_length=64)
    accounts: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    recipients: list[RecipientIn] = Field(min_length=1, max_length=MAX_JSON_RECIPIENTS)
    message: Message
    send_at: AwareDatetime | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    priority: Priority = "normal"


class CampaignSpecIn(BaseModel):
    """The ``spec`` part of a multipart campaign upload (recipients come as a file)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    account: str | None = Field(default=None, min_length=1, max_length=64)
    accounts: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    message: Message
    send_at: AwareDatetime | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    priority: Priority = "normal"


class CampaignAccepted(BaseModel):
    id: str
    total: int
    duplicates: int
    status: str


class AccountPatch(BaseModel):
    """``PATCH /v1/accounts/{id}``: only the fields given change; limits/options merge key by key."""

    model_config = ConfigDict(extra="forbid")
    base_url: str | None = None
    token: SecretStr | None = None
    instance: str | None = None
    limits: dict[str, Any] | None = None
    options: dict[str, str] | None = None


class VendorLimitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_second: float = Field(ge=0, le=10_000)


class RecallIn(BaseModel):
    """Body of a recall or revoke (optional): how long after the vendor's createTime a message may still be
    revoked (default ``BROADCAST_RECALL_WINDOW_S``, 110 s; WeChat refuses after 120 s)."""

    model_config = ConfigDict(extra="forbid")
    window_s: float | None = Field(default=None, gt=0, le=120)


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[str, Field(pattern=OBJECT_ID)]] = Field(min_length=1, max_length=10_000)
    force: bool = False


# --- app -------------------------------------------------------------------------------------------------------


class BodyLimit:
    """Refuse bodies over the limit (413) by Content-Length and while streaming (chunked), before parsing.

    A streamed body that crosses the limit is cut: the app is told the client went away and whatever it
    would answer is dropped, so the client gets the same 413 as for an announced length."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = MAX_UPLOAD_BODY if scope["path"].endswith("/upload") else MAX_JSON_BODY
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _too_large(scope, receive, send, limit)
            return
        seen = 0
        over = started = False

        async def limited() -> AsgiMessage:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: AsgiMessage) -> None:
            nonlocal started
            if over and not started:
                return  # the 413 below answers instead
            started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await _too_large(scope, receive, send, limit)


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = _error(413, "body_too_large", f"request body over {limit} bytes", None)
    await response(scope, receive, send)


def _error(status: int, code: str, message: str, field: str | None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status_code=status)


def _loc(loc: tuple[Any, ...]) -> str:
    """``("body", "message", "text", "text")`` → ``message.text`` (drops "body" and the union tag)."""
    parts: list[str] = []
    previous: Any = None
    for part in loc:
        if part == "body" and previous is None:
            previous = part
            continue
        if part in ("text", "miniprogram", "appmsg") and previous == "message":
            previous = part + "#tag"
            continue
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        else:
            parts.append(str(part))
        previous = part
    return ".".join(parts)


#: Prefixes pydantic puts before the text of an error raised in a validator: not for our users' eyes.
_LIBRARY_PREFIXES = ("Value error, ", "Assertion failed, ")


def _plain(message: str) -> str:
    """An error message without a library's prefix (``Value error, …``), also inside ``field: …`` lists."""
    for prefix in _LIBRARY_PREFIXES:
        message = message.removeprefix(prefix).replace(f": {prefix}", ": ")
    return message


def create_app(settings: Settings | None = None, client: redis.Redis | None = None) -> FastAPI:
    """Build the API. Raises ConfigError when no API token is configured outside ``dev``."""
    settings = settings or get_settings()
    tokens = [t.encode() for t in settings.api_tokens()]
    if not tokens and settings.env != "dev":
        raise ConfigError("BROADCAST_API_TOKEN is not set: refusing to start without API keys (or BROADCAST_ENV=dev)")
    client = client or redis_client(settings.redis_url)
    ledger = Ledger(client, settings.key_prefix)
    accounts = AccountStore(client, settings.key_prefix)
    producer = Producer(ledger, accounts)
    campaigns = Campaigns(ledger, accounts, max_recipients=settings.max_campaign_recipients)
    dead = DeadLetters(ledger)
    schedules = Schedules(client, settings.key_prefix, producer, campaigns, settings)
    if settings.accounts_file:
        accounts.load_file(settings.accounts_file)

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the package, not from a CDN.
    app = FastAPIOffline(
        title="wechat-broadcast",
        version="1",
        description="Producer API: accounts, messages, campaigns, dead letters. Ids are strings (64-bit exact).",
        responses=ERROR_RESPONSES,
    )
    app.add_middleware(BodyLimit)
    app.add_middleware(UploadSlots, slots=settings.max_concurrent_uploads)
    _declare_schema(app, CampaignIn)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _loc(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            return _error(400, "invalid_json", "body is not valid JSON", "body")
        details = [{"field": _loc(tuple(e.get("loc", ()))), "message": _plain(e.get("msg", ""))} for e in errors[:20]]
        response = _error(422, "invalid", f"{field}: {_plain(str(first.get('msg')))}", field or None)
        body = json.loads(bytes(response.body))
        body["error"]["details"] = details
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        return _error(exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail), None)

    @app.exception_handler(IdempotencyConflict)
    async def _idempotency_conflict(_: Request, exc: IdempotencyConflict) -> JSONResponse:
        return _error(409, "idempotency_conflict", str(exc), exc.field)

    @app.exception_handler(MessageError)
    async def _message_error(_: Request, exc: MessageError) -> JSONResponse:
        return _error(422, "invalid", _plain(str(exc)), exc.field)

    @app.exception_handler(CampaignNotFound)
    async def _no_campaign(_: Request, exc: CampaignNotFound) -> JSONResponse:
        return _error(404, "not_found", f"no campaign {exc.args[0]!r}", None)

    @app.exception_handler(CampaignStateError)
    async def _campaign_state(_: Request, exc: CampaignStateError) -> JSONResponse:
        return _error(409, "conflict", str(exc), None)

    @app.exception_handler(UnicodeEncodeError)
    async def _unencodable(_: Request, exc: UnicodeEncodeError) -> JSONResponse:
        # second line behind the field checks: a lone surrogate can't be stored or sent
        return _error(422, "invalid", "text contains a lone surrogate (not encodable as UTF-8)", None)

    @app.exception_handler(redis.ResponseError)
    async def _wrong_type(_: Request, exc: redis.ResponseError) -> JSONResponse:
        # second line behind the id patterns: a name that lands on another kind of key is not there
        if str(exc).startswith("WRONGTYPE"):
            return _error(404, "not_found", "no such object", None)
        raise exc

    @app.exception_handler(redis.ConnectionError)
    async def _redis_down(_: Request, exc: redis.ConnectionError) -> JSONResponse:
        return _error(503, "store_unavailable", "the job store (Redis) is unreachable; nothing was stored", None)

    def authorize(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if tokens:
            given = presented.strip().encode()
            ok = scheme.lower() == "bearer" and any(hmac.compare_digest(given, t) for t in tokens)
            if not ok:
                raise ApiError(401, "unauthorized", "missing or invalid bearer token", "Authorization")

    auth = [Depends(authorize)]

    def epoch(value: datetime | None) -> float | None:
        return value.timestamp() if value else None

    # --- health and metrics ------------------------------------------------------------------------------

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, Any]:
        """Liveness and Redis reachability (no auth)."""
        try:
            client.ping()
        except redis.RedisError as exc:
            raise ApiError(503, "store_unavailable", "Redis unreachable", None) from exc
        return {"ok": True}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics() -> Response:
        """Prometheus metrics."""
        from scheduler.api.metrics import render

        body, content_type = render(client, settings)
        return Response(body, media_type=content_type)

    # --- accounts -----------------------------------------------------------------------------------------

    def _public(account: Any) -> dict[str, Any]:
        """An account as answered: never its token; ``sent_today`` to set against ``limits.daily_cap``."""
        return {**account.public(), "sent_today": sent_today(client, settings.key_prefix, account)}

    def _account_or_404(account_id: AccountId) -> dict[str, Any]:
        account = accounts.get(account_id)
        if account is None:
            raise ApiError(404, "not_found", f"no account {account_id!r}", "account_id")
        return _public(account)

    @app.put("/v1/accounts/{account_id}", dependencies=auth, tags=["accounts"])
    def put_account(account_id: AccountId, spec: AccountSpec) -> dict[str, Any]:
        """Create or update an account. The token is write-only: never echoed; omit it to keep the old one,
        except when ``base_url`` or ``vendor`` changes: then the token is required again (422 otherwise)."""
        try:
            return accounts.put(account_id, spec).public()
        except TokenRequiredError as exc:
            raise ApiError(422, "token_required", str(exc), "token") from None
        except ConfigError as exc:
            raise ApiError(422, "invalid", str(exc), "account_id") from None

    @app.patch("/v1/accounts/{account_id}", dependencies=auth, tags=["accounts"])
    def patch_account(account_id: AccountId, body: AccountPatch) -> dict[str, Any]:
        """Change some fields; ``limits`` and ``options`` are merged key by key (one atomic write). Changing
        ``base_url`` needs ``token`` in the same request (422 otherwise): the stored token never follows a new URL."""
        account = accounts.get(account_id)
        if account is None:
            raise ApiError(404, "not_found", f"no account {account_id!r}", "account_id")
        current = account.spec.model_dump()
        current["token"] = ""  # kept by the store only while vendor and base_url stay the same
        changes = body.model_dump(exclude_unset=True)
        for key in ("limits", "options"):
            if key in changes:
                current[key] = {**current[key], **(changes.pop(key) or {})}
        if "token" in changes:
            changes["token"] = body.token.get_secret_value() if body.token else ""
        try:
            spec = AccountSpec.model_validate({**current, **changes})
        except ValidationError as exc:
            first = exc.errors()[0]
            field = _loc(tuple(first["loc"]))
            raise ApiError(422, "invalid", f"{field}: {_plain(first['msg'])}", field) from None
        try:
            return accounts.put(account_id, spec).public()
        except TokenRequiredError as exc:
            raise ApiError(422, "token_required", str(exc), "token") from None

    @app.get("/v1/accounts", dependencies=auth, tags=["accounts"])
    def list_accounts() -> dict[str, Any]:
        return {"accounts": [_public(a) for a in accounts.all()]}

    @app.get("/v1/accounts/{account_id}", dependencies=auth, tags=["accounts"])
    def get_account(account_id: AccountId) -> dict[str, Any]:
        """The account with its status (``active | paused | down``) and the reason."""
        return _account_or_404(account_id)

    @app.post("/v1/accounts/{account_id}/pause", dependencies=auth, tags=["accounts"])
    def pause_account(account_id: AccountId) -> dict[str, Any]:
        _account_or_404(account_id)
        accounts.set_status(account_id, "paused", "paused by operator")
        return _account_or_404(account_id)

    @app.post("/v1/accounts/{account_id}/resume", dependencies=auth, tags=["accounts"])
    def resume_account(account_id: AccountId, check_online: bool = True) -> dict[str, Any]:
        """Resume sending; by default asks the vendor first whether the account is online."""
        account = accounts.get(account_id)
        if account is None:
            raise ApiError(404, "not_found", f"no account {account_id!r}", "account_id")
        note = ""
        if check_online:
            from worker.pacing.holds import confirm_back_online
            from worker.runtime.connections import vendor_http_client
            from worker.vendors import backend_for

            # a down account also needs a successful probe send: one "online" answer is weak evidence. The
            # check holds the account's lease: never a second call in flight for it, and the pacing counts it
            try:
                with accounts.probing(account_id, ttl_s=2 * settings.longest_vendor_call_s) as made_a_call:
                    made_a_call()
                    verdict = confirm_back_online(
                        backend_for(account.vendor_account(), vendor_http_client(settings)), account
                    )
            except ConfigError as exc:
                raise ApiError(409, "account_busy", str(exc), None) from None
            if not verdict.ok:
                raise ApiError(409, "account_offline", verdict.reason, None)
            note = verdict.reason
        accounts.set_status(account_id, "active", note)
        return _account_or_404(account_id)

    # --- messages -----------------------------------------------------------------------------------------

    @app.post("/v1/messages", dependencies=auth, status_code=202, tags=["messages"])
    def post_message(body: MessageIn, response: Response) -> Accepted:
        """Store one message for sending; answers at once (202). The same idempotency_key answers the same."""
        submitted = producer.submit_message(
            account=body.account,
            to=body.to,
            message=body.message,
            variables=body.vars,
            send_at=epoch(body.send_at),
            idempotency_key=body.idempotency_key,
            priority=body.priority,
        )
        if not submitted.created:
            response.headers["Idempotent-Replayed"] = "true"
        return Accepted(id=submitted.id, status=submitted.status)

    def _campaign_created(campaign: str | None) -> float | None:
        raw = client.hget(ledger.keys.campaign(campaign), "created") if campaign else None
        return float(raw) if raw else None

    @app.get("/v1/messages/{job_id}", dependencies=auth, tags=["messages"])
    def get_message(job_id: ObjectId) -> dict[str, Any]:
        """A job's state, vendor ids (strings) and attempt errors."""
        job = ledger.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no message {job_id!r}", "id")
        history = ledger.history(job_id)
        f = job.fields
        return {
            "id": job.id,
            "status": job.state,
            "account": job.account,
            "to": job.to,
            "campaign": job.campaign,
            "attempts": job.attempts,
            "result": job.result(),
            "vendor": f.get("vendor"),
            "has_ids": f.get("has_ids") == "1" if job.state == "sent" else None,
            "errors": [h for h in history if h.get("error")],
            "history": history,
            "reason": f.get("reason"),
            "revoked_at": float(f["revoked_at"]) if f.get("revoked_at") else None,
            "recall": f.get("recall") or None,
            "recall_error": f.get("recall_error") or None,
            "created": float(f["created"]) if f.get("created") else _campaign_created(job.campaign),
            "sent_at": float(f["sent_at"]) if f.get("sent_at") else None,
        }

    @app.post("/v1/messages/{job_id}/revoke", dependencies=auth, tags=["messages"])
    def revoke_message(job_id: ObjectId, response: Response, body: RecallIn | None = None) -> dict[str, Any]:
        """Take back a sent message with its exact ids, inside the revoke window. The revoke runs on the
        account's session like a send (its lease and pacing, ahead of its sends) and is never repeated;
        this waits up to ``BROADCAST_REVOKE_WAIT_S`` for the outcome, then answers 202 ``pending``."""
        from worker.vendors import vendors_without_revoke

        job = ledger.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no message {job_id!r}", "id")
        if job.revoke_of is not None or job.state != "sent" or job.fields.get("has_ids") != "1":
            raise ApiError(
                409, "not_revocable", f"only a sent message with vendor ids can be revoked ({job.state})", None
            )
        if job.fields.get("recall") == "recalled":
            raise ApiError(409, "already_revoked", "this message was already revoked", None)
        window = body.window_s if body and body.window_s else settings.recall_window_s
        ledger.request_revokes([job_id], window_s=window, unsupported=vendors_without_revoke())
        waited_until = time.monotonic() + settings.revoke_wait_s
        fields = job.fields
        while True:
            now = ledger.get(job_id)
            fields = now.fields if now is not None else fields
            if fields.get("recall") != "pending" or time.monotonic() >= waited_until:
                break
            time.sleep(0.05)
        outcome, error = fields.get("recall"), fields.get("recall_error") or ""
        if outcome == "recalled":
            return {"id": job_id, "revoked": True, "revoked_at": float(fields["revoked_at"]), "recall": outcome}
        if outcome in ("unsupported", "too_late"):
            raise ApiError(409, str(outcome), error, None)
        if outcome == "failed":
            if error.startswith("not revocable:"):  # an id the vendor needs is missing or 0: nothing was sent
                raise ApiError(409, "not_revocable", error, None)
            raise ApiError(502, "vendor_error", f"the revoke failed (not repeated): {error}", None)
        response.status_code = 202
        return {"id": job_id, "revoked": False, "recall": "pending"}

    @app.post("/v1/messages/{job_id}/cancel", dependencies=auth, tags=["messages"])
    def cancel_message(job_id: ObjectId) -> dict[str, Any]:
        """Cancel a message that has not started sending (scheduled, queued or retrying)."""
        previous = ledger.cancel(job_id)
        if not previous:
            raise ApiError(404, "not_found", f"no message {job_id!r}", "id")
        if previous not in ("queued", "scheduled", "retrying"):
            raise ApiError(409, "conflict", f"cannot cancel a message that is {previous}", None)
        return {"id": job_id, "status": "cancelled"}

    # --- campaigns ----------------------------------------------------------------------------------------

    def _campaign_answer(created: Any, response: Response) -> CampaignAccepted:
        if not created.created:
            response.headers["Idempotent-Replayed"] = "true"
        return CampaignAccepted(
            id=created.id, total=created.total, duplicates=created.duplicates, status=created.status
        )

    @app.post(
        "/v1/campaigns",
        dependencies=auth,
        status_code=202,
        tags=["campaigns"],
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": CAMPAIGN_REF}}}},
    )
    async def post_campaign(request: Request, response: Response) -> CampaignAccepted:
        """Store a campaign atomically: all recipients queued, or nothing stored and the bad field named.
        The body (``CampaignIn``) is read in streaming passes, never as one object tree."""
        raw = await request.body()
        return await run_in_threadpool(_campaign_from_json, raw, response)

    def _campaign_from_json(raw: bytes, response: Response) -> CampaignAccepted:
        try:
            body = CampaignBody(raw)
        except BodyNotJson as exc:
            raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}", "body") from None
        try:
            spec = CampaignSpecIn.model_validate(body.header)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = _loc(tuple(first["loc"]))
            raise ApiError(422, "invalid", f"{field}: {first['msg']}", field) from None
        if not body.has_recipients:
            raise ApiError(422, "invalid", "recipients: Field required", "recipients")
        if not 1 <= body.count <= MAX_JSON_RECIPIENTS:
            raise ApiError(422, "invalid", f"recipients: between 1 and {MAX_JSON_RECIPIENTS} recipients", "recipients")
        try:
            created = campaigns.create(
                name=spec.name,
                message=spec.message,
                recipients=Replayable(lambda: body.recipients(RecipientIn)),
                account=spec.account,
                accounts=spec.accounts,
                send_at=epoch(spec.send_at),
                idempotency_key=spec.idempotency_key,
                priority=spec.priority,
            )
        except BodyNotJson as exc:
            raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}", "body") from None
        return _campaign_answer(created, response)

    @app.post("/v1/campaigns/upload", dependencies=auth, status_code=202, tags=["campaigns"])
    def upload_campaign(
        spec: Annotated[str, Form(description="JSON: name, account|accounts, message, send_at?, idempotency_key?")],
        recipients: Annotated[UploadFile, File(description="CSV (to, account?, variables…) or JSONL")],
        response: Response,
    ) -> CampaignAccepted:
        """A campaign whose recipients come as a CSV or JSONL file, streamed from disk."""
        try:
            parsed = CampaignSpecIn.model_validate_json(spec)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = "spec." + _loc(tuple(first["loc"]))
            raise ApiError(422, "invalid", f"{field}: {_plain(first['msg'])}", field) from None
        name = (recipients.filename or "").lower()
        parse = recipients_from_jsonl if name.endswith((".jsonl", ".ndjson")) else recipients_from_csv
        rows = Replayable(lambda: parse(codecs.iterdecode(_iter_lines(recipients), "utf-8-sig")))
        try:
            created = campaigns.create(
                name=parsed.name,
                message=parsed.message,
                recipients=rows,
                account=parsed.account,
                accounts=parsed.accounts,
                send_at=epoch(parsed.send_at),
                idempotency_key=parsed.idempotency_key,
                priority=parsed.priority,
            )
        except UnicodeDecodeError:
            raise ApiError(422, "invalid", "recipients: file is not UTF-8 text", "recipients") from None
        return _campaign_answer(created, response)

    @app.get("/v1/campaigns", dependencies=auth, tags=["campaigns"])
    def list_campaigns(
        limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0
    ) -> dict[str, Any]:
        return {"campaigns": campaigns.recent(limit, offset)}

    @app.get("/v1/campaigns/{campaign_id}", dependencies=auth, tags=["campaigns"])
    def get_campaign(campaign_id: ObjectId) -> dict[str, Any]:
        """Progress: status, total and per-state counts (they always add up to the total)."""
        return campaigns.get(campaign_id)

    @app.get("/v1/campaigns/{campaign_id}/deliveries", dependencies=auth, tags=["campaigns"], response_model=None)
    def get_deliveries(
        campaign_id: ObjectId,
        status: Annotated[Literal[STATES] | None, Query()] = None,  # type: ignore[valid-type]
        cursor: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        format: Annotated[Literal["json", "jsonl", "csv"], Query()] = "json",
    ) -> dict[str, Any] | StreamingResponse:
        """Per-recipient results, paged (``next_cursor``); ``format=csv|jsonl`` streams the whole export."""
        if format != "json":
            campaigns.get(campaign_id)
            media = "text/csv" if format == "csv" else "application/x-ndjson"
            stream: Iterator[str] = export_deliveries(
                campaigns, campaign_id, status=status, fmt=format, timezone_of=_account_timezone
            )
            filename = f"{campaign_id}-deliveries.{format}"
            return StreamingResponse(
                stream, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
            )
        items, next_cursor = campaigns.deliveries(campaign_id, status=status, cursor=cursor, limit=limit)
        return {"deliveries": items, "next_cursor": next_cursor}

    def _account_timezone(account_id: str) -> str:
        account = accounts.get(account_id)
        return account.spec.limits.timezone if account else "UTC"

    def _steer(campaign_id: str, action: str) -> dict[str, Any]:
        return campaigns.set_status(campaign_id, action)

    @app.post("/v1/campaigns/{campaign_id}/pause", dependencies=auth, tags=["campaigns"])
    def pause_campaign(campaign_id: ObjectId) -> dict[str, Any]:
        """Hold every unsent job; a send already in flight finishes."""
        return _steer(campaign_id, "pause")

    @app.post("/v1/campaigns/{campaign_id}/resume", dependencies=auth, tags=["campaigns"])
    def resume_campaign(campaign_id: ObjectId) -> dict[str, Any]:
        """Continue where it stopped; nothing already sent is sent again."""
        return _steer(campaign_id, "resume")

    @app.post("/v1/campaigns/{campaign_id}/cancel", dependencies=auth, tags=["campaigns"])
    def cancel_campaign(campaign_id: ObjectId) -> dict[str, Any]:
        """Cancel every unsent job at once."""
        return _steer(campaign_id, "cancel")

    @app.post("/v1/campaigns/{campaign_id}/recall", dependencies=auth, status_code=202, tags=["campaigns"])
    def recall_campaign(campaign_id: ObjectId, body: RecallIn | None = None) -> dict[str, Any]:
        """Stop the campaign (a cancel) and revoke every message it sent that is still inside the window,
        each once, through its account's session ahead of its sends; answers the campaign with ``recall``
        progress. Asking again revokes nothing twice: it answers the progress."""
        window = body.window_s if body and body.window_s else settings.recall_window_s
        return campaigns.recall(campaign_id, window_s=window)

    # --- dead letters -------------------------------------------------------------------------------------

    @app.get("/v1/dead-letters", dependencies=auth, tags=["dead letters"])
    def list_dead_letters(
        account: str | None = None,
        campaign: str | None = None,
        reason: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> dict[str, Any]:
        items = dead.list(account=account, campaign=campaign, reason=reason, limit=limit, offset=offset)
        # total: the whole dead-letter store; count: what this page (with its filters) returned
        return {"dead_letters": [d.to_dict() for d in items], "count": len(items), "total": dead.count()}

    @app.get("/v1/dead-letters/{job_id}", dependencies=auth, tags=["dead letters"])
    def get_dead_letter(job_id: ObjectId) -> dict[str, Any]:
        """A dead job with its reason, error class and full attempt history."""
        entry = dead.inspect(job_id)
        if entry is None:
            raise ApiError(404, "not_found", f"{job_id!r} is not a dead letter", "id")
        return entry

    def _replay(ids: list[str], force: bool) -> dict[str, Any]:
        results = dead.replay(ids, force=force)
        return {"results": results, "replayed": sum(1 for v in results.values() if v == "ok")}

    @app.post("/v1/dead-letters/{job_id}/replay", dependencies=auth, tags=["dead letters"])
    def replay_one(job_id: ObjectId, force: bool = False) -> dict[str, Any]:
        """Queue a dead job again under the same id. ``force`` also replays an unknown outcome."""
        result = _replay([job_id], force)
        outcome = result["results"][job_id]
        if outcome == "missing":
            raise ApiError(404, "not_found", f"no message {job_id!r}", "id")
        if outcome != "ok":
            raise ApiError(409, outcome, f"cannot replay {job_id}: {outcome}", None)
        return result

    @app.post("/v1/dead-letters/replay", dependencies=auth, tags=["dead letters"])
    def replay_many(body: ReplayIn) -> dict[str, Any]:
        """Replay several dead jobs; each id answers ``ok`` or why not."""
        return _replay(body.ids, body.force)

    @app.delete("/v1/dead-letters/{job_id}", dependencies=auth, tags=["dead letters"])
    def delete_dead_letter(job_id: ObjectId) -> dict[str, Any]:
        if not dead.delete(job_id):
            raise ApiError(404, "not_found", f"{job_id!r} is not a dead letter", "id")
        return {"deleted": job_id}

    # --- recurring schedules -----------------------------------------------------------------------------

    @app.post("/v1/schedules", dependencies=auth, status_code=201, tags=["schedules"])
    def create_schedule(body: ScheduleSpec) -> dict[str, Any]:
        """A cron schedule (5 fields, or 6 with seconds last) in a timezone, sending a message or campaign.
        Validated like a submission; crons firing too often or creating too many jobs an hour get 422."""
        return schedules.create(body)

    @app.get("/v1/schedules", dependencies=auth, tags=["schedules"])
    def list_schedules() -> dict[str, Any]:
        """Every schedule with its next three firings (``next_firings``, epoch seconds)."""
        return {"schedules": [with_next_firings(s) for s in schedules.all()]}

    @app.get("/v1/schedules/{schedule_id}", dependencies=auth, tags=["schedules"])
    def get_schedule(schedule_id: ObjectId) -> dict[str, Any]:
        found = schedules.get(schedule_id)
        if found is None:
            raise ApiError(404, "not_found", f"no schedule {schedule_id!r}", "id")
        return found

    def _schedule_or_404(schedule_id: str, found: dict[str, Any] | None) -> dict[str, Any]:
        if found is None:
            raise ApiError(404, "not_found", f"no schedule {schedule_id!r}", "id")
        return found

    @app.post("/v1/schedules/{schedule_id}/pause", dependencies=auth, tags=["schedules"])
    def pause_schedule(schedule_id: str) -> dict[str, Any]:
        """Stop firing and keep the schedule (``paused: true``, no ``next_at``)."""
        return _schedule_or_404(schedule_id, schedules.pause(schedule_id))

    @app.post("/v1/schedules/{schedule_id}/resume", dependencies=auth, tags=["schedules"])
    def resume_schedule(schedule_id: str) -> dict[str, Any]:
        """Fire again from the next cron time after now; firings missed while paused are skipped."""
        return _schedule_or_404(schedule_id, schedules.resume(schedule_id))

    @app.delete("/v1/schedules/{schedule_id}", dependencies=auth, tags=["schedules"])
    def delete_schedule(schedule_id: ObjectId) -> dict[str, Any]:
        if not schedules.delete(schedule_id):
            raise ApiError(404, "not_found", f"no schedule {schedule_id!r}", "id")
        return {"deleted": schedule_id}

    # --- vendor limits -----------------------------------------------------------------------------------

    @app.put("/v1/vendor-limits/{vendor}", dependencies=auth, tags=["accounts"])
    def put_vendor_limit(vendor: VendorName, body: VendorLimitIn) -> dict[str, Any]:
        """The vendor API's own rate, across all its accounts, on top of each account's pacing (0 = none)."""
        if body.per_second <= 0:
            client.hdel(ledger.keys.vendor_limits, vendor)
        else:
            client.hset(ledger.keys.vendor_limits, vendor, str(body.per_second))
        return {"vendor": vendor, "per_second": body.per_second}

    @app.get("/v1/vendor-limits", dependencies=auth, tags=["accounts"])
    def get_vendor_limits() -> dict[str, Any]:
        raw = cast(dict[str, str], client.hgetall(ledger.keys.vendor_limits))
        return {"vendor_limits": {k: float(v) for k, v in raw.items()}}

    mount_console(app, auth)
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


def _iter_lines(upload: UploadFile) -> Iterator[bytes]:
    """Lines of an uploaded file, read from its spooled temp file without loading it whole."""
    upload.file.seek(0)
    yield from upload.file
