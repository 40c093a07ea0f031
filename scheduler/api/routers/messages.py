"""``/v1/messages``: one message to one recipient — submit, read, cancel, revoke."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from scheduler.api.errors import ApiError
from scheduler.api.models import ObjectId, Priority, epoch, mark_replayed
from scheduler.api.state import AUTH, ApiState, Stores
from scheduler.intake.producer import RECIPIENT_MAX
from worker.errors import MessageError
from worker.messages import Message
from worker.store.accounts import ACCOUNT_ID_MAX
from worker.store.ledger import Job

router = APIRouter(tags=["messages"], dependencies=AUTH)


class MessageIn(BaseModel):
    """``POST /v1/messages``."""

    model_config = ConfigDict(extra="forbid")
    account: str = Field(min_length=1, max_length=ACCOUNT_ID_MAX)
    to: str = Field(min_length=1, max_length=RECIPIENT_MAX)
    message: Message
    vars: dict[str, str] | None = None
    send_at: AwareDatetime | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    priority: Priority = "normal"


class Accepted(BaseModel):
    """A stored job."""

    id: str
    status: str


#: What ``GET /v1/messages/{id}`` shows of a job's public view (with its history and errors).
_MESSAGE_FIELDS = ("id", "status", "account", "to", "campaign", "test_of", "attempts", "result", "vendor", "has_ids")
_MESSAGE_TAIL = ("reason", "revoked_at", "created", "sent_at")


def _job(state: ApiState, job_id: str) -> Job:
    job = state.ledger.get(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no message {job_id!r}", "id")
    return job


@router.post("/v1/messages", status_code=202)
def post_message(body: MessageIn, response: Response, state: Stores) -> Accepted:
    """Store one message for sending; answers at once (202). The same idempotency_key answers the same."""
    submitted = state.producer.submit_message(
        account=body.account,
        to=body.to,
        message=body.message,
        variables=body.vars,
        send_at=epoch(body.send_at),
        idempotency_key=body.idempotency_key,
        priority=body.priority,
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
    return {
        **{name: view[name] for name in _MESSAGE_FIELDS},
        "errors": [h for h in history if h.get("error")],
        "history": history,
        **{name: view[name] for name in _MESSAGE_TAIL},
    }


@router.post("/v1/messages/{job_id}/revoke")
def revoke_message(job_id: ObjectId, state: Stores) -> dict[str, Any]:
    """Take back a sent message with its exact ids (vendors allow about two minutes after sending)."""
    from worker.errors import RevokeRefusedError, UnsupportedError, VendorError
    from worker.runtime.connections import vendor_http_client
    from worker.vendors import SendResult, backend_for

    job = _job(state, job_id)
    if job.state != "sent" or job.fields.get("has_ids") != "1":
        raise ApiError(409, "not_revocable", f"only a sent message with vendor ids can be revoked ({job.state})", None)
    if job.fields.get("revoked_at"):
        raise ApiError(409, "already_revoked", "this message was already revoked", None)
    account = state.accounts.get(job.account)
    if account is None:
        raise ApiError(409, "account_missing", f"account {job.account!r} is not configured any more", None)
    sent = SendResult.from_dict({**job.fields, "to": job.to})
    try:
        backend_for(account.vendor_account(), vendor_http_client(state.settings)).revoke(sent)
    except UnsupportedError as exc:
        raise ApiError(409, "unsupported", str(exc), None) from None
    except RevokeRefusedError as exc:  # an id the vendor needs is missing or 0: nothing was sent
        raise ApiError(409, "not_revocable", str(exc), None) from None
    except VendorError as exc:
        raise ApiError(502, "vendor_error", f"the vendor refused the revoke: {exc}", None) from None
    except MessageError as exc:  # the request could not even be built (the account's fields): not sent
        raise ApiError(409, "not_revocable", str(exc), None) from None
    now = time.time()
    state.ledger.mark_revoked(job_id, now)
    return {"id": job_id, "revoked": True, "revoked_at": now}


@router.post("/v1/messages/{job_id}/cancel")
def cancel_message(job_id: ObjectId, state: Stores) -> dict[str, Any]:
    """Cancel a message that has not started sending (scheduled, queued or retrying)."""
    previous = state.ledger.cancel(job_id)
    if not previous:
        raise ApiError(404, "not_found", f"no message {job_id!r}", "id")
    if previous not in ("queued", "scheduled", "retrying"):
        raise ApiError(409, "conflict", f"cannot cancel a message that is {previous}", None)
    return {"id": job_id, "status": "cancelled"}
