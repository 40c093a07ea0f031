"""``schedules list|show|create|pause|resume|delete``: a message or a campaign sent on a cron schedule."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from scheduler.cli.options import AsJson, Token, Url, connect, json_option
from scheduler.cli.render import emit, fail, kv, print_table, say, when

app = typer.Typer(
    help="Recurring pushes (cron) / 定时任务: list, show, create, pause, resume, delete.", no_args_is_help=True
)


def _kind(s: dict[str, Any]) -> str:
    if s.get("kind"):
        return str(s["kind"])
    return "campaign" if s.get("campaign") else "message" if s.get("message") else "-"


def _payload(s: dict[str, Any]) -> Any:
    """What the schedule sends (the API answers it as ``template``; ``message``/``campaign`` also read)."""
    return s.get("template") or s.get("campaign") or s.get("message")


def _next_at(s: dict[str, Any]) -> str:
    """The next firing in the schedule's own timezone."""
    return when(s.get("next_at"), s.get("timezone"))


def _print_schedules(items: list[dict[str, Any]]) -> None:
    rows = [
        [
            s["id"], s.get("name") or "", s.get("cron", ""), s.get("timezone", ""), _kind(s),
            "paused" if s.get("paused") else _next_at(s),
        ]
        for s in items
    ]  # fmt: skip
    print_table(["id", "name", "cron", "timezone", "kind", "next_at"], rows)
    say(f"{len(items)} shown / 显示 {len(items)} 条")


@app.command("list")
def list_(as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """List schedules / 列出定时任务

    Every recurring schedule with its next run."""
    with connect(url, token) as api:
        items = api.schedules()
    emit(items, as_json, _print_schedules)


def _print_schedule(s: dict[str, Any]) -> None:
    payload = _payload(s)
    rows: list[tuple[str, Any]] = [("id", s["id"]), ("kind", _kind(s))]
    times = {"next_at", "created", "last_fired"}
    for key, value in s.items():  # whatever else the API tells: times in the schedule's timezone
        if key in ("id", "kind", "template", "campaign", "message"):
            continue
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        rows.append((key, when(value, s.get("timezone")) if key in times or key.endswith("_at") else value))
    if payload is not None:
        rows.append(("sends", json.dumps(payload, ensure_ascii=False)))
    kv(rows)


@app.command("show")
def show(schedule_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Show a schedule / 查看定时任务

    One schedule with what it sends."""
    with connect(url, token) as api:
        s = api.schedule(schedule_id)
    emit(s, as_json, _print_schedule)


@app.command("create")
def create(
    cron: Annotated[str, typer.Option(help="cron expression, e.g. '0 9 * * 1-5'")],
    timezone: Annotated[
        str | None, typer.Option(help="IANA timezone the cron runs in (default: the API's, Asia/Shanghai)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="a name to recognise it by")] = None,
    message_json: Annotated[
        str | None, typer.Option("--message-json", help='one message: {"account", "to", "message", "vars"?}')
    ] = None,
    campaign_json: Annotated[
        str | None,
        typer.Option("--campaign-json", help='a campaign: {"name", "account"|"accounts", "recipients", "message"}'),
    ] = None,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a schedule / 创建定时任务

    Send a message or a campaign on a cron schedule."""
    if (message_json is None) == (campaign_json is None):
        raise fail(
            "give exactly one of --message-json, --campaign-json / --message-json 与 --campaign-json 须且只能给一个"
        )
    body: dict[str, Any] = {"cron": cron}
    if timezone:
        body["timezone"] = timezone
    if name:
        body["name"] = name
    if message_json is not None:
        body["message"] = json_option("--message-json", message_json)
    else:
        body["campaign"] = json_option("--campaign-json", campaign_json or "")
    with connect(url, token) as api:
        s = api.create_schedule(body)
    emit(
        s,
        as_json,
        lambda s: say(
            f"schedule {s['id']}: {s.get('cron')} ({s.get('timezone')}), next at {_next_at(s)}"
            f" / 定时任务已创建，下次触发 {_next_at(s)}"
        ),
    )


@app.command("pause")
def pause(schedule_id: str, url: Url = None, token: Token = None) -> None:
    """Pause a schedule / 暂停定时任务

    Stop a schedule firing, keeping it (resume picks up at the next cron time)."""
    with connect(url, token) as api:
        api.steer_schedule(schedule_id, "pause")
    say(f"schedule {schedule_id} paused / 定时任务已暂停")


@app.command("resume")
def resume(schedule_id: str, url: Url = None, token: Token = None) -> None:
    """Resume a schedule / 恢复定时任务

    Fire a paused schedule again from its next cron time (missed times are skipped)."""
    with connect(url, token) as api:
        s = api.steer_schedule(schedule_id, "resume")
    say(f"schedule {schedule_id} resumed, next at {_next_at(s)} / 定时任务已恢复，下次触发 {_next_at(s)}")


@app.command("delete")
def delete(schedule_id: str, url: Url = None, token: Token = None) -> None:
    """Delete a schedule / 删除定时任务

    Stop and remove a schedule (what it already sent stays on the books)."""
    with connect(url, token) as api:
        api.delete_schedule(schedule_id)
    say(f"schedule {schedule_id} deleted / 定时任务已删除")
