"""The console's pictures: outcomes per minute for the fleet and for one campaign, and each account's
health at a glance. Counted by ``finish_*.lua`` as outcomes are recorded (``minutes:{hour}``)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query

from scheduler.api.models import ObjectId
from scheduler.api.state import AUTH, ApiState, Stores
from scheduler.console import sent_today
from scheduler.intake.campaigns import CampaignNotFound
from worker.store.stats import outcome_minutes

router = APIRouter(tags=["stats"], dependencies=AUTH)

#: The longest stretch a chart covers (hours).
MAX_HOURS = 72
#: Dead letters looked at for each account's latest errors.
RECENT_DEAD = 300


@router.get("/v1/stats/fleet")
def fleet_stats(state: Stores, hours: Annotated[float, Query(gt=0, le=MAX_HOURS)] = 3) -> dict[str, Any]:
    """Sends, retries and dead jobs per minute over the last ``hours``; dead letters waiting; each
    account's status, today's sends against its cap and its latest errors."""
    now = time.time()
    minutes = outcome_minutes(state.redis, state.ledger.keys, now - hours * 3600, now)
    return {"minutes": minutes, "dead_letters": state.dead_letters.count(), "accounts": _accounts(state, now)}


@router.get("/v1/campaigns/{campaign_id}/timeline")
def campaign_timeline(campaign_id: ObjectId, state: Stores) -> dict[str, Any]:
    """The campaign's sends, retries and dead jobs per minute since it was created (its last
    ``MAX_HOURS`` hours at most), with its audit history beside it in the console."""
    created = state.campaigns.created_at(campaign_id)
    if created is None:
        raise CampaignNotFound(campaign_id)
    now = time.time()
    since = max(created, now - MAX_HOURS * 3600)
    minutes = outcome_minutes(state.redis, state.ledger.keys, since, now, campaign=campaign_id)
    # a finished campaign's chart ends at its last outcome, not at "now"
    while len(minutes) > 1 and not any(minutes[-1][k] for k in ("sent", "retried", "dead")):
        minutes.pop()
    return {"id": campaign_id, "minutes": minutes}


def _accounts(state: ApiState, now: float) -> list[dict[str, Any]]:
    errors: dict[str, list[dict[str, Any]]] = {}
    for letter in state.dead_letters.list(limit=RECENT_DEAD):
        entry = letter.to_dict()
        found = errors.setdefault(entry["account"], [])
        if len(found) < 3:
            found.append({"at": entry["dead_at"], "error_class": entry["error_class"], "error": entry["error"]})
    out = []
    for account in state.accounts.all():
        out.append(
            {
                "id": account.id,
                "vendor": account.spec.vendor,
                "status": account.status,
                "reason": account.status_reason,
                "sent_today": sent_today(state.redis, state.settings.key_prefix, account, now),
                "daily_cap": account.spec.limits.daily_cap,
                "last_errors": errors.get(account.id, []),
            }
        )
    return out
