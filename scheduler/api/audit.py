"""Records every state-changing call in the audit trail, after it is answered (so with its status).

A pure ASGI middleware: it sees the route the router matched (``scope["route"]``), the caller
``authorize`` left on the request state, and the response status. The target is the route's path
parameter (``campaign:42``) or, for a create, the id the answer names. Calls refused before a caller
is known (401) and rate-limited calls (429) are not recorded: nobody to name, and a flood stays out.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.api.roles import Rule, rule_for
from scheduler.api.state import AUDIT_TARGETS, AUDIT_VARIANT, DOOR_RULE, ApiState

log = logging.getLogger("broadcast.api")

#: A create's answer is read for its id only up to this size.
ANSWER_PEEK = 64 * 1024
#: A target's part (a path parameter, a created id) is kept up to this many characters: the path is the
#: caller's, refused or not, and the trail must not become a way to fill Redis.
TARGET_PART_MAX = 128


class AuditTrail:
    """Wraps the app: one audit entry per answered state-changing request with a known caller."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        seen: dict[str, Any] = {"status": 500, "body": b"", "replayed": False}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                # an idempotent replay answered what an earlier create made: recorded as such, not as a create
                seen["replayed"] = (b"idempotent-replayed", b"true") in message.get("headers", [])
            elif message["type"] == "http.response.body" and len(seen["body"]) < ANSWER_PEEK:
                seen["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            await run_in_threadpool(_record, scope, seen["status"], seen["body"], seen["replayed"])


def _record(scope: Scope, status: int, body: bytes, replayed: bool = False) -> None:
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
    request_state = scope.get("state", {})
    variant = request_state.get(AUDIT_VARIANT)
    action = f"{rule.action}_{variant}" if variant else rule.action
    if replayed:
        action += "_replayed"
    state: ApiState = scope["app"].state.api
    targets = request_state.get(AUDIT_TARGETS) or [_target(rule.action, params, body)]
    try:
        record = state.audit.record_refusal if 400 <= status < 500 else state.audit.record_each
        record(key=caller.name, role=caller.role.value, action=action, targets=targets, status=status)
    except Exception:  # the answer is already sent: a lost entry is logged, never a second failure
        log.exception("audit entry not recorded", extra={"action": rule.action})


def _shown(value: object) -> str:
    """A caller-chosen part of a target as it may be stored and printed: at most :data:`TARGET_PART_MAX`
    characters, a control, format or bidi character written as its escape (no fake second line in
    ``broadcast audit``, no text reversed by U+202E)."""
    text = str(value)
    cut = len(text) - TARGET_PART_MAX
    text = "".join(f"\\u{ord(c):04x}" if unicodedata.category(c)[0] == "C" else c for c in text[:TARGET_PART_MAX])
    return f"{text}…(+{cut} chars)" if cut > 0 else text


def _target(action: str, params: dict[str, Any], body: bytes) -> str:
    """``campaign:42``: the kind (the action's noun) and the path's id, or the created object's id."""
    kind = action.split(".", 1)[0]
    if params:
        return f"{kind}:{'/'.join(_shown(v) for v in params.values())}"
    try:
        answer = json.loads(body) if body else {}
    except ValueError:
        answer = {}
    if isinstance(answer, dict) and isinstance(answer.get("to"), str):  # a suppression: account (or *) and to
        account = answer.get("account")
        return f"{kind}:{_shown(account) if isinstance(account, str) else '*'}/{_shown(answer['to'])}"
    found = answer.get("id") or answer.get("name") if isinstance(answer, dict) else None
    return f"{kind}:{_shown(found)}" if isinstance(found, str | int) and found != "" else kind
