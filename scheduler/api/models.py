"""Request parts shared by several routers: id patterns, priority, times, the recall window."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path, Response
from pydantic import BaseModel, ConfigDict, Field

from worker.store.accounts import ACCOUNT_ID_PATTERN
from worker.store.ledger import Priority as Priority  # the store's, re-exported for the routers

#: Job, campaign and schedule ids: letters, digits, ``-`` and ``_`` only. No ``:``, so an id can never
#: reach another kind of key (``campaign:{id}:jobs`` is a list, not the campaign's hash).
OBJECT_ID = r"^[A-Za-z0-9_-]{1,100}$"
ObjectId = Annotated[str, Path(pattern=OBJECT_ID)]
AccountId = Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN)]


def epoch(value: datetime | None) -> float | None:
    """An aware datetime from a request as the epoch seconds the stores keep."""
    return value.timestamp() if value else None


def mark_replayed(response: Response, created: bool) -> None:
    """A repeated idempotency key answers what the first request got, marked ``Idempotent-Replayed``."""
    if not created:
        response.headers["Idempotent-Replayed"] = "true"


class RecallIn(BaseModel):
    """Body of a campaign's recall or a message's revoke (optional): how long after the vendor's createTime a
    message may still be revoked (default ``BROADCAST_RECALL_WINDOW_S``, 110 s; WeChat refuses after 120 s)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    window_s: float | None = Field(default=None, gt=0, le=120)
