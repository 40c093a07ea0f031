"""``/v1/dead-letters``: jobs that will not be sent without a person deciding — list, inspect, replay, drop."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from scheduler.api.errors import ApiError
from scheduler.api.models import OBJECT_ID, ObjectId
from scheduler.api.state import AUTH, ApiState, Stores, audit_targets, audit_variant, check_role
from worker.store.deadletter import DeadReason
from worker.store.operators import Caller, Role
from worker.store.vocabulary import CancelReason

router = APIRouter(tags=["dead letters"], dependencies=AUTH)


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[str, Field(pattern=OBJECT_ID)]] = Field(min_length=1, max_length=10_000)
    force: bool = False


@router.get("/v1/dead-letters")
def list_dead_letters(
    state: Stores,
    account: str | None = None,
    campaign: str | None = None,
    reason: DeadReason | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict[str, Any]:
    dead = state.dead_letters
    items = dead.list(account=account, campaign=campaign, reason=reason, limit=limit, offset=offset)
    # total: the whole dead-letter store; count: what this page (with its filters) returned
    return {"dead_letters": [d.to_dict() for d in items], "count": len(items), "total": dead.count()}


@router.get("/v1/dead-letters/{job_id}")
def get_dead_letter(job_id: ObjectId, state: Stores) -> dict[str, Any]:
    """A dead job with its reason, error class and full attempt history."""
    entry = state.dead_letters.inspect(job_id)
    if entry is None:
        raise ApiError(404, "not_found", f"{job_id!r} is not a dead letter", "id")
    return entry


def _replay(state: ApiState, ids: list[str], force: bool, request: Request) -> dict[str, Any]:
    """Replay as the calling key: a message whose own key was revoked answers ``owner_revoked`` to all but
    an admin, whose replay makes it the admin's (so it is sent, not cancelled when it begins)."""
    if force:  # it may send a second time: the audit trail must tell it from a plain replay
        audit_variant(request, "force")
    caller: Caller = request.state.caller
    results = state.dead_letters.replay(
        ids, force=force, by=caller.name, by_key=caller.digest, admin=caller.role.allows(Role.ADMIN)
    )
    return {"results": results, "replayed": sum(1 for v in results.values() if v == "ok")}


@router.post("/v1/dead-letters/{job_id}/replay")
def replay_one(job_id: ObjectId, state: Stores, request: Request, force: bool = False) -> dict[str, Any]:
    """Queue a dead job again under the same id. ``force`` also replays an unknown outcome (audited as
    ``dead_letter.replay_force``)."""
    result = _replay(state, [job_id], force, request)
    outcome = result["results"][job_id]
    if outcome == "missing":
        raise ApiError(404, "not_found", f"no message {job_id!r}", "id")
    if outcome == CancelReason.OWNER_REVOKED:
        check_role(request.state.caller, Role.ADMIN)  # 403 naming the role, as a revoked key's campaign
    if outcome != "ok":
        raise ApiError(409, outcome, f"cannot replay {job_id}: {outcome}", None)
    return result


@router.post("/v1/dead-letters/replay")
def replay_many(body: ReplayIn, state: Stores, request: Request) -> dict[str, Any]:
    """Replay several dead jobs; each id answers ``ok`` or why not. Audited once per job replayed
    (``dead_letter.replay_bulk`` / ``dead_letter.replay_bulk_force``, target ``dead_letter:<id>``)."""
    result = _replay(state, body.ids, body.force, request)
    replayed = [job_id for job_id, outcome in result["results"].items() if outcome == "ok"]
    if replayed:
        audit_targets(request, "dead_letter", replayed)
    return result


@router.delete("/v1/dead-letters/{job_id}")
def delete_dead_letter(job_id: ObjectId, state: Stores) -> dict[str, Any]:
    if not state.dead_letters.delete(job_id):
        raise ApiError(404, "not_found", f"{job_id!r} is not a dead letter", "id")
    return {"deleted": job_id}
