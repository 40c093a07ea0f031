"""Records every state-changing call in the audit trail, after it is answered (so with its status).

A pure ASGI middleware: it sees the route the router matched (``scope["route"]``), the caller
``authorize`` left on the request state, and the response status. The target is the route's path
parameter (``campaign:42``) or, for a create, the id the answer names. Calls refused before a caller
is known (401) and rate-limited calls (429) are not recorded: nobody to name, and a flood stays out.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.api.roles import Rule, rule_for
from scheduler.api.state import AUDIT_VARIANT, DOOR_RULE, ApiState

log = logging.getLogger("broadcast.api")

#: A create's answer is read for its id only up to this size.
ANSWER_PEEK = 64 * 1024


class AuditTrail:
    """Wraps the app: one audit entry per answered state-changing request with a known caller."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        seen: dict[str, Any] = {"status": 500, "body": b""}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body" and len(seen["body"]) < ANSWER_PEEK:
                seen["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            await run_in_threadpool(_record, scope, seen["status"], seen["body"])


def _record(scope: Scope, status: int, body: bytes) -> None:
    caller = scope.get("state", {}).get("caller")
    route = scope.get("route")
    door: tuple[Rule, dict[str, str]] | None = scope.get(DOOR_RULE)  # refused at the door (RoleFirst)
    if caller is None or status == 429:
        return
    if route is not None:
        rule, params = rule_for(scope["method"], getattr(route, "path", "")), scope.get("path_params") or {}
    elif door is not None:
        rule, params = door
    else:
        return
    if not rule.action:
        return
    variant = scope.get("state", {}).get(AUDIT_VARIANT)
    action = f"{rule.action}_{variant}" if variant else rule.action
    state: ApiState = scope["app"].state.api
    try:
        state.audit.record(
            key=caller.name,
            role=caller.role.value,
            action=action,
            target=_target(rule.action, params, body),
            status=status,
        )
    except Exception:  # the answer is already sent: a lost entry is logged, never a second failure
        log.exception("audit entry not recorded", extra={"action": rule.action})


def _target(action: str, params: dict[str, Any], body: bytes) -> str:
    """``campaign:42``: the kind (the action's noun) and the path's id, or the created object's id."""
    kind = action.split(".", 1)[0]
    if params:
        return f"{kind}:{'/'.join(str(v) for v in params.values())}"
    try:
        answer = json.loads(body) if body else {}
    except ValueError:
        answer = {}
    if isinstance(answer, dict) and isinstance(answer.get("to"), str):  # a suppression: account (or *) and to
        account = answer.get("account")
        return f"{kind}:{account if isinstance(account, str) else '*'}/{answer['to']}"
    found = answer.get("id") or answer.get("name") if isinstance(answer, dict) else None
    return f"{kind}:{found}" if isinstance(found, str | int) and found != "" else kind
