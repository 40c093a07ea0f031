"""Untrusted JSON is bounded before any parser builds it: nesting depth, breadth and total values.

A 10 MB body limit does not bound the *shape* of a JSON document. ``[[[[…]]]]`` 200,000 levels deep is
400 KB, yet a streaming parser's memory grew with the square of the depth (ijson's prefixes: 23 GB, the
API process killed) and a recursive one runs out of stack. So every JSON that comes in from outside is
scanned first by :class:`JsonScanner`, chunk by chunk as it arrives, and refused (a :class:`JsonLimitError`,
answered ``422`` naming the limit) the moment it goes past one of :class:`JsonLimits`:

- ``depth``: containers open at once (``{"a": [{}]}`` is 3);
- ``keys`` / ``items``: members of one object / elements of one array;
- ``values``: tokens in the whole document (strings, containers, members after a comma).

The scan keeps a few integers per open container (at most ``depth`` of them) and the chunk at hand, so its
memory is flat whatever the input. It only counts, never judges: malformed JSON passes to the parser,
which answers 400 as before.

**Where it is used** (use it for every new way JSON comes in, e.g. a vendor callback or an audience
endpoint): the API checks every request body that is not a form (``scheduler/api/body_limit.py``,
``BodyLimit``), so any route under ``create_app`` is covered without doing anything; a JSON value that
arrives some other way (a multipart form field, a JSONL line, a vendor's answer) goes through
:func:`loads` or :func:`check` with the limits that fit it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from worker.errors import MessageError


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """How big a JSON document may be in shape (sizes in bytes are bounded where the bytes are read)."""

    depth: int = 32
    keys: int = 10_000
    items: int = 200_000
    values: int = 1_000_000


#: Every JSON body parsed whole into Python objects: a few hundred MB at most even at the 10 MB body limit.
JSON_LIMITS = JsonLimits()
#: A campaign body, parsed in streaming passes (one recipient in memory at a time): 200,000 recipients
#: with their variables fit; only its shape needs a bound.
STREAMED_JSON_LIMITS = replace(JSON_LIMITS, values=5_000_000)
#: One small JSON value inside something else: a JSONL line (one recipient), a form field, a vendor answer.
SMALL_JSON_LIMITS = JsonLimits(depth=32, keys=1_000, items=10_000, values=100_000)


class JsonLimitError(MessageError):
    """The JSON goes past one of its :class:`JsonLimits`; the message names the limit."""


#: A complete string (escapes included), removed before counting: brackets and commas inside do not count.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
#: The rest of a string that began in an earlier chunk, up to and including its closing quote.
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STRUCTURE = b"[]{},"
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in _STRUCTURE)
_OPEN_OBJECT, _OPEN_ARRAY, _CLOSE_OBJECT, _CLOSE_ARRAY, _COMMA = b"{[}],"


class JsonScanner:
    """Counts a JSON document's shape as its bytes arrive (:meth:`feed`), raising :class:`JsonLimitError`
    as soon as a limit is passed. ``field`` names the document in the error (``body``, ``recipients[3]``)."""

    def __init__(self, limits: JsonLimits = JSON_LIMITS, field: str = "body") -> None:
        self.limits = limits
        self.field = field
        self.values = 0
        #: per open container: True for an object, and its commas so far
        self._objects: list[bool] = []
        self._commas: list[int] = []
        self._in_string = False
        self._escaped = False  # the chunk ended inside a string right after a backslash

    def feed(self, chunk: bytes) -> None:
        """Count one more piece of the document (pieces may split strings and escapes anywhere)."""
        if not chunk:
            return
        start = 0
        if self._in_string:
            start = 1 if self._escaped else 0
            self._escaped = False
            end = _STRING_REST.match(chunk, start)
            if end is None:
                self._escaped = _ends_in_escape(chunk[start:])
                return
            start = end.end()
            self._in_string = False
        rest, strings = _STRING.subn(b"", chunk[start:] if start else chunk)
        self._count(strings)
        quote = rest.find(b'"')
        if quote >= 0:  # a string starts here and goes on in the next chunk
            self._count(1)
            self._in_string = True
            self._escaped = _ends_in_escape(rest[quote + 1 :])
            rest = rest[:quote]
        self._walk(rest.translate(None, _NOT_STRUCTURE))

    def _walk(self, structure: bytes) -> None:
        limits, objects, commas = self.limits, self._objects, self._commas
        for byte in structure:
            if byte == _COMMA:
                if commas:
                    commas[-1] += 1
                    if commas[-1] >= (limits.keys if objects[-1] else limits.items):
                        self._breadth_error()
                self._count(1)
            elif byte in (_OPEN_OBJECT, _OPEN_ARRAY):
                objects.append(byte == _OPEN_OBJECT)
                commas.append(0)
                if len(objects) > limits.depth:
                    self._fail(f"nesting is limited to {limits.depth} levels")
                self._count(1)
            elif objects:  # a closing bracket; unbalanced ones are the parser's to refuse
                objects.pop()
                commas.pop()

    def _count(self, n: int) -> None:
        self.values += n
        if self.values > self.limits.values:
            self._fail(f"a document is limited to {self.limits.values} values")

    def _breadth_error(self) -> NoReturn:
        if self._objects[-1]:
            self._fail(f"objects are limited to {self.limits.keys} members")
        self._fail(f"arrays are limited to {self.limits.items} elements")

    def _fail(self, what: str) -> NoReturn:
        raise JsonLimitError(f"{self.field}: JSON {what}", field=self.field)


def _ends_in_escape(inside: bytes) -> bool:
    """Whether string content ends with an unpaired backslash (the next byte is escaped)."""
    run = len(inside) - len(inside.rstrip(b"\\"))
    return run % 2 == 1


def check(raw: bytes | str, limits: JsonLimits = JSON_LIMITS, field: str = "body") -> None:
    """Raise :class:`JsonLimitError` when ``raw`` is past ``limits``; say nothing about its syntax."""
    JsonScanner(limits, field).feed(raw.encode() if isinstance(raw, str) else raw)


def loads(raw: bytes | str, limits: JsonLimits = SMALL_JSON_LIMITS, field: str = "body") -> Any:
    """``json.loads`` of untrusted input, after :func:`check`. Raises ``ValueError`` when not JSON."""
    check(raw, limits, field)
    return json.loads(raw)
