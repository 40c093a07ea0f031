"""``POST /v1/callbacks/{account}?key=…``: where the vendors post replies, contact changes and offline notices.

No bearer token (vendors cannot add headers): the account's callback key in the URL is the credential,
compared in constant time with its stored digest. A wrong or missing key answers 404 and stores nothing.
Anything else answers 200 at once (vendors give up after about 3 s; processing happens in the dispatcher's
process, :mod:`scheduler.intake.callbacks`, so a malformed body is never a 5xx here), except:

- a body over :data:`~scheduler.intake.callbacks.MAX_CALLBACK_BODY` (64 KiB): 200 but not stored, counted
  ``oversize`` — nothing we act on is that large, and a 4xx would only make the vendor send it again;
- an inbox already holding its bound (``INBOX_MAXLEN`` entries or ``INBOX_BYTES``; the dispatcher is not
  taking them): 503 with Retry-After, so the vendor retries later rather than a delivery being dropped.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from scheduler.api.errors import error_response
from scheduler.api.state import Stores
from scheduler.intake.callbacks import INBOX_RETRY_S, MAX_CALLBACK_BODY, CallbackInbox

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
        return _oversize(inbox)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_CALLBACK_BODY:
            return _oversize(inbox)
    if not inbox.verify(account, key):  # the key was rotated while the body arrived: as an unknown key
        return error_response(404, *_NOT_FOUND, None)
    if inbox.full():
        message = "the callback inbox is full (its processing is behind); retry later"
        return error_response(503, "inbox_full", message, None, headers={"Retry-After": str(INBOX_RETRY_S)})
    inbox.store(account, bytes(body))
    return JSONResponse({"ok": True})


def _oversize(inbox: CallbackInbox) -> JSONResponse:
    """Taken (200, so the vendor does not send it again) but not stored: counted ``oversize``."""
    inbox.redis.hincrby(inbox.keys.stat("callbacks"), "oversize", 1)
    return JSONResponse({"ok": True, "stored": False})
