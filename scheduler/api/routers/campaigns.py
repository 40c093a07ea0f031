"""``/v1/campaigns``: one message to many recipients, stored all at once or not at all; progress,
per-recipient deliveries (paged, or exported as CSV/JSONL), pause/resume/cancel and recall; a draft's test
send and start (docs/api.md, "Campaign safety")."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from scheduler.api.body_limit import SCANNED
from scheduler.api.errors import ApiError, invalid
from scheduler.api.exports import export_deliveries
from scheduler.api.models import ObjectId, Priority, RecallIn, epoch, mark_replayed
from scheduler.api.state import AUTH, ApiState, Stores, authorize, check_role, read_body
from scheduler.intake.audience import AudienceIn
from scheduler.intake.campaigns import (
    MAX_TEST_RECIPIENTS,
    OwnerRevokedError,
    Replayable,
    recipients_from_csv,
    recipients_from_jsonl,
)
from scheduler.intake.producer import RECIPIENT_MAX
from scheduler.intake.uploads import BodyNotJson, CampaignBody
from worker import jsonsafe
from worker.jsonsafe import SMALL_JSON_LIMITS, STREAMED_JSON_LIMITS
from worker.messages import Message
from worker.store.accounts import ACCOUNT_ID_MAX
from worker.store.ledger import STATES
from worker.store.operators import Caller, Role

router = APIRouter(tags=["campaigns"], dependencies=AUTH)

#: Recipients in one JSON campaign body (larger lists go through the upload, up to the settings' maximum).
MAX_JSON_RECIPIENTS = 200_000
#: The JSON campaign body is parsed by hand (streamed), so its schema is declared in the OpenAPI document.
CAMPAIGN_REF = {"$ref": "#/components/schemas/CampaignIn"}

AccountName = Annotated[str, Field(min_length=1, max_length=ACCOUNT_ID_MAX)]


class RecipientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1, max_length=RECIPIENT_MAX)
    account: AccountName | None = None
    vars: dict[str, str | int | float] | None = None


class AutoPauseIn(BaseModel):
    """A campaign's own auto-pause thresholds; a missing field takes the server's default, null or 0 turns
    that check off (``"auto_pause": null`` turns both off). Strict: ``true`` or ``"0.2"`` is not a number here."""

    model_config = ConfigDict(extra="forbid", strict=True)
    ratio: float | None = Field(default=None, ge=0, le=1, description="share of dead among the window's outcomes")
    window: int | None = Field(default=None, ge=0, le=10_000, description="latest final outcomes looked at")
    min_attempts: int | None = Field(
        default=None, ge=1, le=10_000, description="outcomes needed before the share counts"
    )
    streak: int | None = Field(default=None, ge=0, le=10_000, description="dead deliveries in a row")

    @model_validator(mode="after")
    def _can_fire(self) -> AutoPauseIn:
        if self.window and self.min_attempts and self.min_attempts > self.window:
            raise ValueError("min_attempts must not exceed window (the share could never be reached)")
        return self


class CampaignTestIn(BaseModel):
    """``POST /v1/campaigns/{id}/test``: a few internal recipients; the first recipient's vars unless given."""

    model_config = ConfigDict(extra="forbid")
    to: list[str] = Field(min_length=1, max_length=MAX_TEST_RECIPIENTS)
    account: AccountName | None = None
    vars: dict[str, str | int | float] | None = None


class CampaignSpecIn(BaseModel):
    """The ``spec`` part of a multipart campaign upload (recipients come as a file)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    account: AccountName | None = None
    accounts: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    message: Message
    send_at: AwareDatetime | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    priority: Priority = "normal"
    draft: bool = Field(default=False, description="store it, release nothing until POST …/start")
    auto_pause: AutoPauseIn | None = None
    audience: AudienceIn | None = Field(
        default=None, description="recipients from the accounts' own contacts (friends, labels, groups)"
    )
    on_cap: Literal["skip", "wait"] = Field(
        default="skip", description="when the account's recipient_cap is reached: skip the delivery, or wait"
    )

    def create_args(self) -> dict[str, Any]:
        """The arguments of ``Campaigns.create`` this spec gives: everything but the recipients."""
        return {
            "name": self.name,
            "message": self.message,
            "account": self.account,
            "accounts": self.accounts,
            "send_at": epoch(self.send_at),
            "idempotency_key": self.idempotency_key,
            "priority": self.priority,
            "draft": self.draft,
            "auto_pause": self.auto_pause_given(),
            "audience": self.audience,
            "on_cap": self.on_cap,
        }

    def auto_pause_given(self) -> dict[str, Any] | None:
        """The thresholds asked for (None: the defaults); ``"auto_pause": null`` switches both checks off."""
        if "auto_pause" not in self.model_fields_set:
            return None
        if self.auto_pause is None:
            return {"ratio": None, "streak": None}
        return self.auto_pause.model_dump(exclude_unset=True)


class CampaignIn(CampaignSpecIn):
    """``POST /v1/campaigns``. Recipients without an account use ``account``, or are spread over ``accounts``;
    an ``audience`` adds (or stands for) recipients from the accounts' own contacts."""

    recipients: list[RecipientIn] | None = Field(default=None, min_length=1, max_length=MAX_JSON_RECIPIENTS)


class CampaignAccepted(BaseModel):
    id: str
    total: int
    duplicates: int
    status: str
    audience: dict[str, Any] | None = Field(
        default=None,
        description="an audience's resolution: total, duplicates, excluded, sync age per account, "
        "the first rows (a draft)",
    )


def _create(
    state: ApiState,
    spec: CampaignSpecIn,
    recipients: Iterable[Mapping[str, Any]],
    response: Response,
    caller: Caller | None,
) -> CampaignAccepted:
    created = state.campaigns.create(
        recipients=recipients,
        created_by=caller.name if caller is not None else None,
        creator_key=caller.digest if caller is not None else "",
        **spec.create_args(),
    )
    mark_replayed(response, created.created)
    return CampaignAccepted(
        id=created.id,
        total=created.total,
        duplicates=created.duplicates,
        status=created.status,
        audience=created.audience,
    )


@router.post(
    "/v1/campaigns",
    status_code=202,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": CAMPAIGN_REF}}}},
)
async def post_campaign(request: Request, response: Response, state: Stores) -> CampaignAccepted:
    """Store a campaign atomically: all recipients queued, or nothing stored and the bad field named.
    The body (``CampaignIn``) is read in streaming passes, never as one object tree."""
    raw = await read_body(request, state)
    scanned = bool(request.scope.get(SCANNED))
    caller = getattr(request.state, "caller", None)
    return await run_in_threadpool(_campaign_from_json, state, raw, response, scanned, caller)


def _campaign_from_json(
    state: ApiState, raw: bytes, response: Response, scanned: bool, caller: Caller | None = None
) -> CampaignAccepted:
    if not scanned:  # parsed here, not by FastAPI: never without the shape limits, whoever mounts the route
        try:
            jsonsafe.check(raw, STREAMED_JSON_LIMITS, "body")
        except jsonsafe.JsonLimitError as exc:
            raise ApiError(422, "json_limit", str(exc), exc.field) from None
    try:
        body = CampaignBody(raw)
    except BodyNotJson as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON ({exc})", "body") from None
    try:
        spec = CampaignSpecIn.model_validate(body.header)
    except ValidationError as exc:
        raise invalid(exc) from None
    if not body.has_recipients and spec.audience is None:
        raise ApiError(422, "invalid", "recipients: Field required (or give an audience)", "recipients")
    if body.has_recipients and not 1 <= body.count <= MAX_JSON_RECIPIENTS:
        raise ApiError(422, "invalid", f"recipients: between 1 and {MAX_JSON_RECIPIENTS} recipients", "recipients")
    rows: Iterable[Mapping[str, Any]] = Replayable(lambda: body.recipients(RecipientIn)) if body.has_recipients else []
    try:
        return _create(state, spec, rows, response, caller)
    except BodyNotJson as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON ({exc})", "body") from None


@router.post("/v1/campaigns/upload", status_code=202)
def upload_campaign(
    spec: Annotated[str, Form(description="JSON: name, account|accounts, message, send_at?, idempotency_key?")],
    recipients: Annotated[UploadFile, File(description="CSV (to, account?, variables…) or JSONL")],
    response: Response,
    state: Stores,
    caller: Annotated[Caller, Depends(authorize)],
) -> CampaignAccepted:
    """A campaign whose recipients come as a CSV or JSONL file, streamed from disk."""
    jsonsafe.check(spec, SMALL_JSON_LIMITS, "spec")  # a form field: BodyLimit scans JSON bodies only
    try:
        parsed = CampaignSpecIn.model_validate_json(spec)
    except ValidationError as exc:
        raise invalid(exc, prefix="spec.") from None
    name = (recipients.filename or "").lower()
    parse = recipients_from_jsonl if name.endswith((".jsonl", ".ndjson")) else recipients_from_csv
    rows = Replayable(lambda: parse(codecs.iterdecode(_iter_lines(recipients), "utf-8-sig")))
    try:
        return _create(state, parsed, rows, response, caller)
    except UnicodeDecodeError:
        raise ApiError(422, "invalid", "recipients: file is not UTF-8 text", "recipients") from None


@router.get("/v1/campaigns")
def list_campaigns(
    state: Stores,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict[str, Any]:
    return {"campaigns": state.campaigns.recent(limit, offset)}


@router.get("/v1/campaigns/{campaign_id}")
def get_campaign(campaign_id: ObjectId, state: Stores) -> dict[str, Any]:
    """Progress: status, total and per-state counts (they always add up to the total)."""
    return state.campaigns.get(campaign_id)


@router.get("/v1/campaigns/{campaign_id}/deliveries", response_model=None)
def get_deliveries(
    campaign_id: ObjectId,
    state: Stores,
    status: Annotated[Literal[STATES] | None, Query()] = None,  # type: ignore[valid-type]
    cursor: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Annotated[Literal["json", "jsonl", "csv"], Query()] = "json",
) -> dict[str, Any] | StreamingResponse:
    """Per-recipient results, paged (``next_cursor``); ``format=csv|jsonl`` streams the whole export."""
    campaigns = state.campaigns
    if format != "json":
        campaigns.get(campaign_id)
        media = "text/csv" if format == "csv" else "application/x-ndjson"

        def timezone_of(account_id: str) -> str:
            account = state.accounts.get(account_id)
            return account.spec.limits.timezone if account else "UTC"

        stream: Iterator[str] = export_deliveries(
            campaigns, campaign_id, status=status, fmt=format, timezone_of=timezone_of
        )
        filename = f"{campaign_id}-deliveries.{format}"
        return StreamingResponse(
            stream, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
        )
    items, next_cursor = campaigns.deliveries(campaign_id, status=status, cursor=cursor, limit=limit)
    return {"deliveries": items, "next_cursor": next_cursor}


@router.post("/v1/campaigns/{campaign_id}/pause")
def pause_campaign(campaign_id: ObjectId, state: Stores) -> dict[str, Any]:
    """Hold every unsent job; a send already in flight finishes."""
    return state.campaigns.set_status(campaign_id, "pause")


@router.post("/v1/campaigns/{campaign_id}/resume")
def resume_campaign(
    campaign_id: ObjectId, state: Stores, caller: Annotated[Caller, Depends(authorize)]
) -> dict[str, Any]:
    """Continue where it stopped; nothing already sent is sent again. One paused because the key that
    created it was revoked (``owner_revoked``) needs an admin."""
    return _as_admin_when_revoked(caller, lambda admin: state.campaigns.set_status(campaign_id, "resume", admin=admin))


def _as_admin_when_revoked(caller: Caller, act: Callable[[bool], dict[str, Any]]) -> dict[str, Any]:
    """Run ``act`` told whether the caller is an admin; a campaign its revoked key made answers 403 naming
    the role, as a schedule does."""
    try:
        return act(caller.role.allows(Role.ADMIN))
    except OwnerRevokedError:
        check_role(caller, Role.ADMIN)
        raise


@router.post("/v1/campaigns/{campaign_id}/cancel")
def cancel_campaign(campaign_id: ObjectId, state: Stores) -> dict[str, Any]:
    """Cancel every unsent job at once."""
    return state.campaigns.set_status(campaign_id, "cancel")


# campaign safety: draft → test send → start


@router.post("/v1/campaigns/{campaign_id}/test", status_code=202)
def test_campaign(
    campaign_id: ObjectId, body: CampaignTestIn, state: Stores, caller: Annotated[Caller, Depends(authorize)]
) -> dict[str, Any]:
    """Send the campaign's message to a few internal recipients (ordinary messages marked ``test_of``,
    not in the campaign's counts), rendered with ``vars`` or the first recipient's."""
    return state.campaigns.send_test(
        campaign_id, body.to, account=body.account, variables=body.vars,
        created_by=caller.name, creator_key=caller.digest,
    )  # fmt: skip


@router.post("/v1/campaigns/{campaign_id}/start")
def start_campaign(
    campaign_id: ObjectId, state: Stores, caller: Annotated[Caller, Depends(authorize)]
) -> dict[str, Any]:
    """Arm a draft: scheduled if its ``send_at`` is ahead, live now otherwise. ``409 test_send_required``
    when it has more than ``BROADCAST_REQUIRE_TEST_ABOVE`` recipients and no test send went out; ``403``
    when the key that created it was revoked (``owner_revoked``) and the caller is not an admin."""
    return _as_admin_when_revoked(caller, lambda admin: state.campaigns.start(campaign_id, admin=admin))


@router.post("/v1/campaigns/{campaign_id}/recall", status_code=202)
def recall_campaign(campaign_id: ObjectId, state: Stores, body: RecallIn | None = None) -> dict[str, Any]:
    """Stop the campaign (a cancel) and revoke every message it sent that is still inside the window,
    each once, through its account's session ahead of its sends; answers the campaign with ``recall``
    progress. Asking again revokes nothing twice: it answers the progress."""
    window = body.window_s if body and body.window_s else state.settings.recall_window_s
    return state.campaigns.recall(campaign_id, window_s=window)


def _iter_lines(upload: UploadFile) -> Iterator[bytes]:
    """Lines of an uploaded file, read from its spooled temp file without loading it whole."""
    upload.file.seek(0)
    yield from upload.file
