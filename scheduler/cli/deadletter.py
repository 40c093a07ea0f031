"""``dead-letters list|show|replay|delete``: jobs that will not be tried again on their own."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from scheduler.cli.client import ApiError
from scheduler.cli.options import AsJson, Token, Url, connect
from scheduler.cli.render import emit, kv, print_history, print_json, print_table, say, when

app = typer.Typer(help="Dead letters / 死信: list, inspect, replay, delete.", no_args_is_help=True)

REPLAY_HINTS = {
    "unknown_outcome": "may already be in the chat: add --force to replay anyway / 可能已发到对方：确要重发请加 --force",
    "not_dead": "not a dead letter (already replayed, sent or never dead) / 不是死信（已重发、已发送或从未进入死信）",
    "missing": "no such message / 没有这条消息",
    "campaign_recalled": "its campaign was recalled: nothing of it is sent again / 该群发已撤回，不再发送",
}


@app.command("list")
def list_(
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    campaign: Annotated[str | None, typer.Option(help="only this campaign")] = None,
    reason: Annotated[
        str | None, typer.Option(help="permanent, retries_exhausted, unknown_outcome, invalid_message, …")
    ] = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 50,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """List dead letters / 列出死信

    Dead jobs, newest first, with whole ids (copy them into `replay`)."""
    with connect(url, token) as api:
        answer = api.dead_letters(account=account, campaign=campaign, reason=reason, limit=limit)
    items: list[dict[str, Any]] = answer["dead_letters"]
    if as_json:
        print_json(items)
        return
    rows = [
        [d["id"], d["account"], d["to"], d["reason"], str(d["attempts"]), _short(d.get("error") or "")] for d in items
    ]
    columns = ["id", "account", "to", "reason", "tries", "error"]
    print_table(columns, rows, right=("tries",))
    say(
        f"{len(items)} shown ({answer['total']} in the dead-letter store) / 显示 {len(items)} 条（死信共 {answer['total']} 条）"
    )


def _short(text: str, width: int = 60) -> str:
    """``text`` in at most ``width`` characters, cut at a word and marked ``…`` (`dead-letters show` has it
    whole)."""
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > width // 2 else cut).rstrip(" ,;:") + "…"


def _print_dead_letter(entry: dict[str, Any]) -> None:
    kv(
        [
            ("id", entry["id"]),
            ("account", entry.get("account")),
            ("to", entry.get("to")),
            ("campaign", entry.get("campaign")),
            ("reason", entry.get("reason")),
            ("class", entry.get("error_class")),
            ("error", entry.get("error")),
            ("attempts", entry.get("attempts")),
            ("dead_at", when(entry.get("dead_at"))),
        ]
    )
    print_history(entry.get("history") or [])


@app.command("show")
def show(job_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Show a dead letter / 查看死信

    A dead job with its reason and full attempt history."""
    with connect(url, token) as api:
        entry = api.dead_letter(job_id)
    emit(entry, as_json, _print_dead_letter)


@app.command("replay")
def replay(
    job_ids: Annotated[list[str], typer.Argument(help="dead job ids")],
    force: Annotated[
        bool, typer.Option("--force", help="also replay unknown outcomes (they may already be sent)")
    ] = False,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Replay dead letters / 重放死信

    Queue dead jobs again (same id, same history, sent at most once); exit 1 if any did not replay."""
    with connect(url, token) as api:
        results = api.replay(job_ids, force=force)
    ok = sum(1 for v in results.values() if v == "ok")
    if as_json:
        print_json({"results": results, "replayed": ok})
    else:
        print_table(["id", "result"], [[job_id, outcome] for job_id, outcome in results.items()])
        for outcome in sorted({o for o in results.values() if o in REPLAY_HINTS}):
            say(f"{outcome}: {REPLAY_HINTS[outcome]}")  # under the table: never dropped on narrow terminals
        say(f"replayed {ok} of {len(results)} / 已重发 {ok} 条（共 {len(results)} 条）")
    if ok != len(results):
        raise typer.Exit(1)


@app.command("delete")
def delete(
    job_ids: Annotated[list[str], typer.Argument(help="dead job ids")],
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Delete dead letters / 删除死信

    Drop dead jobs from the store (their record stays, dead); exit 1 if any was not a dead letter."""
    results: dict[str, str] = {}
    with connect(url, token) as api:
        for job_id in job_ids:
            try:
                api.delete_dead_letter(job_id)
                results[job_id] = "deleted"
            except ApiError as exc:
                if exc.status != 404:
                    raise
                results[job_id] = "not_dead_letter"
    if as_json:
        print_json(results)
    else:
        print_table(["id", "result"], [[job_id, outcome.replace("_", " ")] for job_id, outcome in results.items()])
    if any(v != "deleted" for v in results.values()):
        raise typer.Exit(1)
