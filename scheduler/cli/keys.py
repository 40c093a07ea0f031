"""``keys create|list|revoke`` (operator keys with a role) and ``audit`` (who did what)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any

import typer

import scheduler
from scheduler.cli.options import AsJson, Token, Url, connect
from scheduler.cli.render import emit, print_table, say, when

app = typer.Typer(
    help="Operator keys with a role (viewer, operator, admin) / 带角色的操作密钥: create, list, revoke.",
    no_args_is_help=True,
)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="who holds the key (shown in the audit trail)")],
    role: Annotated[str, typer.Option(help="viewer (reads), operator (sends), admin (accounts, keys)")] = "viewer",
    rate_per_min: Annotated[
        int | None, typer.Option(help="requests a minute (default BROADCAST_KEY_RATE_PER_MIN)")
    ] = None,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a key / 创建密钥

    Create a key. It is printed this once: store it now / 密钥只显示这一次，请立即保存。"""
    with connect(url, token) as api:
        made = api.create_key(name, role, rate_per_min=rate_per_min)

    def human(k: dict[str, Any]) -> None:
        say(f"key {k['name']} ({k['role']}) — shown once, store it now / 只显示这一次，请立即保存:")
        typer.echo(k["key"])

    emit(made, as_json, human)


@app.command("list")
def list_(as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """List keys / 列出密钥

    Names, roles, created and last used (never the keys) / 名称、角色、创建与最近使用时间。"""
    with connect(url, token) as api:
        items = api.keys()

    def human(rows: list[dict[str, Any]]) -> None:
        print_table(
            ["name", "role", "created", "last_used", "rate/min"],
            [
                [k["name"], k["role"], when(k["created"]), when(k["last_used"]), str(k["rate_per_min"] or "-")]
                for k in rows
            ],
        )
        say(f"{len(rows)} key{'' if len(rows) == 1 else 's'} / 共 {len(rows)} 个密钥")

    emit(items, as_json, human)


@app.command("revoke")
def revoke(name: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Revoke a key / 吊销密钥

    Revoke a key at once: its next request is refused (401); the schedules and unfinished campaigns it created
    are paused, its drafts held and its messages not sent yet cancelled; only an admin resumes or starts what it
    created / 立即吊销：暂停它创建的定时任务和未完成的群发、冻结其草稿、取消它尚未发出的消息；
    之后只有管理员能恢复或启动。"""
    with connect(url, token) as api:
        done = api.revoke_key(name)

    def show(d: dict[str, Any]) -> None:
        say(f"revoked {d['revoked']} / 已吊销")
        if d.get("paused_schedules"):
            paused = ", ".join(d["paused_schedules"])
            say(f"paused the schedules it created / 已暂停它创建的定时任务: {paused} (`broadcast schedules resume ID`)")
        if d.get("paused_campaigns"):
            paused = ", ".join(d["paused_campaigns"])
            say(
                f"paused the campaigns it created / 已暂停它创建的群发: {paused} (an admin: `broadcast campaign resume ID`)"
            )
        if d.get("held_drafts"):
            held = ", ".join(d["held_drafts"])
            say(f"held its drafts / 已冻结它的草稿: {held} (an admin: `broadcast campaign start ID`)")
        if d.get("cancelled_messages"):
            n = len(d["cancelled_messages"])
            say(f"cancelled {n} message(s) of it not sent yet / 已取消它尚未发出的 {n} 条消息")

    emit(done, as_json, show)


def audit(
    limit: Annotated[int, typer.Option(help="entries to show, newest first")] = 50,
    key: Annotated[str | None, typer.Option(help="only this key's actions (its name)")] = None,
    target: Annotated[str | None, typer.Option(help="only this target, e.g. campaign:42 or account:shop")] = None,
    cursor: Annotated[str | None, typer.Option(help="continue after this entry id (the last line's hint)")] = None,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Audit log / 操作审计

    Who did what: every change made through the API / 操作审计：谁在何时做了什么。"""
    with connect(url, token) as api:
        page = api.audit(limit=limit, cursor=cursor, key=key, target=target)

    emit(page, as_json, print_audit)


#: A role as an operator reads it (the API's 403 and the console say the same).
ROLE_WORDS = {
    "viewer": "只读 viewer",
    "operator": "操作员 operator",
    "admin": "管理员 admin",
    "callback": "服务商回调 callback",
    "worker": "发送进程（自动） worker",
}


@functools.cache
def audit_actions() -> dict[str, list[str]]:
    """{action code: [Chinese, English]}: the console's table (read as a file, so the CLI does not import the
    console's web stack); empty if it cannot be read, and codes are then shown as recorded."""
    path = Path(scheduler.__file__).parent / "console" / "static" / "audit_actions.json"
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def action_words(code: str) -> str:
    """``启动群发 / Start campaign`` over ``campaign.start`` (the code, on its own line, is what ``--json`` and
    the API say); a code the table lacks, as recorded."""
    label = audit_actions().get(code)
    return f"{label[0]} / {label[1]}\n{code}" if isinstance(label, list) and len(label) == 2 else code


def print_audit(page: dict[str, Any]) -> None:
    """One audit page as a table; a target stays on one line at any width (it is copied into ``--target``)."""
    print_table(
        ["at", "key", "role", "action", "target", "status"],
        [
            [
                when(e["at"]),
                e["key"],
                ROLE_WORDS.get(e["role"], e["role"]),
                action_words(e["action"]),
                e["target"],
                str(e["status"]),
            ]
            for e in page["items"]
        ],
        whole=("target",),
    )
    n = len(page["items"])
    say(f"{n} shown / 显示 {n} 条")
    if page.get("next_cursor"):
        say(f"older / 更早: --cursor {page['next_cursor']}")
