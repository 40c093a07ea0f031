"""Big campaign submissions within a bounded memory budget.

``POST /v1/campaigns`` bodies (up to 10 MB, 200,000 recipients) are not turned into one Python object
tree: :class:`CampaignBody` reads the top-level fields in one streaming pass (counting recipients without
keeping them) and then yields recipients one by one, each pass a fresh parse of the raw bytes (ijson's C
parser). Memory is the raw body plus one recipient, instead of ~1.3 KB of objects per recipient.

yajl, under ijson's C backend, turns a lone surrogate escape (``"\\ud800"``) into ``?`` silently; a body
holding one is parsed with ijson's pure-Python backend instead, which keeps it, so validation refuses it
naming the field. The regex only picks the parser: a false positive costs time, never correctness.

:class:`UploadSlots` bounds how many campaign submissions one API process works on at once; the next one
gets ``503`` with ``Retry-After`` before its body is read.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import ijson  # type: ignore[import-untyped]
from ijson.backends import python as ijson_python  # type: ignore[import-untyped]
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from worker.errors import MessageError

#: POST paths whose bodies are campaigns (bounded by :class:`UploadSlots`).
CAMPAIGN_PATHS = frozenset({"/v1/campaigns", "/v1/campaigns/upload"})
#: Seconds a client is told to wait when every upload slot is taken.
RETRY_AFTER_S = 5

_LONE_SURROGATE_ESCAPE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<![dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_SCALARS = frozenset({"null", "boolean", "integer", "double", "number", "string"})
_RECIPIENT = "recipients.item"


class BodyNotJson(ValueError):
    """The body is not well-formed JSON (answered 400)."""


def _parser_reason(exc: ijson.JSONError) -> str:
    """The parser's reason only ("parse error: integer overflow"): yajl's message is the repr of bytes that
    goes on, after an escaped newline, to quote the body back."""
    text = str(exc)
    text = text[2:] if text.startswith(("b'", 'b"')) else text
    reason = re.sub(r"[^A-Za-z0-9 :.,_-]", "", text.split("\\n", 1)[0].split("\n", 1)[0])[:80].strip()
    return reason or "parse error"


class CampaignBody:
    """A JSON campaign body read in streaming passes: ``header`` (every top-level field but the
    recipients), ``count`` (recipients), and :meth:`recipients` (one validated recipient at a time)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.backend: Any = ijson_python if _LONE_SURROGATE_ESCAPE.search(raw) else ijson
        self.has_recipients = False
        self.header, self.count = self._read_header()

    def _events(self) -> Iterator[tuple[str, str, Any]]:
        try:
            yield from self.backend.parse(io.BytesIO(self.raw), use_float=True)
        except ijson.JSONError as exc:
            raise BodyNotJson(_parser_reason(exc)) from None

    def _read_header(self) -> tuple[dict[str, Any], int]:
        events = self._events()
        first = next(events, None)
        if first is None:
            raise BodyNotJson("the body is empty")
        if first[1] != "start_map":
            raise MessageError("body: must be a JSON object", field="body")
        header: dict[str, Any] = {}
        count = depth = 0
        key: str | None = None
        builder: Any = None
        for prefix, event, value in events:
            if depth == 0 and event == "end_map":
                break
            if depth == 0 and event == "map_key":
                key, builder = str(value), None if value == "recipients" else ijson.ObjectBuilder()
                self.has_recipients |= value == "recipients"
                continue
            if event in ("start_map", "start_array"):
                depth += 1
            elif event in ("end_map", "end_array"):
                depth -= 1
            if builder is not None:
                builder.event(event, value)
                if depth == 0 and key is not None:
                    header[key] = builder.value
            elif prefix == _RECIPIENT and (event in _SCALARS or event in ("start_map", "start_array")):
                count += 1
            elif prefix == "recipients" and (event in _SCALARS or event == "start_map"):
                raise MessageError("recipients: must be a list of recipients", field="recipients")
        return header, count

    def recipients(self, model: type[BaseModel]) -> Iterator[dict[str, Any]]:
        """Each recipient validated by ``model``, as a dict without unset fields; errors name the index."""
        try:
            items = self.backend.items(io.BytesIO(self.raw), _RECIPIENT, use_float=True)
            for n, item in enumerate(items):
                try:
                    yield model.model_validate(item).model_dump(exclude_none=True)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
                    field = f"recipients[{n}]{path}"
                    raise MessageError(f"{field}: {first['msg']}", field=field) from None
        except ijson.JSONError as exc:
            raise BodyNotJson(_parser_reason(exc)) from None


class UploadSlots:
    """At most ``slots`` campaign submissions in progress per API process; more answer 503 with Retry-After
    before their body is read (big bodies cost memory and CPU; small requests must stay fast). One key holds
    at most all slots but one (when there are two or more): a key sending slow bodies cannot keep every
    other key's campaigns out for the body timeout, over and over."""

    def __init__(self, app: ASGIApp, slots: int) -> None:
        self.app = app
        self.free = slots
        self.share = max(1, slots - 1)
        #: slots held, by key name (the caller AuthFirst identified at the door)
        self.held: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in CAMPAIGN_PATHS:
            await self.app(scope, receive, send)
            return
        caller = scope.get("state", {}).get("caller")
        holder = getattr(caller, "name", "")
        if self.free <= 0 or self.held.get(holder, 0) >= self.share:
            mine = self.free > 0
            message = (
                "this key has as many campaign submissions in progress as one key may; retry later"
                if mine
                else "too many campaign submissions in progress; retry later"
            )
            busy = JSONResponse(
                {"error": {"code": "busy", "message": message, "field": None}},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
            await busy(scope, receive, send)
            return
        self.free -= 1  # one event loop: no lock needed between the check and the take
        self.held[holder] = self.held.get(holder, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.free += 1
            self.held[holder] -= 1
            if not self.held[holder]:
                del self.held[holder]
