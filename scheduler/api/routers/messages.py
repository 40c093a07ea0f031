"""``/v1/messages``: one message to one recipient — submit, read, cancel, revoke."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import AwareDatetime, BaseModel, Field, StrictBool

from scheduler.api.errors import ApiError
from scheduler.api.models import ObjectId, RecallIn, epoch, mark_replayed
from scheduler.api.state import AUTH, ApiState, Stores, audit_variant
from scheduler.dispatch.schedules import MessageTemplate
from worker.store.ledger import Job, RecallOutcome
from worker.vendors import vendors_without_revoke

router = APIRouter(tags=["messages"], dependencies=AUTH)


class MessageIn(MessageTemplate):
    """``POST /v1/messages``: what a schedule sends each time, and when, once."""

    send_at: AwareDatetime | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    ignore_suppression: StrictBool = Field(
        default=False, description="send even to a suppressed recipient (recorded on the message)"
    )


class Accepted(BaseModel):
    """A stored job."""

    id: str
    status: str


#: What ``GET /v1/messages/{id}`` shows of a job's public view (with its history and errors).
_MESSAGE_FIELDS = (
    "id", "status", "account", "to", "campaign", "test_of", "attempts", "result", "vendor", "has_ids", "parts",
)  # fmt: skip
_MESSAGE_TAIL = (
    "reason",
    "skip_reason",
    "ignore_suppression",
    "ignore_suppression_by",
    "revoked_at",
    "recall",
    "recall_error",
    "created",
    "sent_at",
)


def _job(state: ApiState, job_id: str) -> Job:
    job = state.ledger.get(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no message {job_id!r}", "id")
    return job


@router.post("/v1/messages", status_code=202)
def post_message(body: MessageIn, request: Request, response: Response, state: Stores) -> Accepted:
    """Store one message for sending; answers at once (202). The same idempotency_key answers the same.
    ``ignore_suppression`` (an operator's key) is recorded on the message with the key's name."""
    caller = getattr(request.state, "caller", None)
    if body.ignore_suppression:  # audited as message.create_ignore_suppression: an override stands out
        audit_variant(request, "ignore_suppression")
    submitted = state.producer.submit_message(
        account=body.account,
        to=body.to,
        message=body.message,
        variables=body.vars,
        send_at=epoch(body.send_at),
        idempotency_key=body.idempotency_key,
        priority=body.priority,
        ignore_suppression=(getattr(caller, "name", "") or "api") if body.ignore_suppression else None,
        created_by=getattr(caller, "name", None),
        creator_key=getattr(caller, "digest", ""),
    )
    mark_replayed(response, submitted.created)
    return Accepted(id=submitted.id, status=submitted.status)


@router.get("/v1/messages/{job_id}")
def get_message(job_id: ObjectId, state: Stores) -> dict[str, Any]:
    """A job's state, vendor ids (strings) and attempt errors."""
    job = _job(state, job_id)
    view = job.public()
    history = state.ledger.history(job_id)
    if view["created"] is None and job.campaign:  # a campaign's jobs carry the campaign's time
        view["created"] = state.campaigns.created_at(job.campaign)
    if view["vendor"] is None:  # set at a send; a job that never got one (dead, queued) names its account's
        account = state.accounts.get(job.account)
        view["vendor"] = account.spec.vendor if account else None
    return {
        **{name: view[name] for name in _MESSAGE_FIELDS},
        "errors": [h for h in history if h.get("error")],
        "history": history,
        **{name: view[name] for name in _MESSAGE_TAIL},
        "created_by": job.fields.get("created_by"),  # the key that submitted it (a campaign's: the campaign's)
    }


@router.post("/v1/messages/{job_id}/revoke")
def revoke_message(job_id: ObjectId, response: Response, state: Stores, body: RecallIn | None = None) -> dict[str, Any]:
    """Take back a sent message with its exact ids, inside the revoke window. The revoke runs on the
    account's session like a send (its lease and pacing, ahead of its sends) and is never repeated;
    this waits up to ``BROADCAST_REVOKE_WAIT_S`` for the outcome, then answers 202 ``pending``."""
    job = _job(state, job_id)
    if job.revoke_of is not None or job.state != "sent" or job.fields.get("has_ids") != "1":
        raise ApiError(409, "not_revocable", f"only a sent message with vendor ids can be revoked ({job.state})", None)
    if job.fields.get("recall") == RecallOutcome.RECALLED:
        raise ApiError(409, "already_revoked", "this message was already revoked", None)
    if not job.fields.get("recall") and state.accounts.get(job.account) is None:
        raise ApiError(409, "account_missing", f"the account {job.account!r} that sent it no longer exists", None)
    window = body.window_s if body and body.window_s else state.settings.recall_window_s
    state.ledger.request_revokes([job_id], window_s=window, unsupported=vendors_without_revoke())
    waited_until = time.monotonic() + state.settings.revoke_wait_s
    fields = job.fields
    while True:
        current = state.ledger.get(job_id)
        fields = current.fields if current is not None else fields
        if fields.get("recall") != RecallOutcome.PENDING or time.monotonic() >= waited_until:
            break
        time.sleep(0.05)
    outcome, error = fields.get("recall"), fields.get("recall_error") or ""
    if outcome == RecallOutcome.RECALLED:
        return {"id": job_id, "revoked": True, "revoked_at": float(fields["revoked_at"]), "recall": outcome}
    if outcome in (RecallOutcome.UNSUPPORTED, RecallOutcome.TOO_LATE):
        raise ApiError(409, str(outcome), error, None)
    if outcome == RecallOutcome.FAILED:
        if error.startswith("not revocable:"):  # an id the vendor needs is missing or 0: nothing was sent
            raise ApiError(409, "not_revocable", error, None)
        raise ApiError(502, "vendor_error", f"the revoke failed (not repeated): {error}", None)
    response.status_code = 202
    return {"id": job_id, "revoked": False, "recall": RecallOutcome.PENDING.value}


@router.post("/v1/messages/{job_id}/cancel")
def cancel_message(job_id: ObjectId, state: Stores) -> dict[str, Any]:
    """Cancel a message that has not started sending (scheduled, queued or retrying)."""
    previous = state.ledger.cancel(job_id)
    if not previous:
        raise ApiError(404, "not_found", f"no message {job_id!r}", "id")
    if previous == "revoke":
        raise ApiError(409, "conflict", "a revoke cannot be cancelled: a recall is final / 撤回任务不能取消", None)
    if previous not in ("queued", "scheduled", "retrying"):
        raise ApiError(409, "conflict", f"cannot cancel a message that is {previous}", None)
    return {"id": job_id, "status": "cancelled"}
