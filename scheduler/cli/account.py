"""``accounts list|show|put|pause|resume``: the sending accounts; a vendor token goes in, never comes out."""

from __future__ import annotations

import sys
from typing import Annotated, Any, get_args

import typer

from scheduler.cli.client import ApiError
from scheduler.cli.options import AsJson, Token, Url, connect, pairs
from scheduler.cli.render import emit, fail, kv, print_json, print_table, say, when
from worker.vendors.base import VendorName

app = typer.Typer(help="Sending accounts / 发送账号: list, show, create/update, pause, resume.", no_args_is_help=True)


def _print_account(a: dict[str, Any]) -> None:
    limits = a.get("limits") or {}
    quiet = limits.get("quiet_hours")
    kv(
        [
            ("id", a["id"]),
            ("vendor", a["vendor"]),
            ("base_url", a["base_url"]),
            ("instance", a["instance"]),
            ("token", "set" if a.get("token_set") else "not set"),
            ("status", a["status"] + (f" ({a['status_reason']})" if a.get("status_reason") else "")),
            ("since", when(a.get("status_changed"))),
            # kinds held for the day (GeWe's daily mini-program cap), with the vendor's reason
            (
                "holds",
                "; ".join(f"{k} until {when(h['until'])}: {h['reason']}" for k, h in (a.get("holds") or {}).items())
                or "none",
            ),
            ("per_minute", limits.get("per_minute")),
            ("min_interval", f"{limits.get('min_interval_s')} s + jitter {limits.get('jitter_s')} s"),
            ("group_interval", f"{limits.get('group_min_interval_s')} s + jitter {limits.get('group_jitter_s')} s"),
            ("daily_cap", limits.get("daily_cap") or "none"),
            ("quiet_hours", f"{quiet['start']}-{quiet['end']}" if quiet else "none"),
            ("timezone", limits.get("timezone")),
            # throttling answers in a row before the account pauses itself ("default": the server's setting)
            ("pause_after_throttles", _throttle_limit(limits.get("pause_after_throttles"))),
            ("recipient_cap", _cap(limits.get("recipient_cap"))),
            ("callback", "set" if a.get("callback_set") else "not set (broadcast accounts callback)"),
            ("options", ", ".join(f"{k}={v}" for k, v in (a.get("options") or {}).items())),
        ]
    )


def _recipient_cap(text: str) -> dict[str, float] | None:
    """``N/H`` → ``{"max": N, "window_h": H}``; ``none`` → no cap."""
    if text.strip().lower() == "none":
        return None
    most, _, hours = text.partition("/")
    try:
        return {"max": int(most), "window_h": float(hours)}
    except ValueError:
        raise fail(
            f"--recipient-cap: {text!r} is not N/H (e.g. 1/24) or 'none' / 应为“条数/小时”（如 1/24）或 none"
        ) from None


def _cap(cap: dict[str, Any] | None) -> str:
    """``recipient_cap`` as an operator reads it (每人每 H 小时最多 N 条群发)."""
    return f"{cap['max']} per recipient per {cap['window_h']:g} h" if cap else "none"


def _throttle_limit(value: Any) -> str:
    if value is None:
        return "default (BROADCAST_PAUSE_AFTER_THROTTLES)"
    return "never" if value == 0 else str(value)


def _print_accounts(items: list[dict[str, Any]]) -> None:
    rows = [
        [
            a["id"], a["vendor"], a["instance"], a["status"], str((a.get("limits") or {}).get("per_minute", "")),
            "set" if a.get("token_set") else "-", a.get("status_reason") or "",
        ]
        for a in sorted(items, key=lambda a: str(a["id"]))
    ]  # fmt: skip
    columns = ["id", "vendor", "instance", "status", "per_min", "token", "reason"]
    print_table(columns, rows, right=("per_min",))


@app.command("list")
def list_(as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """List accounts / 列出账号

    Every account with its status (active, paused, down) and why."""
    with connect(url, token) as api:
        items = api.accounts()
    emit(items, as_json, _print_accounts)


@app.command("show")
def show(account_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Show one account / 查看账号

    One account: connection (token never shown), limits, status."""
    with connect(url, token) as api:
        a = api.account(account_id)
    emit(a, as_json, _print_account)


def _vendor_token(token_env: str | None, token_stdin: bool, vendor_token: str | None) -> str | None:
    """The vendor token from at most one of its three sources; None keeps the stored one."""
    given = {"--token-env": token_env, "--token-stdin": token_stdin, "--vendor-token": vendor_token}
    sources = [name for name, value in given.items() if value]
    if len(sources) > 1:
        raise fail(f"give one of {', '.join(sources)} / 请给出其中之一")
    if token_env:
        import os

        if token_env not in os.environ:
            raise fail(f"--token-env: the environment variable {token_env} is not set / 环境变量 {token_env} 未设置")
        return os.environ[token_env]
    if token_stdin:
        secret = sys.stdin.readline().strip()
        if not secret:
            raise fail("--token-stdin: stdin gave no token / 标准输入中没有 token")
        return secret
    return vendor_token


def _quiet_hours(raw: str) -> dict[str, str] | None:
    if raw.lower() in ("none", "off", ""):
        return None
    start, sep, end = raw.partition("-")
    if not sep:
        raise fail(f"--quiet-hours: expected HH:MM-HH:MM or none, got {raw!r} / 应为 HH:MM-HH:MM 或 none")
    return {"start": start.strip(), "end": end.strip()}


@app.command("put")
def put(
    account_id: Annotated[str, typer.Argument(help="account id (letters, digits, _ . @ -)")],
    vendor: Annotated[str | None, typer.Option(help=" | ".join(get_args(VendorName)))] = None,
    base_url: Annotated[str | None, typer.Option(help="the vendor's API base URL")] = None,
    instance: Annotated[str | None, typer.Option(help="GeWe appId / E云 wId / MagicCgi wxid")] = None,
    token_env: Annotated[
        str | None, typer.Option(help="read the vendor token from this environment variable", show_default=False)
    ] = None,
    token_stdin: Annotated[
        bool, typer.Option("--token-stdin", help="read the vendor token from stdin (first line)")
    ] = False,
    vendor_token: Annotated[
        str | None,
        typer.Option(help="the vendor token itself (lands in shell history: prefer --token-env/--token-stdin)"),
    ] = None,
    per_minute: Annotated[int | None, typer.Option(help="sends a minute (0 = unpaced)")] = None,
    min_interval: Annotated[float | None, typer.Option(help="seconds between private sends")] = None,
    jitter: Annotated[float | None, typer.Option(help="random extra seconds up to this")] = None,
    group_min_interval: Annotated[float | None, typer.Option(help="seconds between group sends")] = None,
    group_jitter: Annotated[float | None, typer.Option(help="random extra for group sends")] = None,
    daily_cap: Annotated[int | None, typer.Option(help="sends a day (0 = no cap)")] = None,
    quiet_hours: Annotated[str | None, typer.Option(help="HH:MM-HH:MM without sends, or 'none'")] = None,
    timezone: Annotated[str | None, typer.Option(help="timezone of the daily cap and quiet hours")] = None,
    pause_after_throttles: Annotated[
        int | None, typer.Option(help="pause the account after this many throttling answers in a row (0 = never)")
    ] = None,
    recipient_cap: Annotated[
        str | None,
        typer.Option(help="at most N campaign messages per recipient in H hours: N/H (e.g. 1/24), or 'none'"),
    ] = None,
    option: Annotated[list[str] | None, typer.Option(help="vendor option NAME=VALUE (repeat)")] = None,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create or update an account / 创建或更新账号

    Create an account, or update the given fields of an existing one (the rest, token included, kept;
    a new --base-url or --vendor needs the token again)."""
    secret = _vendor_token(token_env, token_stdin, vendor_token)
    limits: dict[str, Any] = {}
    for name, value in (
        ("per_minute", per_minute), ("min_interval_s", min_interval), ("jitter_s", jitter),
        ("group_min_interval_s", group_min_interval), ("group_jitter_s", group_jitter), ("daily_cap", daily_cap),
        ("timezone", timezone), ("pause_after_throttles", pause_after_throttles),
    ):  # fmt: skip
        if value is not None:
            limits[name] = value
    if quiet_hours is not None:
        limits["quiet_hours"] = _quiet_hours(quiet_hours)
    if recipient_cap is not None:
        limits["recipient_cap"] = _recipient_cap(recipient_cap)
    with connect(url, token) as api:
        try:
            existing: dict[str, Any] | None = api.account(account_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
            existing = None
        spec: dict[str, Any] = {}
        if existing is not None:
            spec = {k: existing[k] for k in ("vendor", "base_url", "instance", "options")}
            spec["limits"] = {**existing["limits"], **limits}
        else:
            missing = [
                o for o, v in (("--vendor", vendor), ("--base-url", base_url), ("--instance", instance)) if not v
            ]
            if missing:
                raise fail(
                    f"{account_id!r} is a new account: give {', '.join(missing)} / 新账号需要给出 {', '.join(missing)}"
                )
            if limits:
                spec["limits"] = limits
        for name, value in (("vendor", vendor), ("base_url", base_url), ("instance", instance)):
            if value is not None:
                spec[name] = value
        if option:
            spec["options"] = {**spec.get("options", {}), **pairs("--option", option)}
        if secret is not None:
            spec["token"] = secret
        saved = api.put_account(account_id, spec)
    if as_json:
        print_json(saved)
    else:
        say(
            f"account {saved['id']} {'updated' if existing else 'created'} / 账号 {saved['id']} 已{'更新' if existing else '创建'}"
        )
        _print_account(saved)


#: An account's status in Chinese, as the console names it.
ACCOUNT_STATUS_ZH = {"active": "正常", "paused": "已暂停", "down": "掉线"}


def _status_line(a: dict[str, Any]) -> str:
    """``account shop paused / 账号 shop 已暂停``."""
    status = str(a["status"])
    return f"account {a['id']} {status} / 账号 {a['id']} {ACCOUNT_STATUS_ZH.get(status, status)}"


@app.command("pause")
def pause(account_id: str, url: Url = None, token: Token = None) -> None:
    """Pause an account / 暂停账号

    Stop sending from an account; its jobs wait."""
    with connect(url, token) as api:
        a = api.pause_account(account_id)
    say(_status_line(a))


@app.command("resume")
def resume(
    account_id: str,
    check_online: Annotated[bool, typer.Option(help="ask the vendor first whether the account is online")] = True,
    url: Url = None,
    token: Token = None,
) -> None:
    """Resume an account / 恢复账号

    Send from an account again (by default after the vendor confirms it is online)."""
    with connect(url, token) as api:
        a = api.resume_account(account_id, check_online=check_online)
    say(_status_line(a))


@app.command()
def callback(
    account_id: Annotated[str, typer.Argument(metavar="ACCOUNT")],
    register: Annotated[bool, typer.Option("--register", help="also set the URL at the vendor")] = False,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="replace an existing key (the old URL stops working at once)")
    ] = False,
    public_url: Annotated[
        str | None, typer.Option(help="the address vendors reach the API at (default: BROADCAST_PUBLIC_URL)")
    ] = None,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Set up the vendor callback / 设置回调

    Create the account's callback key and print the URL for the vendor (shown once). If it already has
    one, show that and change nothing; --rotate makes a new one (the old URL stops working at once, so
    register it again with --register or update it at the vendor) / 生成回调地址；已有时只显示状态，
    --rotate 才换新密钥（旧地址立即失效，需 --register 重新设置或在服务商处更新）。"""
    with connect(url, token) as api:
        try:
            answer = api.account_callback(account_id, register=register, rotate=rotate, public_url=public_url)
        except ApiError as exc:
            if exc.code != "callback_exists":
                raise
            if as_json:
                print_json({"account": account_id, "callback_set": True, "rotated": False})
            else:
                say(f"account {account_id}: callback set / 回调已设置 (unchanged / 未更改)")
                say(
                    "The URL cannot be shown again: only its key's hash is kept. To make a new one, run"
                    f" 'broadcast accounts callback {account_id} --rotate --register' (the old URL stops working"
                    " at once) / 地址无法再次显示（只保存密钥的哈希）。如需新地址，请运行"
                    f" 'broadcast accounts callback {account_id} --rotate --register'：旧地址会立即失效；"
                    "不加 --register 时，请自行到服务商处更新回调地址。"
                )
            if register:
                # the asked-for registration did not happen (exit 2: the request was refused, as docs/cli.md
                # says); a script that only wants the callback set can run it without --register
                raise typer.Exit(2) from None
            return
    if as_json:
        print_json(answer)
        return
    say(answer["url"])
    if answer.get("path_only"):
        say(
            "(no public URL known: put your API's public address in front, or pass --public-url)"
            " / （不知道公网地址：请在前面加上 API 的公网地址，或用 --public-url 指定）"
        )
    if answer.get("registered"):
        say("registered with the vendor / 已在服务商处设置回调")
