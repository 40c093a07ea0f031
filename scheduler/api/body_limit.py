"""Request bodies have a ceiling: a body over it is refused (413) before it is read into memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from scheduler.api.errors import error_response

#: JSON bodies above this are refused with 413 before they are read into memory.
MAX_JSON_BODY = 10 * 1024 * 1024
#: Recipient uploads (CSV/JSONL, multipart) may be larger; they are spooled to disk by the parser.
MAX_UPLOAD_BODY = 200 * 1024 * 1024


class BodyLimit:
    """Refuse bodies over the limit (413) by Content-Length and while streaming (chunked), before parsing.

    A streamed body that crosses the limit is cut: the app is told the client went away and whatever it
    would answer is dropped, so the client gets the same 413 as for an announced length."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = MAX_UPLOAD_BODY if scope["path"].endswith("/upload") else MAX_JSON_BODY
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _too_large(scope, receive, send, limit)
            return
        seen = 0
        over = started = False

        async def limited() -> AsgiMessage:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: AsgiMessage) -> None:
            nonlocal started
            if over and not started:
                return  # the 413 below answers instead
            started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await _too_large(scope, receive, send, limit)


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = error_response(413, "body_too_large", f"request body over {limit} bytes", None)
    await response(scope, receive, send)
