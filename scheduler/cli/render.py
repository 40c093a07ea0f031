"""What every ``broadcast`` noun prints: tables that keep ids whole, key/value grids, JSON, times, errors.

One stdout console and one stderr console for the whole CLI, so every command measures and wraps alike.

Everything shown that is not ours (campaign names, account reasons, vendor texts, variables, ids) goes
through :func:`untrusted` (or :func:`visible` where plain text is printed): rich never parses it as markup
(``[/oops]`` crashed, ``[link=…]`` made a hyperlink), and characters that reorder or hide text are shown
escaped (``invoice\\u202Egnp.exe`` cannot pose as ``invoiceexe.png``). The tables, grids and lines below do
it for every cell and value, so a command only has to use them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import unicodedata
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

#: Width of output that is not a terminal (``make dev > file``, a pipe), unless ``COLUMNS`` says otherwise:
#: rich would otherwise assume 80 columns and fold tables, ids and all, onto several lines.
NOT_A_TERMINAL_WIDTH = 200


def _wide(output: Console) -> Console:
    """``output`` at :data:`NOT_A_TERMINAL_WIDTH` when it is not a terminal and ``COLUMNS`` is not set."""
    if not output.is_terminal and not os.environ.get("COLUMNS"):
        output.width = NOT_A_TERMINAL_WIDTH
    return output


console = _wide(Console())
err = _wide(Console(stderr=True))
T = TypeVar("T")


#: Invisible characters by Unicode category: controls (but tab and line feed), format characters (bidi
#: embeddings, overrides and isolates, zero-width characters, the BOM, tag characters), private use,
#: unassigned, surrogates, line and paragraph separators. Shown as ``\uXXXX`` (a UTF-16 pair past U+FFFF, so
#: JSON output stays exact) instead; the console's ``visible`` does the same.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cn", "Cs", "Zl", "Zp"})
#: Letters and marks that show nothing although their category is not one of those: the combining grapheme
#: joiner, the Hangul fillers, Mongolian and other variation selectors.
_BLANKS = re.compile("[\u034f\u115f\u1160\u3164\uffa0\u180b-\u180f\ufe00-\ufe0f\U000e0100-\U000e01ef]")


def _hidden(char: str) -> bool:
    return char not in "\t\n" and (unicodedata.category(char) in _HIDDEN_CATEGORIES or bool(_BLANKS.match(char)))


def _escape(char: str) -> str:
    units = char.encode("utf-16-be", "surrogatepass")
    return "".join(f"\\u{int.from_bytes(units[i : i + 2]):04X}" for i in range(0, len(units), 2))


def visible(value: Any) -> str:
    """``value`` as text with every hidden or reordering character shown escaped (``\\u202E``)."""
    text = str(value)
    if text.isprintable() and not _BLANKS.search(text):  # the usual case: nothing to look at twice
        return text
    return "".join(_escape(char) if _hidden(char) else char for char in text)


def untrusted(value: Any) -> Text:
    """Text that is not ours, for a rich table, grid or line: never markup, hidden characters escaped."""
    return Text(visible(value))


def markup_safe(value: Any) -> str:
    """Text that is not ours inside a string rich reads as markup (a progress bar's description)."""
    return escape(visible(value))


def plain_help_types() -> None:
    """Typer 0.29's rich help tags every parameter with its Python type, flags too (``--wait <bool>``), which
    reads as if the flag took a value. On/off flags show nothing; parameters that take a value show what it
    is the way Click always did (``TEXT``, ``INTEGER``, ``FILE``; ``TEXT…`` when repeatable)."""
    from typer.core import TyperArgument, TyperOption

    for cls in (TyperOption, TyperArgument):
        tagged = cls.display_type_rich
        if getattr(tagged, "_flags_plain", False):
            continue

        def display_type_rich(self: Any, ctx: Any, tagged: Any = tagged) -> str | None:
            if getattr(self, "is_flag", False):
                return None
            label: str | None = tagged(self, ctx)
            if not label or not (label.startswith("<") and label.endswith(">")):
                return label
            inner = label[1:-1]
            repeat = inner.startswith("list[")
            inner = inner.removeprefix("list[").removesuffix("]")
            plain = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "directory": "DIR"}.get(inner, inner.upper())
            return plain + ("…" if repeat else "")

        display_type_rich._flags_plain = True  # type: ignore[attr-defined]
        cls.display_type_rich = display_type_rich  # type: ignore[method-assign]


def fail(message: str, code: int = 2) -> typer.Exit:
    """One plain line on stderr; the caller raises the returned exit (2: the input was refused)."""
    err.print(f"error: {visible(message)}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def say(line: str) -> None:
    console.print(visible(line), markup=False, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    # hidden characters only occur inside JSON strings, where ``\u202E`` is the same character: exact JSON
    text = visible(json.dumps(data, ensure_ascii=False, indent=2))
    if console.is_terminal:
        console.print_json(text)
    else:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def emit(data: T, as_json: bool, human: Callable[[T], None]) -> None:
    """``--json`` prints the API's answer as it is; otherwise ``human`` renders it for an operator."""
    if as_json:
        print_json(data)
    else:
        human(data)


def utc_offset(moment: datetime) -> str:
    """``moment``'s offset the way the console writes it: ``UTC+8``, ``UTC+5:30``, ``UTC-3``, ``UTC``."""
    offset = moment.utcoffset()
    minutes = round(offset.total_seconds() / 60) if offset is not None else 0
    if not minutes:
        return "UTC"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{'+' if minutes > 0 else '-'}{hours}" + (f":{rest:02d}" if rest else "")


def when(value: Any, timezone: str | None = None) -> str:
    """An epoch (the API's times) as the console shows it, always with its UTC offset so an operator knows which
    time it is: ``2026-12-05 16:03:26 UTC+8``. In this machine's timezone, or in ``timezone`` (a schedule's
    own: it fires there; an unknown zone falls back to this machine's); '-' when unset. Every time the CLI
    prints goes through here."""
    if value in (None, "", 0):
        return "-"
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    moment = datetime.fromtimestamp(value).astimezone()
    if timezone:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            moment = moment.astimezone(ZoneInfo(timezone))
    return f"{moment:%Y-%m-%d %H:%M:%S} {utc_offset(moment)}"


#: A table column's name in Chinese, shown under the English one (operators read Chinese first; the English
#: name is the API's field, what ``--json`` and the docs call it). A column without one keeps one line.
HEADERS_ZH: dict[str, str] = {
    "id": "编号", "account": "账号", "to": "接收人", "reason": "原因", "tries": "次数", "error": "错误",
    "result": "结果", "name": "名称", "status": "状态", "total": "总数", "sent": "已发", "dead": "死信",
    "skip": "跳过", "cancel": "取消", "left": "剩余", "vendor": "服务商", "instance": "实例",
    "per_min": "每分钟", "token": "令牌", "part": "分段", "kind": "类型", "timezone": "时区", "next_at": "下次",
    "since": "时间", "by": "来源", "note": "备注", "from": "来自", "received": "收到", "nickname": "昵称",
    "remark": "备注名", "labels": "标签", "role": "角色", "created": "创建于", "last_used": "最近使用",
    "rate/min": "每分钟上限", "at": "时间", "key": "密钥", "action": "操作", "target": "对象", "n": "次",
    "started": "开始", "outcome": "结果", "class": "类别", "ms": "毫秒", "count": "数量", "friends": "好友",
}  # fmt: skip


def print_table(
    columns: list[str],
    rows: list[list[str]],
    *,
    right: tuple[str, ...] = (),
    whole: tuple[str, ...] = (),
    title: str | None = None,
) -> None:
    """A table that keeps every column at any terminal width: ids, and the columns named in ``whole`` (an
    audit entry's ``target``, copied into ``--target``), are never wrapped or cut (they are copied into the
    next command; a row that cannot fit runs past the terminal's edge instead of being cut there); other columns
    keep at least their header's width (rich would otherwise squeeze a narrow column down to nothing) and fold
    long values onto more lines."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title=title, title_justify="left")
    cells = [[untrusted(cell) for cell in row] for row in rows]
    two_lines = any(name in HEADERS_ZH for name in columns)
    for index, name in enumerate(columns):
        zh = HEADERS_ZH.get(name)
        # a column without a Chinese name keeps its name on the first line, beside the others' English
        header = f"{name}\n{zh}" if zh else f"{name}\n " if two_lines else name
        head = max(len(name), cell_len(zh or ""))
        widest = max([head, *(console.measure(row[index]).maximum for row in cells)])
        if name == "id" or name in whole:
            table.add_column(header, no_wrap=True, min_width=widest)
        else:
            table.add_column(
                header,
                overflow="fold",
                min_width=min(widest, max(head, 6)),
                justify="right" if name in right else "left",
            )
    for row in cells:
        table.add_row(*row)
    console.print(table, crop=False)


def kv(rows: list[tuple[str, Any]]) -> None:
    """One record as name/value lines; an unset value reads '-'."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in rows:
        if isinstance(value, bool):
            value = "yes / 是" if value else "no / 否"
        grid.add_row(name, "-" if value in (None, "") else untrusted(value))
    console.print(grid)


def _attempt(entry: dict[str, Any]) -> tuple[str, str]:
    """(n, outcome): a requeue (its account was down, nothing sent) is not an attempt, so it shows no number
    (it carries the number the next real attempt gets)."""
    outcome = str(entry.get("outcome", ""))
    if outcome == "requeue":
        return "-", "requeued, not counted / 重新排队，不计次"
    return str(entry.get("n", "")), outcome


def print_history(history: list[dict[str, Any]]) -> None:
    """A job's attempts, oldest first, one row each (``message show`` and ``dead-letters show``)."""
    if not history:
        return
    rows = [
        [
            _attempt(entry)[0], when(entry.get("started")), _attempt(entry)[1],
            str(entry.get("error_class") or ""), str(entry.get("latency_ms") or ""),
            str(entry.get("error") or entry.get("new_msg_id") or ""),
        ]
        for entry in history
    ]  # fmt: skip
    columns = ["n", "started", "outcome", "class", "ms", "error / new_msg_id"]
    print_table(columns, rows, right=("n", "ms"), title="history")
