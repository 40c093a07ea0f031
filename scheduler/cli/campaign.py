"""``campaign create|test|start|list|show|watch|pause|resume|cancel|recall|export``: many recipients, one message."""

from __future__ import annotations

import sys
import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli.client import TERMINAL, CampaignAction, Client
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
from scheduler.cli.render import emit, err, fail, kv, markup_safe, print_json, print_table, say, when
from scheduler.cli.waiting import TimeoutOpt, Waiting

app = typer.Typer(
    help="Campaigns / 群发: create from CSV/JSONL (or as a draft: test, then start), watch, pause/resume/cancel, recall, export.",
    no_args_is_help=True,
)
#: ``--auto-pause`` names (the API's ``auto_pause`` fields)
AUTO_PAUSE_FIELDS = {"ratio": float, "window": int, "min_attempts": int, "streak": int}


def _done(counts: dict[str, int]) -> int:
    return sum(int(counts.get(state, 0)) for state in TERMINAL)


def _skipped(counts: dict[str, Any], sep: str) -> str:
    """The skipped deliveries (suppressed or over the recipient cap), shown only when there are some."""
    n = int(counts.get("skipped", 0))
    return f"{n} skipped{sep}" if n else ""


#: A campaign's status in Chinese, as the console names it (``st_…`` in its i18n table).
STATUS_ZH = {
    "draft": "草稿",
    "scheduled": "已预约",
    "active": "发送中",
    "paused": "已暂停",
    "finished": "已完成",
    "cancelled": "已取消",
}


def _status_zh(c: dict[str, Any]) -> str:
    """The status in Chinese (an unknown one as the API names it), saying when it paused itself."""
    status = str(c["status"])
    label = STATUS_ZH.get(status, status)
    if c.get("owner_revoked"):
        return f"{label}（创建它的密钥已被吊销，需管理员恢复或启动）"
    return f"{label}（出错自动暂停，原因见前）" if c.get("pause_reason") else label


def _campaign_line(c: dict[str, Any]) -> str:
    """``campaign c… finished: 8 sent, 2 dead, … of 10``, then the status and the same counts in Chinese."""
    counts = c.get("counts") or {}
    remaining = int(c["total"]) - _done(counts)
    sent, dead, cancelled = counts.get("sent", 0), counts.get("dead", 0), counts.get("cancelled", 0)
    skipped = int(counts.get("skipped", 0))
    return (
        f"campaign {c['id']} {_status(c)}: {sent} sent, {dead} dead, "
        f"{cancelled} cancelled, {_skipped(counts, ', ')}{remaining} remaining of {c['total']}"
        f" / 群发{_status_zh(c)}：已发送 {sent}，死信 {dead}，已取消 {cancelled}，"
        f"{f'已跳过 {skipped}，' if skipped else ''}剩余 {remaining}（共 {c['total']}）"
    )


#: A job state's Chinese name (the console's st_* labels), for the counts of `campaign show`.
STATE_ZH = {"queued": "排队中", "scheduled": "已预约", "sending": "发送中", "retrying": "重试中", "sent": "已发送",
            "dead": "死信", "cancelled": "已取消", "skipped": "已跳过"}  # fmt: skip


#: A watched campaign's counts with their Chinese label, as the progress bar shows them (like RECALL_LABELS).
PROGRESS_LABELS = (("sent", "已发送"), ("dead", "死信"), ("cancelled", "已取消"), ("skipped", "已跳过"))


def _progress_info(counts: dict[str, Any], remaining: int, rate: float, eta: str) -> str:
    """The progress bar's counts: ``已发送 sent 8  死信 dead 2  …  剩余 remaining 0  4.0/s  预计 ETA 0s``."""
    shown = [(name, label) for name, label in PROGRESS_LABELS if name != "skipped" or counts.get("skipped")]
    parts = "  ".join(f"{label} {name} {counts.get(name, 0)}" for name, label in shown)
    return f"{parts}  剩余 remaining {remaining}  {rate:.1f}/s  预计 ETA {eta}"


def _status(c: dict[str, Any]) -> str:
    """The status, with why it paused itself (``paused: error threshold — …``), or that its key was revoked."""
    if c.get("owner_revoked") and not c.get("pause_reason"):  # a draft, or one an operator had paused
        return f"{c['status']} (the key that created it was revoked: an admin may start or resume it)"
    return f"{c['status']}: {c['pause_reason']}" if c.get("pause_reason") else str(c["status"])


def _auto_pause(items: list[str] | None, off: bool) -> dict[str, Any] | None:
    """``--auto-pause NAME=VALUE`` (``off`` switches that check off) or ``--no-auto-pause`` as the API's field."""
    if off:
        return {"ratio": None, "streak": None}
    if not items:
        return None
    out: dict[str, Any] = {}
    for name, raw in pairs("--auto-pause", items).items():
        kind = AUTO_PAUSE_FIELDS.get(name)
        if kind is None:
            raise fail(
                f"--auto-pause: {name!r} is not one of {', '.join(AUTO_PAUSE_FIELDS)} / 未知的自动暂停项 {name!r}"
            )
        try:
            out[name] = None if raw in ("off", "none") else kind(raw)
        except ValueError:
            raise fail(f"--auto-pause {name}: {raw!r} is not a number (or off) / 应为数字或 off") from None
    return out


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _watch(api: Client, campaign_id: str, *, interval: float, as_json: bool, timeout: float = 0) -> None:
    """A live progress bar on stderr until the campaign is finished, or has paused itself (a person must look:
    the reason is printed, exit 3), or ``timeout`` runs out (exit 4); the outcome on stdout. An account that is
    down, paused or held is named once, since its deliveries stand still."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    campaign = api.campaign(campaign_id)
    waiting = Waiting(api, timeout)
    started = time.monotonic()
    first_done = _done(campaign["counts"])
    window: deque[tuple[float, int]] = deque([(started, first_done)])
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"))
    try:
        with Progress(*columns, console=err, refresh_per_second=4) as progress:
            task = progress.add_task(markup_safe(campaign["name"] or campaign_id), total=campaign["total"], info="")
            while True:
                counts = campaign["counts"]
                done, now = _done(counts), time.monotonic()
                window.append((now, done))
                while len(window) > 2 and now - window[1][0] >= 10:  # rate over the last ~10 s
                    window.popleft()
                span = now - window[0][0]
                rate = (done - window[0][1]) / span if span > 0 else 0.0
                remaining = int(campaign["total"]) - done
                eta = _duration(remaining / rate) if rate > 0 and remaining else ("0s" if not remaining else "-")
                info = _progress_info(counts, remaining, rate, eta)
                label = campaign["name"] or campaign_id
                if campaign["status"] not in ("active", "finished"):
                    label += f" [{campaign['status']}]"
                progress.update(task, completed=done, info=info, description=markup_safe(label))
                if campaign["finished"] or campaign.get("pause_reason"):
                    break
                if expired := waiting.expired(f"campaign {campaign_id}"):
                    raise expired
                waiting.look(campaign.get("accounts") or [])
                time.sleep(interval)
                campaign = api.campaign(campaign_id)
    except KeyboardInterrupt:
        raise fail(
            f"stopped watching; campaign {campaign_id} goes on / 已停止查看，群发 {campaign_id} 仍在继续", 130
        ) from None
    elapsed = time.monotonic() - started
    if as_json:
        print_json(campaign)
    else:
        moved = _done(campaign["counts"]) - first_done
        rate, took = moved / elapsed if elapsed > 0 else 0.0, _duration(elapsed)
        pace = f" ({rate:.1f}/s over {took} / 平均 {rate:.1f} 条/秒，用时 {took})" if moved and elapsed > 0 else ""
        say(f"{_campaign_line(campaign)}{pace}")
    if campaign["counts"]["dead"] or campaign.get("pause_reason"):
        raise typer.Exit(3)


def _print_accepted(accepted: dict[str, Any]) -> None:
    dropped = accepted.get("duplicates")
    say(
        f"campaign {accepted['id']} {accepted['status']}: {accepted['total']} recipients"
        + (f" ({dropped} duplicates dropped)" if dropped else "")
        + f" / 群发{STATUS_ZH.get(accepted['status'], accepted['status'])}：{accepted['total']} 位接收人"
        + (f"（已去掉 {dropped} 个重复）" if dropped else "")
    )
    if accepted.get("audience"):
        _print_audience(accepted["audience"])
    if accepted["status"] == "draft":
        say(f"next: broadcast campaign start {accepted['id']} / 下一步：broadcast campaign start {accepted['id']}")


@app.command("create")
def create(
    name: Annotated[str, typer.Option(help="campaign name")],
    recipients: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="CSV (to, account?, vars…) or JSONL ({to, account?, vars?})"),
    ] = None,
    account: Annotated[str | None, typer.Option(help="send every recipient from this account")] = None,
    accounts: Annotated[str | None, typer.Option(help="spread recipients over these accounts: A,B,…")] = None,
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
    send_at: SendAtOpt = None,
    idempotency_key: IdemOpt = None,
    priority: PriorityOpt = "normal",
    draft: Annotated[
        bool, typer.Option("--draft", help="store it and send nothing until `campaign start` (test it first)")
    ] = False,
    auto_pause: Annotated[
        list[str] | None,
        typer.Option(help="NAME=VALUE: ratio, window, min_attempts, streak (off = that check off; repeat)"),
    ] = None,
    no_auto_pause: Annotated[bool, typer.Option("--no-auto-pause", help="never pause on errors")] = False,
    on_cap: Annotated[
        str, typer.Option(help="over the account's recipient_cap: skip (default) or wait until the window allows")
    ] = "skip",
    watch: Annotated[bool, typer.Option("--watch", help="then watch it to the end (see `campaign watch`)")] = False,
    label: Annotated[
        list[str] | None, typer.Option(help="audience: friends with any of these labels (repeat) / 标签（任一）")
    ] = None,
    all_labels: Annotated[
        list[str] | None,
        typer.Option("--all-labels", help="audience: friends with every one of these (repeat) / 同时具有"),
    ] = None,
    exclude_label: Annotated[
        list[str] | None, typer.Option(help="audience: not friends with this label (repeat) / 排除标签")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="audience: never this wxid (repeat) / 排除")] = None,
    friends: Annotated[
        bool | None, typer.Option("--friends/--no-friends", help="audience: the accounts' friends / 好友")
    ] = None,
    chatrooms: Annotated[bool, typer.Option("--chatrooms", help="audience: every group kept / 所有群")] = False,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a campaign / 创建群发

    Create a campaign from a recipients file (.csv, .jsonl), or for the accounts' own contacts (an audience:
    --label, --exclude-label, --chatrooms… against the last `contacts sync`); stored atomically or not at all.
    以文件或账号自己的通讯录（标签、群）创建群发。"""
    spec: dict[str, Any] = {
        "name": name,
        "message": message_body(locals()),
    }
    if account and accounts:
        raise fail("give --account or --accounts, not both / --account 与 --accounts 只能给一个")
    if account:
        spec["account"] = account
    if accounts:
        spec["accounts"] = [a.strip() for a in accounts.split(",") if a.strip()]
    if send_at:
        spec["send_at"] = parse_send_at(send_at)
    if idempotency_key:
        spec["idempotency_key"] = idempotency_key
    spec["priority"] = priority
    if draft:
        spec["draft"] = True
    thresholds = _auto_pause(auto_pause, no_auto_pause)
    if thresholds is not None:
        spec["auto_pause"] = thresholds
    if on_cap not in ("skip", "wait"):
        raise fail(f"--on-cap: {on_cap!r} is not skip or wait / 应为 skip 或 wait")
    if on_cap == "wait":
        spec["on_cap"] = on_cap
    audience = _audience(account, accounts, label, all_labels, exclude_label, exclude, friends, chatrooms)
    if audience is not None:
        spec["audience"] = audience
    elif recipients is None:
        raise fail("give --recipients FILE, or an audience (--label, --chatrooms, --friends…) / 需要接收人文件或受众")
    with connect(url, token) as api:
        accepted = api.create_campaign(spec) if recipients is None else api.upload_campaign(spec, recipients)
        emit(accepted, as_json, _print_accepted)
        if watch and accepted["status"] != "draft":
            _watch(api, accepted["id"], interval=0.5, as_json=as_json)


def _audience(
    account: str | None,
    accounts: str | None,
    label: list[str] | None,
    all_labels: list[str] | None,
    exclude_label: list[str] | None,
    exclude: list[str] | None,
    friends: bool | None,
    chatrooms: bool,
) -> dict[str, Any] | None:
    """The API's ``audience`` from the options (None when no audience option was given)."""
    if not (label or all_labels or exclude_label or exclude or friends is not None or chatrooms):
        return None
    pool = [account] if account else [a.strip() for a in (accounts or "").split(",") if a.strip()]
    if not pool:
        raise fail("an audience needs --account or --accounts (whose contacts) / 受众需要指定账号")
    audience: dict[str, Any] = {"accounts": pool, "chatrooms": chatrooms}
    if friends is not None:
        audience["friends"] = friends
    for name, values in (("labels_any", label), ("labels_all", all_labels), ("exclude_labels", exclude_label),
                         ("exclude", exclude)):  # fmt: skip
        if values:
            audience[name] = values
    return audience


def _vars_text(variables: dict[str, Any] | None) -> str:
    """A recipient's variables as ``name=小王  remark=VIP`` ('-' when none), never a Python dict."""
    return "  ".join(f"{name}={value}" for name, value in (variables or {}).items()) or "-"


def _sync_age(seconds: float) -> str:
    """``3 min ago / 3 分钟前`` (seconds under two minutes, hours past two hours)."""
    if seconds < 120:
        return f"{seconds:.0f} s ago / {seconds:.0f} 秒前"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago / {seconds / 60:.0f} 分钟前"
    return f"{seconds / 3600:.1f} h ago / {seconds / 3600:.1f} 小时前"


def _print_audience(audience: dict[str, Any]) -> None:
    """What an audience resolved to: counts, each account's recipients and sync age, the first rows (a draft)."""
    say(
        f"audience: {audience['total']} recipients, {audience['duplicates']} reached by an earlier account, "
        f"{audience['excluded']} excluded / 受众 {audience['total']} 人，{audience['duplicates']} 人已由前面的账号覆盖，"
        f"排除 {audience['excluded']} 人"
    )
    accounts = audience.get("accounts") or {}
    if accounts:
        rows = [
            [acct, str(info.get("recipients", 0)), _sync_age(float(info.get("sync_age_s") or 0))]
            for acct, info in accounts.items()
        ]
        print_table(
            ["account / 账号", "recipients / 人数", "contacts synced / 通讯录同步于"],
            rows,
            right=("recipients / 人数",),
            title="per account / 各账号",
        )
    sample = audience.get("sample") or []
    if sample:
        print_table(
            ["to / 接收人", "account / 账号", "variables / 变量"],
            [[row["to"], row["account"], _vars_text(row.get("vars"))] for row in sample],
            whole=("to / 接收人",),
            title="first recipients / 前几位接收人",
        )


def _print_campaigns(items: list[dict[str, Any]]) -> None:
    # short headers, no creation time (`campaign show` has it): every column fits in 80 terminal columns
    rows = [
        [
            c["id"], c["name"], c["status"], str(c["total"]), str(c["counts"]["sent"]), str(c["counts"]["dead"]),
            str(c["counts"].get("skipped", 0)), str(c["counts"]["cancelled"]), str(int(c["total"]) - _done(c["counts"])),
        ]
        for c in items
    ]  # fmt: skip
    # skip: suppressed or over the frequency cap (已跳过), so the counts add up to the total
    columns = ["id", "name", "status", "total", "sent", "dead", "skip", "cancel", "left"]
    numbers = ("total", "sent", "dead", "skip", "cancel", "left")
    print_table(columns, rows, right=numbers)
    say(f"{len(items)} shown / 显示 {len(items)} 条")


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 50,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """List campaigns / 列出群发

    Recent campaigns with their progress."""
    with connect(url, token) as api:
        items = api.campaigns(limit=limit)
    emit(items, as_json, _print_campaigns)


def _print_campaign(c: dict[str, Any]) -> None:
    counts = c.get("counts") or {}
    kv(
        [
            ("id", c["id"]),
            ("name", c.get("name")),
            ("status", f"{_status(c)} / {_status_zh(c)}"),
            ("total", f"{c['total']}" + (f" ({c['duplicates']} duplicates dropped)" if c.get("duplicates") else "")),
            ("counts", "  ".join(f"{STATE_ZH.get(state, '')} {state} {n}".lstrip() for state, n in counts.items())),
            ("remaining", int(c["total"]) - _done(counts)),
            ("accounts", ", ".join(c.get("accounts") or [])),
            ("message", (c.get("message") or {}).get("kind")),
            ("priority", c.get("priority")),
            ("created", when(c.get("created"))),
            ("send_at", when(c.get("send_at"))),
            ("auto_pause", _thresholds(c.get("auto_pause") or {})),
            ("tests", _tests(c.get("tests") or {})),
            *([("recall 撤回", _recall_line(c).split(": ", 1)[1])] if c.get("recall") else []),
        ]
    )
    jobs = (c.get("tests") or {}).get("jobs") or []
    if jobs:
        print_table(
            ["test send", "to", "account", "status"], [[t["id"], t["to"], t["account"], t["status"]] for t in jobs]
        )


def _thresholds(ap: dict[str, Any]) -> str:
    share = (
        f"{ap['ratio']:.0%} dead of the last {ap['window']} (from {ap.get('min_attempts')} on)"
        if ap.get("ratio") and ap.get("window")
        else ""
    )
    streak = f"{ap['streak']} dead in a row" if ap.get("streak") else ""
    english = " or ".join(x for x in (share, streak) if x)
    if not english:
        return "off / 关闭"
    share_zh = (
        f"最近 {ap['window']} 条中死信占 {ap['ratio']:.0%}（满 {ap.get('min_attempts')} 条起算）"
        if ap.get("ratio") and ap.get("window")
        else ""
    )
    streak_zh = f"连续 {ap['streak']} 条死信" if ap.get("streak") else ""
    return f"{english} / {'或'.join(x for x in (share_zh, streak_zh) if x)}时自动暂停"


def _tests(t: dict[str, Any]) -> str:
    if not t.get("count"):
        return "none / 无"
    return (
        f"{t['count']} asked, {t.get('sent', 0)} went out, last {when(t.get('last_at'))}"
        f" / 试发 {t['count']} 次，送达 {t.get('sent', 0)} 条"
    )


@app.command("show")
def show(campaign_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Show one campaign / 查看群发

    A campaign's status and per-state counts."""
    with connect(url, token) as api:
        c = api.campaign(campaign_id)
    emit(c, as_json, _print_campaign)


@app.command("watch")
def watch(
    campaign_id: str,
    interval: Annotated[float, typer.Option(help="seconds between polls")] = 0.5,
    timeout: TimeoutOpt = 0,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Watch a campaign / 实时查看进度

    Live progress to the end: sent/dead/cancelled/remaining, rate, ETA; exit 3 if any went
    dead, 4 on --timeout (default: none, a paced campaign may take hours)."""
    with connect(url, token) as api:
        _watch(api, campaign_id, interval=interval, as_json=as_json, timeout=timeout)


def _steer(campaign_id: str, action: CampaignAction, as_json: bool, url: str | None, token: str | None) -> None:
    with connect(url, token) as api:
        c = api.campaign_action(campaign_id, action)
    emit(c, as_json, lambda c: say(_campaign_line(c)))


@app.command("test")
def test(
    campaign_id: str,
    to: Annotated[list[str], typer.Option("--to", help="an internal recipient (wxid); repeat, at most 10")],
    account: Annotated[str | None, typer.Option(help="send from this account (default: the first recipient's)")] = None,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="NAME=VALUE (default: the first recipient's variables)")
    ] = None,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Test-send a campaign / 试发群发

    Send the campaign's message to a few internal recipients first (not counted in the campaign)."""
    body: dict[str, Any] = {"to": to}
    if account:
        body["account"] = account
    if var:
        body["vars"] = pairs("--var", var)
    with connect(url, token) as api:
        answer = api.test_campaign(campaign_id, body)

    def show(a: dict[str, Any]) -> None:
        print_table(
            ["test send", "to", "account", "status"],
            [[t["id"], t["to"], t["account"], t["status"]] for t in a["tests"]],
        )
        n = len(a["tests"])
        say(
            f"campaign {campaign_id}: {n} test send{'' if n == 1 else 's'} queued; see `campaign show {campaign_id}`"
            f" / 已排队 {n} 条测试发送，用 `campaign show {campaign_id}` 查看"
        )

    emit(answer, as_json, show)


@app.command("start")
def start(campaign_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Start a draft / 启动草稿

    Arm a draft: it goes out now, or at its --send-at."""
    _steer(campaign_id, "start", as_json, url, token)


@app.command("pause")
def pause(campaign_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Pause a campaign / 暂停群发

    Hold every unsent job (a send in flight finishes)."""
    _steer(campaign_id, "pause", as_json, url, token)


@app.command("resume")
def resume(campaign_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Resume a campaign / 恢复群发

    Continue where it stopped; nothing sent is sent again."""
    _steer(campaign_id, "resume", as_json, url, token)


@app.command("cancel")
def cancel(campaign_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Cancel a campaign / 取消群发

    Cancel every unsent job at once."""
    _steer(campaign_id, "cancel", as_json, url, token)


#: Recall outcomes with their Chinese label, in the order they are shown.
RECALL_LABELS = (
    ("recalled", "已撤回"),
    ("too_late", "超过撤回时限"),
    ("unsupported", "不支持撤回"),
    ("failed", "撤回失败"),
    ("pending", "待撤回"),
)


def _recall_line(c: dict[str, Any]) -> str:
    recall = c.get("recall") or {}
    parts = "  ".join(f"{label} {name} {recall.get(name, 0)}" for name, label in RECALL_LABELS)
    return f"campaign {c['id']} 撤回 recall: 已申请 asked {recall.get('requested', 0)}  {parts}"


def _recall_settled(c: dict[str, Any]) -> bool:
    """No revoke waits, and no send is still in flight (one finishing now asks for its revoke)."""
    return not (c.get("recall") or {}).get("pending") and not c["counts"].get("sending")


def _watch_recall(api: Client, campaign: dict[str, Any], *, interval: float, timeout: float) -> dict[str, Any]:
    """A progress bar on stderr until no revoke is pending (naming once an account that is down, paused or
    held), or ``timeout`` runs out (exit 4); returns the campaign as last read."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"))
    waiting = Waiting(api, timeout)
    try:
        with Progress(*columns, console=err, refresh_per_second=4) as progress:
            task = progress.add_task(f"撤回 recall {campaign['id']}", total=None, info="")
            while True:
                recall = campaign.get("recall") or {}
                requested = int(recall.get("requested", 0))
                info = "  ".join(f"{label} {name} {recall.get(name, 0)}" for name, label in RECALL_LABELS)
                progress.update(task, total=requested, completed=requested - int(recall.get("pending", 0)), info=info)
                if _recall_settled(campaign):
                    break
                if expired := waiting.expired(f"the recall of {campaign['id']}"):
                    raise expired
                waiting.look(campaign.get("accounts") or [])
                time.sleep(interval)
                campaign = api.campaign(campaign["id"])
    except KeyboardInterrupt:
        raise fail(
            f"stopped watching; the recall of {campaign['id']} goes on / 已停止查看，撤回仍在继续", 130
        ) from None
    return campaign


@app.command("recall")
def recall(
    campaign_id: str,
    window_s: Annotated[
        float | None,
        typer.Option("--window-s", help="revoke only messages this recent (s after the vendor's createTime)"),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="then show progress until no revoke is pending")] = False,
    interval: Annotated[float, typer.Option(help="seconds between polls with --watch")] = 0.5,
    timeout: TimeoutOpt = 0,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Recall a campaign / 撤回群发

    撤回 Stop the campaign and revoke every message it sent that is still inside the revoke window (default
    110 s), each once, on its account ahead of its sends; exit 3 if a revoke failed."""
    with connect(url, token) as api:
        c = api.recall_campaign(campaign_id, window_s=window_s)
        if watch:
            c = _watch_recall(api, c, interval=interval, timeout=timeout)
    emit(c, as_json, lambda c: say(_recall_line(c)))
    if watch and (c.get("recall") or {}).get("failed"):
        raise typer.Exit(3)


@app.command("export")
def export(
    campaign_id: str,
    fmt: Annotated[str, typer.Option("--format", help="csv | jsonl")] = "csv",
    status: Annotated[str | None, typer.Option(help="only deliveries in this state (sent, dead, …)")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", dir_okay=False, help="file (default: stdout)")
    ] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Export deliveries / 导出发送记录

    Every delivery with its vendor ids, streamed as CSV or JSONL."""
    if fmt not in ("csv", "jsonl"):
        raise fail(f"--format: {fmt!r} is not csv or jsonl / 应为 csv 或 jsonl")
    with (
        connect(url, token) as api,
        api.export(campaign_id, "csv" if fmt == "csv" else "jsonl", status=status) as chunks,
    ):
        if output is None:
            try:
                for chunk in chunks:
                    sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
            except BrokenPipeError:  # `… | head`: the reader has what it wanted
                import os

                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        partial = output.with_name(output.name + ".part")  # a broken transfer never looks complete
        written = 0
        with partial.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                written += len(chunk)
        partial.replace(output)
    err.print(
        f"wrote {output} ({written:,} bytes) / 已写入 {output}（{written:,} 字节）", markup=False, highlight=False
    )
