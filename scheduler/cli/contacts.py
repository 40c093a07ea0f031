"""``contacts sync|status|cancel|list|labels``: an account's own friends, groups and labels, synced from its
vendor (the audiences of ``campaign create --account A --label X``)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from scheduler.cli.options import AsJson, Token, Url, connect
from scheduler.cli.render import emit, fail, kv, markup_safe, print_table, say, when

app = typer.Typer(
    help="Contacts / 通讯录: sync an account's friends, groups and labels, list them, cancel a sync.",
    no_args_is_help=True,
)

Account = Annotated[str, typer.Argument(help="account id / 账号")]
#: How a sync that did not finish ended, in Chinese (``the sync failed: … / 同步失败``).
SYNC_ENDED = {"failed": "失败", "cancelled": "已取消"}


def _ages(synced_at: float | None) -> tuple[str, str] | None:
    """How old a sync is, the way operators read it, in English and Chinese (``3 min ago``, ``3 分钟前``);
    None when the account never synced."""
    if not synced_at:
        return None
    age = max(0.0, time.time() - synced_at)
    if age < 120:
        return f"{age:.0f} s ago", f"{age:.0f} 秒前"
    if age < 7200:
        return f"{age / 60:.0f} min ago", f"{age / 60:.0f} 分钟前"
    return f"{age / 3600:.1f} h ago", f"{age / 3600:.1f} 小时前"


def _age(synced_at: float | None) -> str:
    """``3 min ago / 3 分钟前``; ``never / 从未同步``."""
    en, zh = _ages(synced_at) or ("never", "从未同步")
    return f"{en} / {zh}"


def _synced(synced_at: float | None) -> tuple[str, str]:
    """When the last sync was, in English and Chinese: ``synced 3 min ago``, ``3 分钟前同步``."""
    ages = _ages(synced_at)
    return (f"synced {ages[0]}", f"{ages[1]}同步") if ages else ("never synced", "从未同步")


def _print_status(s: dict[str, Any]) -> None:
    progress = s.get("progress") or {}
    kv(
        [
            ("status", s["status"] + (f" ({s['waiting']})" if s.get("waiting") else "")),
            ("phase", s.get("phase") or "-"),
            ("progress", f"{progress.get('done', 0)}/{progress.get('total', 0)} ids, {progress.get('calls', 0)} calls"),
            ("friends", s["friends"]),
            ("chatrooms", s["chatrooms"]),
            ("labels", s["labels"]),
            ("public accounts", s.get("ghs", 0)),
            ("synced", f"{when(s.get('synced_at'))} ({_age(s.get('synced_at'))})"),
            ("error", s.get("error") or "none"),
        ]
    )


@app.command("sync")
def sync(
    account: Account,
    watch: Annotated[
        bool, typer.Option("--watch", help="show a progress bar until it ends / 显示进度直到完成")
    ] = False,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Sync contacts / 同步通讯录

    Sync the account's friends, groups and labels from its vendor (paced, under the account's lease:
    sends go on between its calls). 同步账号的好友、群和标签。"""
    with connect(url, token) as api:
        status = api.contacts_sync(account)
        if not watch:
            emit(status, as_json, _print_status)
            return
        status = _watch(api, account, status)
        emit(status, as_json, _print_status)
        if status["status"] != "done":
            zh = SYNC_ENDED.get(status["status"], status["status"])
            raise fail(f"the sync {status['status']}: {status.get('error') or ''} / 同步{zh}", 3)


def _watch(api: Any, account: str, status: dict[str, Any]) -> dict[str, Any]:
    """A progress bar on stderr (ids detailed of those listed) until the sync ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from scheduler.cli.render import err

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"))
    try:
        with Progress(*columns, console=err, refresh_per_second=4) as progress:
            task = progress.add_task(f"contacts / 通讯录 {markup_safe(account)}", total=None, info="")
            while True:
                p = status.get("progress") or {}
                total = int(p.get("total") or 0) or None
                info = f"{markup_safe(status.get('phase') or '')}  {p.get('calls', 0)} calls / 次调用"
                if status.get("waiting"):
                    info += f"  waiting / 等待: {markup_safe(status['waiting'])}"
                progress.update(task, completed=int(p.get("done") or 0), total=total, info=info)
                if status["status"] != "running":
                    break
                time.sleep(0.5)
                status = api.contacts_sync_status(account)
    except KeyboardInterrupt:
        raise fail(
            f"stopped watching; the sync of {account} goes on (contacts cancel {account} stops it)"
            f" / 已停止查看，{account} 的同步仍在继续（contacts cancel {account} 可取消）",
            130,
        ) from None
    return status


@app.command("status")
def status(account: Account, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Show the sync / 同步状态

    The running or last sync: progress, counts, how old, why it failed. 同步状态。"""
    with connect(url, token) as api:
        emit(api.contacts_sync_status(account), as_json, _print_status)


@app.command("cancel")
def cancel(account: Account, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Cancel the sync / 取消同步

    Stop a running sync; the last finished one stays in use. 取消同步。"""
    with connect(url, token) as api:
        emit(api.contacts_sync_cancel(account), as_json, _print_status)


@app.command("list")
def list_(
    account: Account,
    label: Annotated[str | None, typer.Option(help="only friends with this label / 按标签")] = None,
    kind: Annotated[str | None, typer.Option(help="friend, chatroom or gh / 类型")] = None,
    q: Annotated[str | None, typer.Option(help="text in wxid, nickname or remark / 搜索")] = None,
    limit: Annotated[int, typer.Option(help="how many / 条数")] = 100,
    cursor: Annotated[str | None, typer.Option(help="the `next` of the previous page")] = None,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """List contacts / 列出通讯录

    The account's contacts as of its last sync. 列出通讯录。"""
    with connect(url, token) as api:
        page = api.contacts(account, kind=kind, label=label, q=q, limit=limit, cursor=cursor)

    def show(p: dict[str, Any]) -> None:
        rows = [[c["wxid"], c["kind"], c["nickname"], c["remark"], ",".join(c["labels"])] for c in p["items"]]
        print_table(["wxid", "kind", "nickname", "remark", "labels"], rows)
        n, en, zh = len(p["items"]), *_synced(p.get("synced_at"))
        say(f"{n} of {p['total']} shown ({en}) / 显示 {n} 条（共 {p['total']} 条，{zh}）")
        if p.get("next"):
            say(f"more / 更多: --cursor {p['next']}")

    emit(page, as_json, show)


@app.command("labels")
def labels(account: Account, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """List labels / 标签及人数

    The account's labels and how many friends carry each. 标签及人数。"""
    with connect(url, token) as api:
        found = api.labels(account)

    def show(p: dict[str, Any]) -> None:
        print_table(
            ["id", "name", "friends"], [[i["id"], i["name"], str(i["count"])] for i in p["items"]], right=("friends",)
        )
        say(" / ".join(_synced(p.get("synced_at"))))

    emit(found, as_json, show)
