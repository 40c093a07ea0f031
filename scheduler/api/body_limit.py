"""Request bodies have a ceiling in size and, for JSON, in shape: a body over either is refused (413 for
size, 422 naming the JSON limit) while it streams in, before any parser builds it."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from scheduler.api.errors import error_response
from worker.jsonsafe import JSON_LIMITS, STREAMED_JSON_LIMITS, JsonLimitError, JsonScanner

#: JSON bodies above this are refused with 413 before they are read into memory.
MAX_JSON_BODY = 10 * 1024 * 1024
#: Recipient uploads (CSV/JSONL, multipart) may be larger; they are spooled to disk by the parser.
MAX_UPLOAD_BODY = 200 * 1024 * 1024
#: Bodies parsed in streaming passes (``scheduler/intake/uploads.py``): only their shape needs a bound.
STREAMED_JSON_PATHS = frozenset({"/v1/campaigns"})
#: Bodies that are not JSON (forms carry their JSON fields, checked where they are read).
_FORMS = (b"multipart/", b"application/x-www-form-urlencoded")


class BodyLimit:
    """Refuse bodies over the size limit (413, by Content-Length and while streaming) and JSON bodies past
    :mod:`worker.jsonsafe`'s limits (422 naming the limit, counted chunk by chunk), before parsing.

    Every request body but a form is scanned as JSON, whatever its Content-Type says (FastAPI parses a body
    without one as JSON). A body refused midway is cut: the app is told the client went away and whatever it
    would answer is dropped, so the client gets the refusal as if it came first."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        limit = MAX_UPLOAD_BODY if scope["path"].endswith("/upload") else MAX_JSON_BODY
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _too_large(scope, receive, send, limit)
            return
        scanner = None
        if not headers.get(b"content-type", b"").lower().startswith(_FORMS):
            shape = STREAMED_JSON_LIMITS if scope["path"] in STREAMED_JSON_PATHS else JSON_LIMITS
            scanner = JsonScanner(shape, "body")
        seen = 0
        refused: JsonLimitError | None = None
        over = started = False

        async def limited() -> AsgiMessage:
            nonlocal seen, over, refused
            if over or refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > limit:
                    over = True
                    return {"type": "http.disconnect"}
                if scanner is not None:
                    try:
                        scanner.feed(chunk)
                    except JsonLimitError as exc:
                        refused = exc
                        return {"type": "http.disconnect"}
            return message

        async def guarded(message: AsgiMessage) -> None:
            nonlocal started
            if (over or refused) and not started:
                return  # the refusal below answers instead
            started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not (over or refused) or started:
                raise
        if started:
            return
        if over:
            await _too_large(scope, receive, send, limit)
        elif refused is not None:
            response = error_response(422, "json_limit", str(refused), refused.field)
            await response(scope, receive, send)


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = error_response(413, "body_too_large", f"request body over {limit} bytes", None)
    await response(scope, receive, send)
