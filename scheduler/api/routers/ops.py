"""``/healthz`` for load balancers, without a token; ``/metrics`` for Prometheus, with the API token unless
``BROADCAST_METRICS_PUBLIC=true`` (it lists account ids and their volumes)."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from scheduler.api.errors import ApiError
from scheduler.api.state import Stores, check_rate, identify

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz(state: Stores) -> dict[str, Any]:
    """Liveness and Redis reachability (no auth)."""
    try:
        state.redis.ping()
    except redis.RedisError as exc:
        raise ApiError(503, "store_unavailable", "Redis unreachable", None) from exc
    return {"ok": True}


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, state: Stores) -> Response:
    """Prometheus metrics (any valid key, of any role, unless ``BROADCAST_METRICS_PUBLIC=true``)."""
    from scheduler.api.metrics import render

    if not state.settings.metrics_public:
        # 401 without a key (it lists account ids and their volumes); a key's rate holds here too
        check_rate(identify(request, state), state.settings)

    body, content_type = render(state.redis, state.settings)
    return Response(body, media_type=content_type)
