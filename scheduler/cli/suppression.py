"""``suppressions add|list|remove|import|export|held|apply-held``: recipients an account (or every account)
never messages.

A suppressed delivery ends ``skipped`` (``suppressed``) at the moment of sending and costs no vendor call.
``--account`` names one account; without it (or ``*``) the entry covers every account. ``held`` and
``apply-held`` show and apply what an account's callbacks asked for past ``BROADCAST_CALLBACK_CHANGES_PER_H``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli.options import AsJson, Token, Url, connect
from scheduler.cli.render import fail, print_json, print_table, say, when

app = typer.Typer(
    help="Suppression list / 退订名单: add, list, remove, import, export, held, apply-held.", no_args_is_help=True
)

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
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV with a 'to' column, or an export (.csv, .jsonl)")
    ],
    account: AccountOpt = None,
    reason: Annotated[str, typer.Option(help="for rows without a reason column")] = "manual",
    url: Url = None,
    token: Token = None,
) -> None:
    """Import suppressions / 导入退订名单

    Import a CSV (columns to, and optionally account, reason, at, by, note, as export writes them, so an
    export imported again keeps each entry's time and author; a .jsonl/.ndjson file is read as JSON lines):
    all rows or none."""
    _check_reason(reason)
    jsonl = file.suffix.lower() in (".jsonl", ".ndjson")
    with connect(url, token) as api:
        answer = api.import_suppressions(file.read_bytes(), account=account, reason=reason, jsonl=jsonl)
    say(f"imported {answer['imported']} suppression(s) / 已导入 {answer['imported']} 条退订记录")
    if answer.get("kept"):
        kept = answer["kept"]
        say(
            f"kept {kept} written by a callback or a vendor's refusal as they were / {kept} 条由回调或服务商拒绝写入的记录保持不变"
        )


@app.command()
def export(
    account: AccountOpt = None,
    reason: ReasonOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", dir_okay=False, help="file (default: stdout)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv (default) or jsonl")] = "csv",
    url: Url = None,
    token: Token = None,
) -> None:
    """Export suppressions / 导出退订名单

    Every suppression as CSV (account,to,reason,at,by,note) or JSON lines; import reads either back."""
    _check_reason(reason)
    if fmt not in ("csv", "jsonl"):
        raise fail(f"--format: {fmt!r} is not csv or jsonl / 格式须为 csv 或 jsonl")
    with connect(url, token) as api, api.export_suppressions(account=account, reason=reason, fmt=fmt) as chunks:
        if output is None:
            for chunk in chunks:
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        with output.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
    say(f"written to {output} / 已写入 {output}")


AccountArg = Annotated[str, typer.Option("--account", "-a", help="the account whose callbacks were held")]


@app.command()
def held(
    account: AccountArg,
    limit: Annotated[int, typer.Option(help="at most this many")] = 100,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Callback changes held over the cap / 超出上限而暂存的回调变更

    Opt-outs and removed contacts an account's callbacks asked for past BROADCAST_CALLBACK_CHANGES_PER_H:
    held, not applied (apply them with apply-held, or let them expire) / 超过每小时上限的回调变更：已暂存、未生效。"""
    items: list[dict[str, Any]] = []
    cursor: str | None = ""
    total = 0
    with connect(url, token) as api:
        while cursor is not None and len(items) < limit:
            page, total, cursor = api.held_callback_changes(account, cursor=cursor, limit=min(1000, limit))
            items += page
    items = items[:limit]
    if as_json:
        print_json(items)
        return
    rows = [[h["id"], h["reason"], h["from"], when(h["at"]), h["digest"][:12], h["note"][:40]] for h in items]
    print_table(["id", "reason", "from", "received", "body sha256", "note"], rows)
    say(f"{len(items)} shown of {total} held for {account} / 账号 {account} 共暂存 {total} 条，显示 {len(items)} 条")


@app.command("apply-held")
def apply_held(
    account: AccountArg,
    ids: Annotated[list[str] | None, typer.Argument(help="held ids (default: all, oldest first)")] = None,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Apply held callback changes / 应用暂存的回调变更

    Write held opt-outs and removed contacts as the suppressions they asked for (dated when received) /
    把暂存的退订和删除好友写入退订名单（时间为收到回调的时间）。"""
    total = {"applied": 0, "already_suppressed": 0, "remaining": 0}
    with connect(url, token) as api:
        while True:
            answer = api.apply_held_callback_changes(account, ids or None)
            for name in ("applied", "already_suppressed"):
                total[name] += int(answer[name])
            total["remaining"] = int(answer["remaining"])
            if ids or not answer["remaining"] or not (answer["applied"] or answer["already_suppressed"]):
                break
    if as_json:
        print_json(total)
        return
    say(
        f"applied {total['applied']} (already suppressed {total['already_suppressed']}), "
        f"{total['remaining']} still held / 已应用 {total['applied']} 条（已在名单中 {total['already_suppressed']} 条），"
        f"仍暂存 {total['remaining']} 条"
    )
