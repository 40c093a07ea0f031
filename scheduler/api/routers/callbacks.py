"""``POST /v1/callbacks/{account}?key=…``: where the vendors post replies, contact changes and offline notices.

No bearer token (vendors cannot add headers): the account's callback key in the URL is the credential,
compared in constant time with its stored digest. A wrong or missing key answers 404 and stores nothing; a
body over :data:`~scheduler.intake.callbacks.MAX_CALLBACK_BODY` answers 413; anything else is stored as
received and answered 200 at once (vendors give up after about 3 s) — processing happens in the
dispatcher's process (:mod:`scheduler.intake.callbacks`), so a malformed body is never a 5xx here.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from scheduler.api.errors import error_response
from scheduler.api.state import Stores
from scheduler.intake.callbacks import MAX_CALLBACK_BODY, CallbackInbox

router = APIRouter(tags=["callbacks"])

_NOT_FOUND = ("not_found", "no such callback address")


@router.post("/v1/callbacks/{account}", include_in_schema=True)
async def receive_callback(account: str, request: Request, state: Stores, key: str = "") -> JSONResponse:
    """Store one vendor callback for the account (200), after checking its key (404 otherwise)."""
    inbox = CallbackInbox(state.redis, state.settings.key_prefix)
    if len(account) > 64 or len(key) > 200 or not inbox.verify(account, key):
        return error_response(404, *_NOT_FOUND, None)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_CALLBACK_BODY:
        return error_response(413, "body_too_large", f"callback body over {MAX_CALLBACK_BODY} bytes", None)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_CALLBACK_BODY:
            return error_response(413, "body_too_large", f"callback body over {MAX_CALLBACK_BODY} bytes", None)
    inbox.store(account, bytes(body))
    return JSONResponse({"ok": True})
