"""One message: ``send`` it, then ``message show|cancel|revoke`` (and the hidden ``job`` alias of ``show``)."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import typer

from scheduler.cli.client import TERMINAL, ApiError
from scheduler.cli.options import (
    AppmsgOpt,
    AsJson,
    DescriptionOpt,
    FileNameOpt,
    FileOpt,
    IdemOpt,
    ImageOpt,
    LinkOpt,
    MessageFileOpt,
    MessageOpt,
    PriorityOpt,
    SendAtOpt,
    TextOpt,
    ThumbOpt,
    TitleOpt,
    Token,
    Url,
    connect,
    message_body,
    pairs,
    parse_send_at,
)
from scheduler.cli.render import emit, err, fail, kv, print_history, print_json, print_table, say, when
from scheduler.cli.waiting import TimeoutOpt, Waiting

app = typer.Typer(
    help="One message / 单条消息: show its ids and attempt history, cancel or revoke it.", no_args_is_help=True
)


def _outcome(job: dict[str, Any]) -> dict[str, Any]:
    """What a finished message came to: its ids, or why not."""
    errors = job.get("errors") or []
    return {
        "id": job["id"],
        "status": job["status"],
        "result": job.get("result"),
        "vendor": job.get("vendor"),
        "attempts": job.get("attempts"),
        "reason": job.get("reason"),
        "skip_reason": job.get("skip_reason"),
        "error": errors[-1].get("error") if errors else None,
        # a sequence: each part's kind, status and own ids (``result`` holds only the first part's)
        **({"parts": job["parts"]} if job.get("parts") else {}),
    }


def send(
    account: Annotated[str, typer.Option(help="sending account id")],
    to: Annotated[str, typer.Option(help="recipient wxid or …@chatroom")],
    text: TextOpt = None,
    appmsg_file: AppmsgOpt = None,
    message_json: MessageOpt = None,
    message_file: MessageFileOpt = None,
    image: ImageOpt = None,
    file: FileOpt = None,
    file_name: FileNameOpt = None,
    link: LinkOpt = None,
    title: TitleOpt = None,
    description: DescriptionOpt = None,
    thumb: ThumbOpt = None,
    var: Annotated[list[str] | None, typer.Option("--var", help="NAME=VALUE for a {placeholder} (repeat)")] = None,
    send_at: SendAtOpt = None,
    idempotency_key: IdemOpt = None,
    priority: PriorityOpt = "normal",
    wait: Annotated[
        bool, typer.Option("--wait", help="wait until sent, dead, cancelled or skipped and print the vendor ids")
    ] = False,
    timeout: TimeoutOpt = 600,
    ignore_suppression: Annotated[
        bool,
        typer.Option("--ignore-suppression", help="send even to a suppressed recipient (recorded with your key)"),
    ] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Send one message / 发送单条消息

    Prints {id, status}; with --wait, then the outcome (exit 3 unless sent,
    4 on --timeout), saying once if its account is down, paused or held."""
    body: dict[str, Any] = {
        "account": account,
        "to": to,
        "message": message_body(locals()),
        "priority": priority,
    }
    if var:
        body["vars"] = pairs("--var", var)
    if send_at:
        body["send_at"] = parse_send_at(send_at)
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    if ignore_suppression:
        body["ignore_suppression"] = True
    with connect(url, token) as api:
        accepted = api.send_message(body)
        print_json({"id": accepted["id"], "status": accepted["status"]})
        if not wait:
            return
        job = api.message(accepted["id"])
        waiting = Waiting(api, timeout)
        try:
            with err.status(f"waiting for {accepted['id']} … / 等待中"):
                while job["status"] not in TERMINAL:
                    if expired := waiting.expired(f"{accepted['id']} is {job['status']} and"):
                        raise expired
                    waiting.look([account])
                    time.sleep(0.2)
                    job = api.message(accepted["id"])
        except KeyboardInterrupt:
            raise fail(
                f"stopped waiting; {accepted['id']} is {job['status']} and goes on / 已停止等待，消息仍在继续", 130
            ) from None
    print_json(_outcome(job))
    if job["status"] != "sent":
        raise typer.Exit(3)


def _print_message(job: dict[str, Any]) -> None:
    result = job.get("result") or {}
    kv(
        [
            ("id", job["id"]),
            (
                "status",
                job["status"]
                + (
                    f" ({job.get('reason') or job.get('skip_reason')})"
                    if job.get("reason") or job.get("skip_reason")
                    else ""
                ),
            ),
            ("account", job.get("account")),
            ("to", job.get("to")),
            ("campaign", job.get("campaign")),
            ("vendor", job.get("vendor")),
            ("attempts", job.get("attempts")),
            ("msg_id", result.get("msg_id")),
            ("new_msg_id", result.get("new_msg_id")),
            ("client_msg_id", result.get("client_msg_id")),
            ("create_time", result.get("create_time")),
            ("created", when(job.get("created"))),
            ("sent_at", when(job.get("sent_at"))),
        ]
    )
    parts = job.get("parts") or []
    if parts:  # a sequence: each part's status and its own ids
        rows = [
            [str(part["index"] + 1), str(part.get("kind") or "-"), str(part["status"]),
             str(part.get("new_msg_id") or part.get("client_msg_id") or "-"), str(part.get("error") or "")]
            for part in parts
        ]  # fmt: skip
        print_table(["part", "kind", "status", "new_msg_id", "error"], rows, title="parts / 分段")
    print_history(job.get("history") or [])


@app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="message (job) id")],
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Show one message / 查看消息

    A message with its vendor ids (msgId, newMsgId, createTime) and attempt history."""
    with connect(url, token) as api:
        job = api.message(job_id)
    emit(job, as_json, _print_message)


@app.command("cancel")
def cancel(job_id: str, url: Url = None, token: Token = None) -> None:
    """Cancel a message / 取消消息

    Cancel a message that has not started sending (scheduled, queued or retrying)."""
    with connect(url, token) as api:
        print_json(api.cancel_message(job_id))


#: Why a revoke did not happen, by the API's error code: (English, Chinese).
REVOKE_REFUSALS = {
    "too_late": ("too late", "已超过撤回时限"),
    "unsupported": ("its vendor cannot revoke", "该服务商不支持撤回"),
    "not_revocable": ("not revocable", "无法撤回"),
    "already_revoked": ("already revoked", "此前已撤回"),
    "account_missing": ("its account is gone", "发送它的账号已不存在"),
    "vendor_error": ("the vendor refused (not repeated)", "服务商拒绝撤回（不会重试）"),
}
_EPOCH_AT = re.compile(r"\bat (\d{9,}(?:\.\d+)?)")
_VENDOR_PREFIX = "the revoke failed (not repeated): "


def _readable_reason(reason: str) -> str:
    """A reason with its epochs as times (``the revoke window (110s) ended at 2026-12-05 16:03:26 UTC+8``)."""
    return _EPOCH_AT.sub(lambda found: f"at {when(float(found[1]))}", reason)


def revoke_line(job_id: str, answer: dict[str, Any]) -> str:
    """What came of a revoke the API answered (200 recalled, 202 pending), in English and Chinese."""
    outcome = answer.get("recall")
    if answer.get("revoked") or outcome == "recalled":
        at = when(answer.get("revoked_at"))
        return f"message {job_id} recalled at {at} / 消息 {job_id} 已撤回（{at}）"
    if outcome == "pending":
        return (
            f"message {job_id}: revoke pending, its account runs it next (see `broadcast message show {job_id}`)"
            f" / 消息 {job_id} 待撤回：由其账号排在发送之前执行（用 `broadcast message show {job_id}` 查看结果）"
        )
    return f"message {job_id}: revoke outcome unknown ({outcome}) / 消息 {job_id} 撤回结果未知（{outcome}）"


#: ``gewe-legacy has no documented revoke`` (the API's reason for an unsupported revoke).
_NO_REVOKE = re.compile(r"([\w-]+) has no documented revoke")


def refusal_line(job_id: str, error: ApiError) -> str:
    """Why a message was not revoked, in English and Chinese, with the API's (or the vendor's) reason."""
    en, zh = REVOKE_REFUSALS.get(error.code, ("refused", "撤回被拒绝"))
    reason = _readable_reason(error.message.removeprefix(_VENDOR_PREFIX))
    if error.code == "too_late" and (ended := _EPOCH_AT.search(error.message)):
        zh += f"（撤回时限截至 {when(float(ended[1]))}）"
    elif error.code == "vendor_error" and reason:  # the vendor's own words (Chinese, mostly)
        zh += f"：{reason}"
    elif error.code == "unsupported" and (vendor := _NO_REVOKE.search(error.message)):
        zh += f"（{vendor[1]} 没有公开的撤回接口）"
    return f"message {job_id} not revoked: {en} — {reason} / 消息 {job_id} 未撤回：{zh}"


@app.command("revoke")
def revoke(job_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Revoke a sent message / 撤回消息

    Take back a sent message with its exact ids (vendors allow about two minutes); exit 2 when it is
    too late or cannot be revoked, 1 when the vendor refused."""
    with connect(url, token) as api:
        try:
            answer = api.revoke_message(job_id)
        except ApiError as exc:
            if as_json or exc.code not in REVOKE_REFUSALS:
                raise
            raise fail(refusal_line(job_id, exc), exc.exit_code) from None
    emit(answer, as_json, lambda a: say(revoke_line(job_id, a)))


def job_alias(job_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Show one message / 查看消息

    Alias of `message show`."""
    show(job_id, as_json, url, token)
