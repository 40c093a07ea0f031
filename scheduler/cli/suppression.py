"""``suppressions add|list|remove|import|export``: recipients an account (or every account) never messages.

A suppressed delivery ends ``skipped`` (``suppressed``) at the moment of sending and costs no vendor call.
``--account`` names one account; without it (or ``*``) the entry covers every account.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli.options import AsJson, Token, Url, connect
from scheduler.cli.render import fail, print_json, print_table, say, when

app = typer.Typer(help="Suppression list / 退订名单: add, list, remove, import, export.", no_args_is_help=True)

REASONS = ("opted_out", "not_friend", "contact_removed", "manual")
AccountOpt = Annotated[str | None, typer.Option("--account", "-a", help="one account (default: every account, *)")]
ReasonOpt = Annotated[str | None, typer.Option(help="opted_out | not_friend | contact_removed | manual")]


def _check_reason(reason: str | None) -> None:
    if reason is not None and reason not in REASONS:
        raise fail(f"--reason: {reason!r} is not one of {', '.join(REASONS)} / 原因须为其中之一")


def _whose(account: str | None) -> tuple[str, str]:
    """Whose list an entry is on, in English and Chinese: ``shop``, ``every account`` / ``所有账号``."""
    return (account, f"账号 {account}") if account and account != "*" else ("every account", "所有账号")


@app.command()
def add(
    to: Annotated[list[str], typer.Argument(help="wxid(s) to suppress")],
    account: AccountOpt = None,
    reason: Annotated[
        str, typer.Option(help="why: manual (default), opted_out, not_friend, contact_removed")
    ] = "manual",
    note: Annotated[str, typer.Option(help="a note for the next person")] = "",
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Suppress recipients / 加入退订名单

    Suppress recipients: campaigns, schedules and messages skip them from now on / 加入退订名单。"""
    _check_reason(reason)
    added: list[dict[str, Any]] = []
    with connect(url, token) as api:
        for wxid in to:
            added.append(api.add_suppression({"account": account, "to": wxid, "reason": reason, "note": note}))
    if as_json:
        print_json(added)
        return
    en, zh = _whose(account)
    say(f"suppressed {len(added)} recipient(s) for {en} / 已将 {len(added)} 个接收人加入退订名单（{zh}）")


@app.command("list")
def list_(
    account: AccountOpt = None,
    reason: ReasonOpt = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 100,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """List suppressions / 列出退订名单

    Suppressed recipients (--account * for the every-account list)."""
    _check_reason(reason)
    items: list[dict[str, Any]] = []
    cursor: str | None = ""
    with connect(url, token) as api:
        while cursor is not None and len(items) < limit:
            page, cursor = api.suppressions(account=account, reason=reason, cursor=cursor, limit=min(1000, limit))
            items += page
    # more are left: the API has a next page, or a page brought more than asked (a small list comes whole)
    more_left = bool(cursor) or len(items) > limit
    items = items[:limit]
    if as_json:
        print_json(items)
        return
    rows = [[s["account"] or "*", s["to"], s["reason"], when(s["at"]), s["by"], s["note"][:40]] for s in items]
    print_table(["account", "to", "reason", "since", "by", "note"], rows)
    more = " (more: raise --limit or use export)", "（还有更多：调大 --limit 或用 export 导出）"
    en, zh = more if more_left else ("", "")
    say(f"{len(items)} shown{en} / 显示 {len(items)} 条{zh}")


@app.command()
def remove(
    to: Annotated[str, typer.Argument(help="the wxid")],
    account: AccountOpt = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Lift a suppression / 移出退订名单

    Lift a suppression / 移出退订名单。"""
    with connect(url, token) as api:
        api.remove_suppression(account or "*", to)
    en, zh = _whose(account)
    say(f"{to} may be messaged again by {en} / 已移出退订名单（{zh}），可再次给 {to} 发消息")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV with a 'to' column")],
    account: AccountOpt = None,
    reason: Annotated[str, typer.Option(help="for rows without a reason column")] = "manual",
    url: Url = None,
    token: Token = None,
) -> None:
    """Import suppressions / 导入退订名单

    Import a CSV (columns to, and optionally account, reason, note): all rows or none."""
    _check_reason(reason)
    with connect(url, token) as api:
        answer = api.import_suppressions(file.read_bytes(), account=account, reason=reason)
    say(f"imported {answer['imported']} suppression(s) / 已导入 {answer['imported']} 条退订记录")


@app.command()
def export(
    account: AccountOpt = None,
    reason: ReasonOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", dir_okay=False, help="file (default: stdout)")
    ] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Export suppressions / 导出退订名单

    Every suppression as CSV (account,to,reason,at,by,note)."""
    _check_reason(reason)
    with connect(url, token) as api, api.export_suppressions(account=account, reason=reason) as chunks:
        if output is None:
            for chunk in chunks:
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        with output.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
    say(f"written to {output} / 已写入 {output}")
