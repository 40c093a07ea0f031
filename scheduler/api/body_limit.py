"""Request bodies have a ceiling in size, in time and, for JSON, in shape: a body over one is refused (413
for size, 408 for time, 422 naming the JSON limit) while it streams in, before any parser builds it."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from scheduler.api.errors import error_response
from worker.jsonsafe import JSON_LIMITS, STREAMED_JSON_LIMITS, JsonLimitError, JsonScanner

#: JSON bodies above this are refused with 413 before they are read into memory.
MAX_JSON_BODY = 10 * 1024 * 1024
#: Recipient uploads (CSV/JSONL, multipart) may be larger; they are spooled to disk by the parser.
MAX_UPLOAD_BODY = 200 * 1024 * 1024
#: The routes that take :data:`MAX_UPLOAD_BODY`, by exact path: a suffix test would give any route ending in
#: ``/upload`` (``PUT /v1/accounts/upload`` names an account) the upload limit.
UPLOAD_PATHS = frozenset({"/v1/campaigns/upload"})
#: Bodies parsed in streaming passes (``scheduler/intake/uploads.py``): only their shape needs a bound.
STREAMED_JSON_PATHS = frozenset({"/v1/campaigns"})
#: The only routes whose bodies are not JSON, chosen by the route, never by the client's Content-Type (a
#: client could otherwise label a JSON body a form and skip the scan), each with the content types it takes
#: (415 otherwise). Vendor callbacks take anything: they are stored raw (a 4xx makes the vendor retry for
#: ever), their route bounds the size and scheduler/intake/callbacks.py parses them with worker.jsonsafe.
#: The upload's ``spec`` field is checked where it is read; a CSV import's note may hold any brackets, and a
#: JSONL import is bounded line by line where it is read (``worker.jsonsafe``).
RAW_BODY_ROUTES: tuple[tuple[str, bool, tuple[bytes, ...] | None], ...] = (
    ("/v1/campaigns/upload", False, (b"multipart/form-data",)),
    ("/v1/suppressions/import", False, (b"text/csv", b"text/plain", b"application/x-ndjson")),
    ("/v1/callbacks/", True, None),
)


def raw_body_route(path: str) -> tuple[str, bool, tuple[bytes, ...] | None] | None:
    """The :data:`RAW_BODY_ROUTES` entry for ``path`` (``True``: a prefix), or None: a JSON body."""
    for route in RAW_BODY_ROUTES:
        if path.startswith(route[0]) if route[1] else path == route[0]:
            return route
    return None


#: Set in the request scope once the body went through the scanner (a route parsing JSON itself checks it).
SCANNED = "broadcast.json_scanned"


class BodyLimit:
    """Refuse bodies over the size limit (413, by Content-Length and while streaming) and JSON bodies past
    :mod:`worker.jsonsafe`'s limits (422 naming the limit, counted chunk by chunk), before parsing.

    The whole body must arrive within ``read_timeout_s`` of the app's first read (``BROADCAST_BODY_TIMEOUT_S``;
    408 past it): uvicorn bounds no body read, so a client trickling one byte a second would hold its
    connection and its submission slot for as long as it liked.

    Every request body is scanned as JSON, whatever its Content-Type says (FastAPI parses a body without one
    as JSON), but on the few :data:`RAW_BODY_ROUTES`, which refuse any other content type (415). A request
    with more than one Content-Type header is refused (400): this middleware and Starlette would otherwise
    each believe a different one. A body refused midway is cut: the app is told the client went away and whatever it
    would answer is dropped, so the client gets the refusal as if it came first."""

    def __init__(self, app: ASGIApp, read_timeout_s: float = 60.0) -> None:
        self.app = app
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        types = [value for name, value in scope.get("headers") or [] if name == b"content-type"]
        if len(types) > 1:
            message = "more than one Content-Type header"
            await error_response(400, "ambiguous_content_type", message, "content-type")(scope, receive, send)
            return
        limit = MAX_UPLOAD_BODY if scope["path"] in UPLOAD_PATHS else MAX_JSON_BODY
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _too_large(scope, receive, send, limit)
            return
        scanner = None
        # a raw route's body of another type is refused when the app reads it (so after the role check of a
        # route that reads its body itself): the refusal answers as if it came first
        mistyped: str | None = None
        raw = raw_body_route(scope["path"])
        if raw is None:
            shape = STREAMED_JSON_LIMITS if scope["path"] in STREAMED_JSON_PATHS else JSON_LIMITS
            scanner = JsonScanner(shape, "body")
            scope[SCANNED] = True
        elif raw[2] is not None:
            media = (types[0] if types else b"").split(b";", 1)[0].strip().lower()
            if media not in raw[2]:
                wanted = " or ".join(kind.decode() for kind in raw[2])
                mistyped = f"{scope['path']} takes a {wanted} body, not {media.decode('latin-1') or 'none'}"
        seen = 0
        refused: JsonLimitError | None = None
        over = late = started = complete = wrong = False
        deadline: float | None = None
        loop = asyncio.get_running_loop()

        async def limited() -> AsgiMessage:
            nonlocal seen, over, refused, late, deadline, complete, wrong
            if over or refused or late or wrong:
                return {"type": "http.disconnect"}
            if mistyped is not None:
                wrong = True
                return {"type": "http.disconnect"}
            if complete:  # past the body (a streamed answer waits for a disconnect): no deadline
                return await receive()
            deadline = deadline or loop.time() + self.read_timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                late = True
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                complete = not message.get("more_body", False)
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
            if (over or refused or late or wrong) and not started:
                return  # the refusal below answers instead
            started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not (over or refused or late or wrong) or started:
                raise
        if started:
            return
        if over:
            await _too_large(scope, receive, send, limit)
        elif wrong:
            response = error_response(415, "unsupported_media_type", str(mistyped), "content-type")
            await response(scope, receive, send)
        elif late:
            message = f"request body not received within {self.read_timeout_s:g} s"
            await error_response(408, "body_timeout", message, None)(scope, receive, send)
        elif refused is not None:
            response = error_response(422, "json_limit", str(refused), refused.field)
            await response(scope, receive, send)


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = error_response(413, "body_too_large", f"request body over {limit} bytes", None)
    await response(scope, receive, send)
