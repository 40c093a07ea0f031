"""``/v1/schedules``: recurring sends on a cron in a timezone."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from scheduler.api.errors import ApiError
from scheduler.api.models import ObjectId
from scheduler.api.state import AUTH, Stores, authorize, check_role
from scheduler.console import with_next_firings
from scheduler.dispatch.schedules import OwnerRevoked, ScheduleSpec
from worker.store.operators import Caller, Role

router = APIRouter(tags=["schedules"], dependencies=AUTH)


def _found(schedule_id: str, found: dict[str, Any] | None) -> dict[str, Any]:
    if found is None:
        raise ApiError(404, "not_found", f"no schedule {schedule_id!r}", "id")
    return found


@router.post("/v1/schedules", status_code=201)
def create_schedule(body: ScheduleSpec, state: Stores, caller: Annotated[Caller, Depends(authorize)]) -> dict[str, Any]:
    """A cron schedule (5 fields, or 6 with seconds last) in a timezone, sending a message or campaign.
    Validated like a submission; crons firing too often or creating too many jobs an hour get 422.
    ``created_by`` names the key: revoking it pauses the schedule."""
    return state.schedules.create(body, created_by=caller.name, creator_key=caller.digest)


@router.get("/v1/schedules")
def list_schedules(state: Stores) -> dict[str, Any]:
    """Every schedule with its next three firings (``next_firings``, epoch seconds)."""
    return {"schedules": [with_next_firings(s) for s in state.schedules.all()]}


@router.get("/v1/schedules/{schedule_id}")
def get_schedule(schedule_id: ObjectId, state: Stores) -> dict[str, Any]:
    return _found(schedule_id, state.schedules.get(schedule_id))


@router.post("/v1/schedules/{schedule_id}/pause")
def pause_schedule(schedule_id: str, state: Stores) -> dict[str, Any]:
    """Stop firing and keep the schedule (``paused: true``, no ``next_at``)."""
    return _found(schedule_id, state.schedules.pause(schedule_id))


@router.post("/v1/schedules/{schedule_id}/resume")
def resume_schedule(schedule_id: str, state: Stores, caller: Annotated[Caller, Depends(authorize)]) -> dict[str, Any]:
    """Fire again from the next cron time after now; firings missed while paused are skipped. A schedule
    paused because its creator's key was revoked (``owner_revoked``) needs an admin to send again."""
    try:
        return _found(schedule_id, state.schedules.resume(schedule_id, admin=caller.role.allows(Role.ADMIN)))
    except OwnerRevoked:
        check_role(caller, Role.ADMIN)
        raise


@router.delete("/v1/schedules/{schedule_id}")
def delete_schedule(schedule_id: ObjectId, state: Stores) -> dict[str, Any]:
    if not state.schedules.delete(schedule_id):
        raise ApiError(404, "not_found", f"no schedule {schedule_id!r}", "id")
    return {"deleted": schedule_id}
