"""``/v1/audit``: who did what, newest first, filtered by key name or target (``campaign:42``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from scheduler.api.errors import ApiError
from scheduler.api.state import AUTH, Stores
from worker.store.audit import valid_cursor

router = APIRouter(tags=["audit"], dependencies=AUTH)


@router.get("/v1/audit")
def list_audit(
    state: Stores,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,20}-\d{1,20}$")] = None,
    key: Annotated[str | None, Query(max_length=64)] = None,
    target: Annotated[str | None, Query(max_length=300)] = None,
) -> dict[str, Any]:
    """``{"items": [{"at", "key", "role", "action", "target", "status"}], "next_cursor"}``; pass
    ``next_cursor`` back as ``cursor`` for older entries (null: nothing older)."""
    if cursor is not None and not valid_cursor(cursor):
        raise ApiError(422, "invalid", "cursor: not a stream id (use next_cursor from the last page)", "cursor")
    items, next_cursor = state.audit.page(limit=limit, cursor=cursor, key=key, target=target)
    return {"items": items, "next_cursor": next_cursor}
