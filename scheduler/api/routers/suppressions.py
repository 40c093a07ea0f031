"""``/v1/suppressions``: recipients an account (or every account, ``*``) never messages (issue 19).

Checked at the moment of sending (begin.lua), so an entry added now stops the deliveries still queued; a
suppressed delivery ends ``skipped`` / ``suppressed`` and costs no vendor call. CSV import and export use
the columns ``account,to,reason,at,by,note`` (``account`` empty or ``*``: every account), so an export read
back by an import keeps each entry as it was: its ``at`` and ``by`` too (the audit trail names the key that
imported it). Cells a spreadsheet would run are written with a leading ``'`` (:func:`~scheduler.api.exports.escaped`)
and read back without it (:func:`~scheduler.api.exports.restored`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from scheduler.api.errors import ApiError
from scheduler.api.exports import escaped, restored
from scheduler.api.state import AUTH, ApiState, Stores, audit_variant, read_body
from scheduler.intake.producer import RECIPIENT
from worker import jsonsafe
from worker.jsonsafe import JsonLimitError
from worker.messages import unsendable
from worker.store.accounts import ACCOUNT_ID_PATTERN
from worker.store.operators import NAME_PATTERN
from worker.store.suppressions import ALL_ACCOUNTS, REASONS, Row, Suppression, Suppressions

router = APIRouter(tags=["suppressions"], dependencies=AUTH)

Reason = Literal["opted_out", "not_friend", "contact_removed", "manual"]
#: The CSV columns, in order (import needs ``to``; the others are optional).
COLUMNS = ("account", "to", "reason", "at", "by", "note")
#: Rows one import may carry; more is refused (422) before anything is stored.
MAX_IMPORT_ROWS = 200_000
MAX_NOTE = 500
#: The JSONL media type (``format=jsonl`` exports, imports); anything else is read as CSV.
JSONL = "application/x-ndjson"
BODY_TYPES = ("text/csv", JSONL)
#: An imported ``at`` may be this far ahead of this machine's clock (another machine's export), no further.
AT_AHEAD_S = 300
Scope = Annotated[str, Query(pattern=rf"^(\*|{ACCOUNT_ID_PATTERN[1:-1]})$", description="an account id, or *")]


class SuppressionIn(BaseModel):
    """``POST /v1/suppressions``: ``account`` null suppresses the recipient for every account."""

    model_config = ConfigDict(extra="forbid")
    account: str | None = Field(default=None, max_length=64)
    to: str = Field(min_length=1, max_length=128)
    reason: Reason = "manual"
    note: str = Field(default="", max_length=MAX_NOTE)


def _store(state: ApiState) -> Suppressions:
    return Suppressions(state.redis, state.settings.key_prefix)


def _check_scope(state: ApiState, account: str | None, field: str) -> str | None:
    """None or ``*``: every account; else an account that exists (422 naming ``field`` otherwise)."""
    if account in (None, "", ALL_ACCOUNTS):
        return None
    if state.accounts.get(str(account)) is None:
        raise ApiError(422, "invalid", f"{field}: no account {account!r} is configured", field)
    return str(account)


def _by(request: Request) -> str:
    """Who adds an entry: the calling key's name (``api`` when there is none, as in tests without keys)."""
    return getattr(getattr(request.state, "caller", None), "name", "") or "api"


def _check_to(to: str, field: str) -> str:
    if not RECIPIENT.fullmatch(to):
        raise ApiError(422, "invalid", f"{field}: not a WeChat id (wxid, …@chatroom)", field)
    return to


@router.post("/v1/suppressions", status_code=201)
def add_suppression(body: SuppressionIn, request: Request, state: Stores) -> dict[str, Any]:
    """Suppress a recipient for one account or all (``by``: the calling key's name). Adding it again
    replaces the entry."""
    account = _check_scope(state, body.account, "account")
    to = _check_to(body.to, "to")
    if unsendable(body.note):
        raise ApiError(422, "invalid", "note: contains characters that cannot be stored", "note")
    store = _store(state)
    store.add(account, to, body.reason, by=_by(request), note=body.note)
    entry = store.get(account, to)
    assert entry is not None
    return entry.public()


@router.get("/v1/suppressions")
def list_suppressions(
    state: Stores,
    account: Scope | None = None,
    reason: Annotated[Reason | None, Query()] = None,
    cursor: Annotated[str, Query(max_length=200)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """A page of entries (``account``: one account's, or ``*`` for the all-accounts list) and the cursor of
    the next page (null at the end)."""
    entries, next_cursor = _store(state).page(account=account, reason=reason, cursor=cursor, limit=limit)
    return {"suppressions": [e.public() for e in entries], "next_cursor": next_cursor or None}


@router.delete("/v1/suppressions/{account}/{to}", status_code=204)
def remove_suppression(account: str, to: str, state: Stores) -> Response:
    """Lift a suppression (``account`` ``*``: the all-accounts entry). 404 when there is none."""
    if not _store(state).remove(None if account == ALL_ACCOUNTS else account, to):
        raise ApiError(404, "not_found", f"{to!r} is not suppressed for {account!r}", "to")
    return Response(status_code=204)


@router.post(
    "/v1/suppressions/import",
    openapi_extra={
        "requestBody": {"required": True, "content": {t: {"schema": {"type": "string"}} for t in BODY_TYPES}}
    },
)
async def import_suppressions(
    request: Request,
    state: Stores,
    account: Scope | None = None,
    reason: Annotated[Reason, Query()] = "manual",
) -> dict[str, Any]:
    """CSV body with a header naming ``to`` (and optionally ``account``, ``reason``, ``at``, ``by``, ``note``,
    as an export writes them), or JSONL (``application/x-ndjson``: one such object a line, as
    ``format=jsonl`` exports): every row is checked first (422 with its line), then all are stored;
    ``account``/``reason`` fill empty cells, an empty ``at`` is now, an empty ``by`` the calling key."""
    text = (await read_body(request, state)).decode("utf-8-sig", "replace")
    known = {a.id for a in state.accounts.all()}
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == JSONL:
        default_scope = _check_scope(state, account, "account")
        rows = _rows(_jsonl(text), default_scope, reason, known)
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))  # a quoted cell may hold a line break
        try:  # a malformed CSV (a stray NUL, …) is the caller's error: 422 with its line, never a 500
            if not reader.fieldnames or "to" not in [f.strip() for f in reader.fieldnames]:
                raise ApiError(422, "invalid", "csv: the header must name a 'to' column", "to")
            default_scope = _check_scope(state, account, "account")
            cells = (
                (line, {(k or "").strip(): restored((v or "").strip()) for k, v in raw.items() if isinstance(v, str)})
                for line, raw in enumerate(reader, start=2)
            )
            rows = _rows(cells, default_scope, reason, known)
        except csv.Error as exc:
            raise ApiError(422, "invalid", f"csv: line {reader.line_num}: {exc}", "to") from None
    importer = _by(request)
    if any(row.by not in (None, importer) for row in rows):
        # entries that name another author (an export read back: ``callback``, another key) stand out in the
        # audit trail, whose entry names the key that imported them
        audit_variant(request, "attributed")
    stored, kept = _store(state).add_many(rows, by=importer)
    # an entry a callback or a vendor's refusal wrote is kept, not rewritten (worker/store/suppressions.py)
    return {"imported": stored, "kept": kept}


def _jsonl(text: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, fields as text) of each JSONL line: an object of the export's fields, bounded in shape before it
    is parsed (``worker.jsonsafe``); ``account`` null is every account (as exported), a missing one the
    query's; another field that is null is empty; ``at`` may be a number. Lines end at LF only (a note may hold
    U+2028, which JSON writes as is)."""
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            item = jsonsafe.loads(raw, jsonsafe.SMALL_JSON_LIMITS, f"line {line}")
        except JsonLimitError:
            raise
        except ValueError:
            item = None
        if not isinstance(item, dict):
            raise ApiError(422, "invalid", f"line {line}: not a JSON object", "to")
        fields: dict[str, str] = {}
        for name in COLUMNS:
            value = item.get(name)
            if name == "account" and name in item and value is None:
                value = ALL_ACCOUNTS
            if name == "at" and isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)  # read as a number by _at, which refuses what is no time
            if value is not None and not isinstance(value, str):
                raise ApiError(422, "invalid", f"line {line}: {name}: must be text", name)
            fields[name] = (value or "").strip() if name != "note" else value or ""  # a note exactly as written
        yield line, fields


def _rows(
    cells: Iterable[tuple[int, dict[str, str]]], default_scope: str | None, reason: str, known: set[str]
) -> list[Row]:
    """Every row checked (422 naming its line), before anything is stored."""
    rows: list[Row] = []
    latest = time.time() + AT_AHEAD_S
    for line, row in cells:
        if len(rows) >= MAX_IMPORT_ROWS:
            raise ApiError(422, "invalid", f"csv: more than {MAX_IMPORT_ROWS} rows", "to")
        to = row.get("to", "")
        if not to:
            continue
        _check_to(to, f"line {line}: to")
        scope = row.get("account") or default_scope
        if scope in (ALL_ACCOUNTS, ""):
            scope = None
        if scope is not None and scope not in known:
            raise ApiError(422, "invalid", f"line {line}: account: no account {scope!r} is configured", "account")
        why = row.get("reason") or reason
        if why not in REASONS:
            raise ApiError(422, "invalid", f"line {line}: reason: one of {', '.join(REASONS)}", "reason")
        note = row.get("note", "")[:MAX_NOTE]
        if unsendable(note):
            raise ApiError(422, "invalid", f"line {line}: note: contains characters that cannot be stored", "note")
        rows.append(Row(scope, to, why, note, _at(row.get("at", ""), line, latest), _by_cell(row.get("by", ""), line)))
    return rows


def _at(cell: str, line: int, latest: float) -> float | None:
    """An exported ``at`` (epoch seconds), None when empty; a time that is no time, or one ahead of now, is
    refused (an entry dated in the future would read as newer than anything an operator did since)."""
    if not cell:
        return None
    try:
        at = float(cell)
    except ValueError:
        at = math.nan
    if not (math.isfinite(at) and 0 <= at <= latest):  # 0: an entry that never said when
        message = f"line {line}: at: seconds since 1970 (as an export writes them), not after now"
        raise ApiError(422, "invalid", message, "at")
    return at


def _by_cell(cell: str, line: int) -> str | None:
    """An exported ``by`` (a key's name, ``callback``, ``vendor``, ``bootstrap``), None when empty."""
    if not cell:
        return None
    if not NAME_PATTERN.fullmatch(cell):
        raise ApiError(422, "invalid", f"line {line}: by: a key name (letters, digits, _ . @ -)", "by")
    return cell


@router.get(
    "/v1/suppressions/export",
    response_model=None,
    responses={
        200: {"content": {t: {"schema": {"type": "string"}} for t in BODY_TYPES}, "description": "the CSV or JSONL"}
    },
)
def export_suppressions(
    state: Stores,
    account: Scope | None = None,
    reason: Annotated[Reason | None, Query()] = None,
    format: Annotated[Literal["csv", "jsonl"], Query()] = "csv",
) -> StreamingResponse:
    """Every entry as CSV (``account,to,reason,at,by,note``; ``*`` for the all-accounts list) or JSONL (one
    entry a line, exact: ``account`` null for the all-accounts list); either imports back as it was."""
    entries = _store(state).all(account=account, reason=reason)
    if format == "jsonl":
        return StreamingResponse(
            _lines(entries),
            media_type=JSONL,
            headers={"Content-Disposition": 'attachment; filename="suppressions.jsonl"'},
        )
    return StreamingResponse(
        _csv(entries),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'},
    )


def _lines(entries: Iterator[Suppression]) -> Iterator[str]:
    chunk: list[str] = []
    for entry in entries:
        line = json.dumps(entry.public(), ensure_ascii=False)
        # U+2028/2029 escaped: a reader that splits lines on them (Python's splitlines, old JavaScript) reads one
        chunk.append(line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n")
        if len(chunk) == 500:
            yield "".join(chunk)
            chunk = []
    yield "".join(chunk)


def _csv(entries: Iterator[Suppression]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for n, entry in enumerate(entries, start=1):
        writer.writerow([escaped(entry.account or ALL_ACCOUNTS), escaped(entry.to), entry.reason,
                         f"{entry.at:.3f}", escaped(entry.by), escaped(entry.note)])  # fmt: skip
        if n % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
