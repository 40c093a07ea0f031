"""``/healthz`` and ``/metrics``: for load balancers and Prometheus, without a token."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from scheduler.api.errors import ApiError
from scheduler.api.state import Stores

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
def metrics(state: Stores) -> Response:
    """Prometheus metrics."""
    from scheduler.api.metrics import render

    body, content_type = render(state.redis, state.settings)
    return Response(body, media_type=content_type)
