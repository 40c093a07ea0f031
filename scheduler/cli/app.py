"""The ``broadcast`` command: every process of the product, and the operator's commands.

Process commands: ``api``, ``worker``, ``scheduler``, ``simulator``, ``flower``, ``dev``, ``demo``.

Operator commands (``send``, ``message``, ``campaign``, ``dead-letters``, ``accounts``, ``schedules``) talk
only to the HTTP API through :mod:`scheduler.cli.client`, so they run from any machine that reaches it:
``--url`` or ``BROADCAST_API_URL``, ``--token`` or ``BROADCAST_API_TOKEN`` (prefer the variable: a value
on the command line lands in shell history). Tables by default, ``--json`` for scripts; ids are always
printed whole, whatever the terminal width, because operators copy them into the next command.

Exit codes: 0 done; 1 failed (API unreachable, server error, some id not replayed or deleted); 2 the input
was refused (the API's 4xx, naming the field, or a bad option); 3 finished but not everything was sent
(``send --wait``, ``campaign watch``); 130 interrupted.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from scheduler.cli.client import (
    DEFAULT_URL,
    TERMINAL,
    TOKEN_ENV,
    URL_ENV,
    ApiError,
    CampaignAction,
    Client,
    ClientError,
)
from worker.vendors.base import VendorName


def _flags_read_as_flags() -> None:
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


_flags_read_as_flags()

app = typer.Typer(
    help="wechat-broadcast: paced, crash-safe WeChat broadcasts through protocol vendors.",
    no_args_is_help=True,
    epilog=f"Operator commands talk to the HTTP API: --url / {URL_ENV}, --token / {TOKEN_ENV}. "
    "Exit codes: 0 ok, 1 failed, 2 input refused, 3 finished with messages not sent.",
)
message_app = typer.Typer(
    help="One message: show its ids and attempt history, cancel or revoke it.", no_args_is_help=True
)
campaign_app = typer.Typer(
    help="Campaigns: create from CSV/JSONL, watch, pause/resume/cancel, export.", no_args_is_help=True
)
dead_letters = typer.Typer(help="Dead letters: list, inspect, replay, delete.", no_args_is_help=True)
accounts_app = typer.Typer(help="Sending accounts: list, show, create/update, pause, resume.", no_args_is_help=True)
schedules_app = typer.Typer(
    help="Recurring pushes (cron): list, show, create, pause, resume, delete.", no_args_is_help=True
)
app.add_typer(message_app, name="message")
app.add_typer(campaign_app, name="campaign")
app.add_typer(dead_letters, name="dead-letters")
app.add_typer(accounts_app, name="accounts")
app.add_typer(schedules_app, name="schedules")
console = Console()
err = Console(stderr=True)


def _settings() -> Any:
    from worker.settings import get_settings

    return get_settings()


def _stores() -> tuple[Any, Any, Any]:
    from worker.runtime.connections import redis_client
    from worker.store.accounts import AccountStore
    from worker.store.ledger import Ledger

    settings = _settings()
    client = redis_client(settings.redis_url)
    ledger = Ledger(client, settings.key_prefix)
    accounts = AccountStore(client, settings.key_prefix)
    if settings.accounts_file:
        accounts.load_file(settings.accounts_file)
    return settings, ledger, accounts


@app.command()
def api(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """The producer HTTP API (FastAPI): accounts, messages, campaigns, dead letters, /healthz, /metrics."""
    import uvicorn

    from scheduler.api.app import create_app
    from worker.errors import ConfigError
    from worker.logs import setup_logging

    settings = _settings()
    setup_logging(settings.log_level, settings.log_json)
    try:
        application = create_app(settings)
    except ConfigError as exc:
        err.print(f"[red]cannot start the API:[/red] {exc}")
        raise typer.Exit(2) from None
    if workers > 1:
        uvicorn.run(
            "scheduler.api.app:create_app", factory=True, host=host, port=port, workers=workers, log_level="warning"
        )
    else:
        uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """Celery workers sending for hundreds of accounts at once: one process per CPU core, each with a threads
    pool of BROADCAST_WORKER_CONCURRENCY sessions (extra arguments go to Celery; -P, -c or -n run one
    process exactly as given, e.g. -P prefork -c 4)."""
    from worker.runtime.launch import celery_argv, processes_for, supervise

    settings = _settings()
    count = processes_for(settings, ctx.args)
    if count > 1:
        raise typer.Exit(supervise(count, ctx.args))
    from worker.runtime.celery_app import app as celery_app

    celery_app.worker_main(celery_argv(settings, ctx.args))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flower(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Flower's HTTP port")] = 5555,
    address: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
) -> None:
    """Flower for our workers (basic auth from FLOWER_BASIC_AUTH=user:password; extra args go to Flower)."""
    import os

    from worker.runtime.celery_app import app as celery_app

    args = ["flower", f"--port={port}", f"--address={address}", *ctx.args]
    basic_auth = os.environ.get("FLOWER_BASIC_AUTH")
    if basic_auth:
        args.append(f"--basic-auth={basic_auth}")
    celery_app.start(["celery", *args][1:])


@app.command()
def scheduler() -> None:
    """The dispatcher: releases due and ready jobs to workers (one leader; others stand by)."""
    from scheduler.dispatch.dispatcher import Dispatcher
    from worker.logs import setup_logging
    from worker.runtime.celery_app import app as celery_app

    settings, ledger, _ = _stores()
    setup_logging(settings.log_level, settings.log_json)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    Dispatcher(settings, ledger.redis, celery_app, ledger).run(stop)


@app.command()
def simulator(
    host: str = "127.0.0.1",
    port: int = 8899,
    accounts: Annotated[Path | None, typer.Option(help="TOML file of simulator accounts")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed for ids and fault probabilities")] = None,
) -> None:
    """The bundled vendor simulator: all four protocols, with fault injection under /_sim."""
    from simulator.server import load_accounts, serve
    from simulator.state import DEMO_ACCOUNTS

    err.print(f"vendor simulator on http://{host}:{port}  (admin: /_sim/sends, /_sim/faults)")
    serve(host=host, port=port, accounts=load_accounts(accounts) if accounts else DEMO_ACCOUNTS, seed=seed)


@app.command()
def dev(
    api_port: Annotated[int, typer.Option(help="API port (0 = any free port)")] = 8000,
    flower_port: Annotated[int, typer.Option(help="Flower port (0 = any free port)")] = 5555,
    sim_port: Annotated[int, typer.Option(help="simulator port (0 = any free port)")] = 8899,
    workers: Annotated[
        int, typer.Option(help="sends the worker holds in flight (default: BROADCAST_WORKER_CONCURRENCY)")
    ] = 0,
    demo: Annotated[bool, typer.Option(help="send the demo campaigns once everything is up")] = False,
) -> None:
    """Everything on an embedded default: private Redis, vendor simulator, API, worker, scheduler, Flower."""
    from scheduler.devtools.devstack import run_dev

    code = run_dev(
        api_port=api_port, flower_port=flower_port, sim_port=sim_port, workers=workers, demo=demo,
        say=lambda line: console.print(line, highlight=False, soft_wrap=True),
    )  # fmt: skip
    raise typer.Exit(code)


@app.command(name="demo")
def demo_command(
    url: Annotated[str, typer.Option(envvar="BROADCAST_API_URL", help="API base URL")] = "http://127.0.0.1:8000",
    token: Annotated[str, typer.Option(envvar="BROADCAST_API_TOKEN", help="API bearer token")] = "",
) -> None:
    """Send one small demo campaign per message kind and show every delivery's msgIds."""
    from scheduler.devtools.demo import run_demo

    run_demo(url, token.split(",")[0])


# --- operator commands: shared options and helpers -----------------------------------------------------------

Url = Annotated[
    str | None,
    typer.Option("--url", help=f"API base URL (env {URL_ENV}, default {DEFAULT_URL})", rich_help_panel="Connection"),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        help=f"API bearer token (env {TOKEN_ENV}; prefer the env var: a value here lands in shell history)",
        show_default=False,
        rich_help_panel="Connection",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON (for scripts)")]
TextOpt = Annotated[str | None, typer.Option("--text", help="a text message ({placeholders} from vars)")]
AppmsgOpt = Annotated[
    Path | None,
    typer.Option("--appmsg-file", exists=True, dir_okay=False, help="an app-message XML file (link, file, …)"),
]
MessageOpt = Annotated[str | None, typer.Option("--message", help="the message as JSON, any kind")]
SendAtOpt = Annotated[
    str | None, typer.Option("--send-at", help="ISO 8601 time to send at (no offset = this machine's timezone)")
]
IdemOpt = Annotated[str | None, typer.Option("--idempotency-key", help="the same key answers the same job")]
PriorityOpt = Annotated[str, typer.Option("--priority", help="normal | high")]


@contextmanager
def _api(url: str | None, token: str | None) -> Iterator[Client]:
    """A client for one command; a ClientError becomes a one-line message on stderr and an exit code."""
    try:
        with Client(url, token) as client:
            yield client
    except ClientError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _print_json(data: Any) -> None:
    text = json.dumps(data, ensure_ascii=False, indent=2)
    if console.is_terminal:
        console.print_json(text)
    else:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def _say(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def _when(value: Any, timezone: str | None = None) -> str:
    """An epoch (the API's times) as local time, or in ``timezone`` with its name; '-' when unset."""
    if value in (None, "", 0):
        return "-"
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    if timezone:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            return datetime.fromtimestamp(value, ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S %Z")
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return datetime.fromtimestamp(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _print_table(
    columns: list[str],
    rows: list[list[str]],
    *,
    right: tuple[str, ...] = (),
    title: str | None = None,
) -> None:
    """A table that keeps every column at any terminal width: ids are never wrapped or cut (they are copied
    into the next command); other columns keep at least their header's width (rich would otherwise squeeze
    a narrow column down to nothing) and fold long values onto more lines."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title=title, title_justify="left")
    for index, name in enumerate(columns):
        widest = max([len(name), *(console.measure(str(row[index])).maximum for row in rows)])
        if name == "id":
            table.add_column(name, no_wrap=True, min_width=widest)
        else:
            table.add_column(
                name,
                overflow="fold",
                min_width=min(widest, max(len(name), 6)),
                justify="right" if name in right else "left",
            )
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _kv(rows: list[tuple[str, Any]]) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in rows:
        grid.add_row(name, "-" if value in (None, "") else str(value))
    console.print(grid)


def _message_body(text: str | None, appmsg_file: Path | None, message_json: str | None) -> dict[str, Any]:
    options = (("--text", text), ("--appmsg-file", appmsg_file), ("--message", message_json))
    given = [name for name, value in options if value is not None]
    if len(given) != 1:
        raise _fail(
            "give exactly one of --text, --appmsg-file, --message" + (f" (got {', '.join(given)})" if given else "")
        )
    if text is not None:
        return {"kind": "text", "text": text}
    if appmsg_file is not None:
        return {"kind": "appmsg", "xml": appmsg_file.read_text(encoding="utf-8")}
    return _json_option("--message", message_json or "")


def _json_option(option: str, raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise _fail(f"{option}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _fail(f"{option}: must be a JSON object")
    return value


def _send_at(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise _fail(f"--send-at: {raw!r} is not an ISO 8601 time (e.g. 2030-01-31T09:30:00+08:00)") from None
    return (moment if moment.tzinfo else moment.astimezone()).isoformat()


def _pairs(option: str, items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _fail(f"{option}: expected NAME=VALUE, got {item!r}")
        out[name] = value
    return out


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
        "error": errors[-1].get("error") if errors else None,
    }


# --- send and messages -------------------------------------------------------------------------------------


@app.command()
def send(
    account: Annotated[str, typer.Option(help="sending account id")],
    to: Annotated[str, typer.Option(help="recipient wxid or …@chatroom")],
    text: TextOpt = None,
    appmsg_file: AppmsgOpt = None,
    message_json: MessageOpt = None,
    var: Annotated[list[str] | None, typer.Option("--var", help="NAME=VALUE for a {placeholder} (repeat)")] = None,
    send_at: SendAtOpt = None,
    idempotency_key: IdemOpt = None,
    priority: PriorityOpt = "normal",
    wait: Annotated[
        bool, typer.Option("--wait", help="wait until sent, dead or cancelled and print the vendor ids")
    ] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Submit one message; prints {id, status} (with --wait, then the outcome: exit 3 unless sent)."""
    body: dict[str, Any] = {
        "account": account,
        "to": to,
        "message": _message_body(text, appmsg_file, message_json),
        "priority": priority,
    }
    if var:
        body["vars"] = _pairs("--var", var)
    if send_at:
        body["send_at"] = _send_at(send_at)
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    with _api(url, token) as api:
        accepted = api.send_message(body)
        _print_json({"id": accepted["id"], "status": accepted["status"]})
        if not wait:
            return
        job = api.message(accepted["id"])
        try:
            with err.status(f"waiting for {accepted['id']} …"):
                while job["status"] not in TERMINAL:
                    time.sleep(0.2)
                    job = api.message(accepted["id"])
        except KeyboardInterrupt:
            raise _fail(f"stopped waiting; {accepted['id']} is {job['status']} and goes on", 130) from None
    _print_json(_outcome(job))
    if job["status"] != "sent":
        raise typer.Exit(3)


def _show_message(job_id: str, as_json: bool, url: str | None, token: str | None) -> None:
    with _api(url, token) as api:
        job = api.message(job_id)
    if as_json:
        _print_json(job)
        return
    result = job.get("result") or {}
    _kv(
        [
            ("id", job["id"]),
            ("status", job["status"] + (f" ({job['reason']})" if job.get("reason") else "")),
            ("account", job.get("account")),
            ("to", job.get("to")),
            ("campaign", job.get("campaign")),
            ("vendor", job.get("vendor")),
            ("attempts", job.get("attempts")),
            ("msg_id", result.get("msg_id")),
            ("new_msg_id", result.get("new_msg_id")),
            ("client_msg_id", result.get("client_msg_id")),
            ("create_time", result.get("create_time")),
            ("created", _when(job.get("created"))),
            ("sent_at", _when(job.get("sent_at"))),
        ]
    )
    _print_history(job.get("history") or [])


def _print_history(history: list[dict[str, Any]]) -> None:
    if not history:
        return
    rows = [
        [
            str(entry.get("n", "")), _when(entry.get("started")), str(entry.get("outcome", "")),
            str(entry.get("error_class") or ""), str(entry.get("latency_ms") or ""),
            str(entry.get("error") or entry.get("new_msg_id") or ""),
        ]
        for entry in history
    ]  # fmt: skip
    columns = ["n", "started", "outcome", "class", "ms", "error / new_msg_id"]
    _print_table(columns, rows, right=("n", "ms"), title="history")


@message_app.command("show")
def message_show(
    job_id: Annotated[str, typer.Argument(help="message (job) id")],
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """A message with its vendor ids (msgId, newMsgId, createTime) and attempt history."""
    _show_message(job_id, as_json, url, token)


@message_app.command("cancel")
def message_cancel(job_id: str, url: Url = None, token: Token = None) -> None:
    """Cancel a message that has not started sending (scheduled, queued or retrying)."""
    with _api(url, token) as api:
        _print_json(api.cancel_message(job_id))


@message_app.command("revoke")
def message_revoke(job_id: str, url: Url = None, token: Token = None) -> None:
    """Take back a sent message with its exact ids (vendors allow about two minutes)."""
    with _api(url, token) as api:
        _print_json(api.revoke_message(job_id))


@app.command("job", hidden=True)
def job_alias(job_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Alias of `message show`."""
    _show_message(job_id, as_json, url, token)


# --- campaigns ---------------------------------------------------------------------------------------------


def _done(counts: dict[str, int]) -> int:
    return sum(int(counts.get(state, 0)) for state in TERMINAL)


def _campaign_line(c: dict[str, Any]) -> str:
    counts = c.get("counts") or {}
    remaining = int(c["total"]) - _done(counts)
    return (
        f"campaign {c['id']} {c['status']}: {counts.get('sent', 0)} sent, {counts.get('dead', 0)} dead, "
        f"{counts.get('cancelled', 0)} cancelled, {remaining} remaining of {c['total']}"
    )


def _watch(api: Client, campaign_id: str, *, interval: float, as_json: bool) -> None:
    """A live progress bar on stderr until the campaign is finished; the outcome on stdout."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    campaign = api.campaign(campaign_id)
    started = time.monotonic()
    first_done = _done(campaign["counts"])
    window: deque[tuple[float, int]] = deque([(started, first_done)])
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"))
    try:
        with Progress(*columns, console=err, refresh_per_second=4) as progress:
            task = progress.add_task(campaign["name"] or campaign_id, total=campaign["total"], info="")
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
                info = (
                    f"sent {counts['sent']}  dead {counts['dead']}  cancelled {counts['cancelled']}  "
                    f"remaining {remaining}  {rate:.1f}/s  ETA {eta}"
                )
                label = campaign["name"] or campaign_id
                if campaign["status"] not in ("active", "finished"):
                    label += f" [{campaign['status']}]"
                progress.update(task, completed=done, info=info, description=label)
                if campaign["finished"]:
                    break
                time.sleep(interval)
                campaign = api.campaign(campaign_id)
    except KeyboardInterrupt:
        raise _fail(f"stopped watching; campaign {campaign_id} goes on", 130) from None
    elapsed = time.monotonic() - started
    if as_json:
        _print_json(campaign)
    else:
        average = (_done(campaign["counts"]) - first_done) / elapsed if elapsed > 0 else 0.0
        _say(f"{_campaign_line(campaign)} ({average:.1f}/s over {_duration(elapsed)})")
    if campaign["counts"]["dead"]:
        raise typer.Exit(3)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@campaign_app.command("create")
def campaign_create(
    name: Annotated[str, typer.Option(help="campaign name")],
    recipients: Annotated[
        Path,
        typer.Option(exists=True, dir_okay=False, help="CSV (to, account?, vars…) or JSONL ({to, account?, vars?})"),
    ],
    account: Annotated[str | None, typer.Option(help="send every recipient from this account")] = None,
    accounts: Annotated[str | None, typer.Option(help="spread recipients over these accounts: A,B,…")] = None,
    text: TextOpt = None,
    appmsg_file: AppmsgOpt = None,
    message_json: MessageOpt = None,
    send_at: SendAtOpt = None,
    idempotency_key: IdemOpt = None,
    priority: PriorityOpt = "normal",
    watch: Annotated[bool, typer.Option("--watch", help="then watch it to the end (see `campaign watch`)")] = False,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a campaign from a recipients file (.csv, .jsonl); stored atomically or not at all."""
    spec: dict[str, Any] = {"name": name, "message": _message_body(text, appmsg_file, message_json)}
    if account and accounts:
        raise _fail("give --account or --accounts, not both")
    if account:
        spec["account"] = account
    if accounts:
        spec["accounts"] = [a.strip() for a in accounts.split(",") if a.strip()]
    if send_at:
        spec["send_at"] = _send_at(send_at)
    if idempotency_key:
        spec["idempotency_key"] = idempotency_key
    spec["priority"] = priority
    with _api(url, token) as api:
        accepted = api.upload_campaign(spec, recipients)
        if as_json:
            _print_json(accepted)
        else:
            _say(
                f"campaign {accepted['id']} {accepted['status']}: {accepted['total']} recipients"
                + (f" ({accepted['duplicates']} duplicates dropped)" if accepted.get("duplicates") else "")
            )
        if watch:
            _watch(api, accepted["id"], interval=0.5, as_json=as_json)


@campaign_app.command("list")
def campaign_list(
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 50,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Recent campaigns with their progress."""
    with _api(url, token) as api:
        items = api.campaigns(limit=limit)
    if as_json:
        _print_json(items)
        return
    # short headers, no creation time (`campaign show` has it): every column fits in 80 terminal columns
    rows = [
        [
            c["id"], c["name"], c["status"], str(c["total"]), str(c["counts"]["sent"]), str(c["counts"]["dead"]),
            str(c["counts"]["cancelled"]), str(int(c["total"]) - _done(c["counts"])),
        ]
        for c in items
    ]  # fmt: skip
    columns = ["id", "name", "status", "total", "sent", "dead", "cancel", "left"]
    numbers = ("total", "sent", "dead", "cancel", "left")
    _print_table(columns, rows, right=numbers)
    _say(f"{len(items)} shown")


def _show_campaign(c: dict[str, Any]) -> None:
    counts = c.get("counts") or {}
    _kv(
        [
            ("id", c["id"]),
            ("name", c.get("name")),
            ("status", c["status"]),
            ("total", f"{c['total']}" + (f" ({c['duplicates']} duplicates dropped)" if c.get("duplicates") else "")),
            ("counts", "  ".join(f"{state} {n}" for state, n in counts.items())),
            ("remaining", int(c["total"]) - _done(counts)),
            ("accounts", ", ".join(c.get("accounts") or [])),
            ("message", (c.get("message") or {}).get("kind")),
            ("priority", c.get("priority")),
            ("created", _when(c.get("created"))),
            ("send_at", _when(c.get("send_at"))),
        ]
    )


@campaign_app.command("show")
def campaign_show(campaign_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """A campaign's status and per-state counts."""
    with _api(url, token) as api:
        c = api.campaign(campaign_id)
    if as_json:
        _print_json(c)
    else:
        _show_campaign(c)


@campaign_app.command("watch")
def campaign_watch(
    campaign_id: str,
    interval: Annotated[float, typer.Option(help="seconds between polls")] = 0.5,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Live progress (sent/dead/cancelled/remaining, rate, ETA) until it finishes; exit 3 if any went dead."""
    with _api(url, token) as api:
        _watch(api, campaign_id, interval=interval, as_json=as_json)


def _steer(campaign_id: str, action: CampaignAction, as_json: bool, url: str | None, token: str | None) -> None:
    with _api(url, token) as api:
        c = api.campaign_action(campaign_id, action)
    if as_json:
        _print_json(c)
    else:
        _say(_campaign_line(c))


@campaign_app.command("pause")
def campaign_pause(campaign_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Hold every unsent job (a send in flight finishes)."""
    _steer(campaign_id, "pause", as_json, url, token)


@campaign_app.command("resume")
def campaign_resume(campaign_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Continue where it stopped; nothing sent is sent again."""
    _steer(campaign_id, "resume", as_json, url, token)


@campaign_app.command("cancel")
def campaign_cancel(campaign_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Cancel every unsent job at once."""
    _steer(campaign_id, "cancel", as_json, url, token)


@campaign_app.command("export")
def campaign_export(
    campaign_id: str,
    fmt: Annotated[str, typer.Option("--format", help="csv | jsonl")] = "csv",
    status: Annotated[str | None, typer.Option(help="only deliveries in this state (sent, dead, …)")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", dir_okay=False, help="file (default: stdout)")
    ] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Every delivery with its vendor ids, streamed as CSV or JSONL."""
    if fmt not in ("csv", "jsonl"):
        raise _fail(f"--format: {fmt!r} is not csv or jsonl")
    with _api(url, token) as api, api.export(campaign_id, "csv" if fmt == "csv" else "jsonl", status=status) as chunks:
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
    err.print(f"wrote {output} ({written:,} bytes)", markup=False, highlight=False)


# --- dead letters ------------------------------------------------------------------------------------------


@dead_letters.command("list")
def dl_list(
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
    """Dead jobs, newest first, with whole ids (copy them into `replay`)."""
    with _api(url, token) as api:
        answer = api.dead_letters(account=account, campaign=campaign, reason=reason, limit=limit)
    items: list[dict[str, Any]] = answer["dead_letters"]
    if as_json:
        _print_json(items)
        return
    rows = [
        [d["id"], d["account"], d["to"], d["reason"], str(d["attempts"]), (d.get("error") or "")[:60]] for d in items
    ]
    columns = ["id", "account", "to", "reason", "tries", "error"]
    _print_table(columns, rows, right=("tries",))
    _say(f"{len(items)} shown ({answer['total']} in the dead-letter store)")


@dead_letters.command("show")
def dl_show(job_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """A dead job with its reason and full attempt history."""
    with _api(url, token) as api:
        entry = api.dead_letter(job_id)
    if as_json:
        _print_json(entry)
        return
    _kv(
        [
            ("id", entry["id"]),
            ("account", entry.get("account")),
            ("to", entry.get("to")),
            ("campaign", entry.get("campaign")),
            ("reason", entry.get("reason")),
            ("class", entry.get("error_class")),
            ("error", entry.get("error")),
            ("attempts", entry.get("attempts")),
            ("dead_at", _when(entry.get("dead_at"))),
        ]
    )
    _print_history(entry.get("history") or [])


REPLAY_HINTS = {
    "unknown_outcome": "may already be in the chat: add --force to replay anyway",
    "not_dead": "not a dead letter (already replayed, sent or never dead)",
    "missing": "no such message",
}


@dead_letters.command("replay")
def dl_replay(
    job_ids: Annotated[list[str], typer.Argument(help="dead job ids")],
    force: Annotated[
        bool, typer.Option("--force", help="also replay unknown outcomes (they may already be sent)")
    ] = False,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Queue dead jobs again (same id, same history, sent at most once); exit 1 if any did not replay."""
    with _api(url, token) as api:
        results = api.replay(job_ids, force=force)
    ok = sum(1 for v in results.values() if v == "ok")
    if as_json:
        _print_json({"results": results, "replayed": ok})
    else:
        rows = [[job_id, outcome] for job_id, outcome in results.items()]
        _print_table(["id", "result"], rows)
        for outcome in sorted({o for o in results.values() if o in REPLAY_HINTS}):
            _say(f"{outcome}: {REPLAY_HINTS[outcome]}")  # under the table: never dropped on narrow terminals
        _say(f"replayed {ok} of {len(results)}")
    if ok != len(results):
        raise typer.Exit(1)


@dead_letters.command("delete")
def dl_delete(
    job_ids: Annotated[list[str], typer.Argument(help="dead job ids")],
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Drop dead jobs from the store (their record stays, dead); exit 1 if any was not a dead letter."""
    results: dict[str, str] = {}
    with _api(url, token) as api:
        for job_id in job_ids:
            try:
                api.delete_dead_letter(job_id)
                results[job_id] = "deleted"
            except ApiError as exc:
                if exc.status != 404:
                    raise
                results[job_id] = "not_dead_letter"
    if as_json:
        _print_json(results)
    else:
        _print_table(["id", "result"], [[job_id, outcome.replace("_", " ")] for job_id, outcome in results.items()])
    if any(v != "deleted" for v in results.values()):
        raise typer.Exit(1)


# --- accounts ----------------------------------------------------------------------------------------------


def _show_account(a: dict[str, Any]) -> None:
    limits = a.get("limits") or {}
    quiet = limits.get("quiet_hours")
    _kv(
        [
            ("id", a["id"]),
            ("vendor", a["vendor"]),
            ("base_url", a["base_url"]),
            ("instance", a["instance"]),
            ("token", "set" if a.get("token_set") else "not set"),
            ("status", a["status"] + (f" ({a['status_reason']})" if a.get("status_reason") else "")),
            ("since", _when(a.get("status_changed"))),
            # kinds held for the day (GeWe's daily mini-program cap), with the vendor's reason
            (
                "holds",
                "; ".join(f"{k} until {_when(h['until'])}: {h['reason']}" for k, h in (a.get("holds") or {}).items())
                or "none",
            ),
            ("per_minute", limits.get("per_minute")),
            ("min_interval", f"{limits.get('min_interval_s')} s + jitter {limits.get('jitter_s')} s"),
            ("group_interval", f"{limits.get('group_min_interval_s')} s + jitter {limits.get('group_jitter_s')} s"),
            ("daily_cap", limits.get("daily_cap") or "none"),
            ("quiet_hours", f"{quiet['start']}-{quiet['end']}" if quiet else "none"),
            ("timezone", limits.get("timezone")),
            ("options", ", ".join(f"{k}={v}" for k, v in (a.get("options") or {}).items())),
        ]
    )


@accounts_app.command("list")
def accounts_list(as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Every account with its status (active, paused, down) and why."""
    with _api(url, token) as api:
        items = api.accounts()
    if as_json:
        _print_json(items)
        return
    rows = [
        [
            a["id"], a["vendor"], a["instance"], a["status"], str((a.get("limits") or {}).get("per_minute", "")),
            "set" if a.get("token_set") else "-", a.get("status_reason") or "",
        ]
        for a in sorted(items, key=lambda a: str(a["id"]))
    ]  # fmt: skip
    columns = ["id", "vendor", "instance", "status", "per_min", "token", "reason"]
    _print_table(columns, rows, right=("per_min",))


@accounts_app.command("show")
def accounts_show(account_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """One account: connection (token never shown), limits, status."""
    with _api(url, token) as api:
        a = api.account(account_id)
    if as_json:
        _print_json(a)
    else:
        _show_account(a)


@accounts_app.command("put")
def accounts_put(
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
    option: Annotated[list[str] | None, typer.Option(help="vendor option NAME=VALUE (repeat)")] = None,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create an account, or update the given fields of an existing one (the rest, token included, kept;
    a new --base-url or --vendor needs the token again)."""
    given = {"--token-env": token_env, "--token-stdin": token_stdin, "--vendor-token": vendor_token}
    sources = [name for name, value in given.items() if value]
    if len(sources) > 1:
        raise _fail(f"give one of {', '.join(sources)}")
    secret: str | None = vendor_token
    if token_env:
        import os

        if token_env not in os.environ:
            raise _fail(f"--token-env: the environment variable {token_env} is not set")
        secret = os.environ[token_env]
    elif token_stdin:
        secret = sys.stdin.readline().strip()
        if not secret:
            raise _fail("--token-stdin: stdin gave no token")
    limits: dict[str, Any] = {}
    for name, value in (
        ("per_minute", per_minute), ("min_interval_s", min_interval), ("jitter_s", jitter),
        ("group_min_interval_s", group_min_interval), ("group_jitter_s", group_jitter), ("daily_cap", daily_cap),
        ("timezone", timezone),
    ):  # fmt: skip
        if value is not None:
            limits[name] = value
    if quiet_hours is not None:
        if quiet_hours.lower() in ("none", "off", ""):
            limits["quiet_hours"] = None
        else:
            start, sep, end = quiet_hours.partition("-")
            if not sep:
                raise _fail(f"--quiet-hours: expected HH:MM-HH:MM or none, got {quiet_hours!r}")
            limits["quiet_hours"] = {"start": start.strip(), "end": end.strip()}
    with _api(url, token) as api:
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
                raise _fail(f"{account_id!r} is a new account: give {', '.join(missing)}")
            if limits:
                spec["limits"] = limits
        for name, value in (("vendor", vendor), ("base_url", base_url), ("instance", instance)):
            if value is not None:
                spec[name] = value
        if option:
            spec["options"] = {**spec.get("options", {}), **_pairs("--option", option)}
        if secret is not None:
            spec["token"] = secret
        saved = api.put_account(account_id, spec)
    if as_json:
        _print_json(saved)
    else:
        _say(f"account {saved['id']} {'updated' if existing else 'created'}")
        _show_account(saved)


@accounts_app.command("pause")
def accounts_pause(account_id: str, url: Url = None, token: Token = None) -> None:
    """Stop sending from an account; its jobs wait."""
    with _api(url, token) as api:
        a = api.pause_account(account_id)
    _say(f"account {a['id']} {a['status']}")


@accounts_app.command("resume")
def accounts_resume(
    account_id: str,
    check_online: Annotated[bool, typer.Option(help="ask the vendor first whether the account is online")] = True,
    url: Url = None,
    token: Token = None,
) -> None:
    """Send from an account again (by default after the vendor confirms it is online)."""
    with _api(url, token) as api:
        a = api.resume_account(account_id, check_online=check_online)
    _say(f"account {a['id']} {a['status']}")


# --- recurring schedules -----------------------------------------------------------------------------------


def _schedule_kind(s: dict[str, Any]) -> str:
    if s.get("kind"):
        return str(s["kind"])
    return "campaign" if s.get("campaign") else "message" if s.get("message") else "-"


def _schedule_payload(s: dict[str, Any]) -> Any:
    """What the schedule sends (the API answers it as ``template``; ``message``/``campaign`` also read)."""
    return s.get("template") or s.get("campaign") or s.get("message")


@schedules_app.command("list")
def schedules_list(as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Every recurring schedule with its next run."""
    with _api(url, token) as api:
        items = api.schedules()
    if as_json:
        _print_json(items)
        return
    rows = [
        [
            s["id"], s.get("name") or "", s.get("cron", ""), s.get("timezone", ""), _schedule_kind(s),
            "paused" if s.get("paused") else _when(s.get("next_at"), s.get("timezone")),
        ]
        for s in items
    ]  # fmt: skip
    _print_table(["id", "name", "cron", "timezone", "kind", "next_at"], rows)
    _say(f"{len(items)} shown")


@schedules_app.command("show")
def schedules_show(schedule_id: str, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """One schedule with what it sends."""
    with _api(url, token) as api:
        s = api.schedule(schedule_id)
    if as_json:
        _print_json(s)
        return
    payload = _schedule_payload(s)
    rows: list[tuple[str, Any]] = [("id", s["id"]), ("kind", _schedule_kind(s))]
    times = {"next_at", "created", "last_fired"}
    for key, value in s.items():  # whatever else the API tells: times in the schedule's timezone
        if key in ("id", "kind", "template", "campaign", "message"):
            continue
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        rows.append((key, _when(value, s.get("timezone")) if key in times or key.endswith("_at") else value))
    if payload is not None:
        rows.append(("sends", json.dumps(payload, ensure_ascii=False)))
    _kv(rows)


@schedules_app.command("create")
def schedules_create(
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
    """Send a message or a campaign on a cron schedule."""
    if (message_json is None) == (campaign_json is None):
        raise _fail("give exactly one of --message-json, --campaign-json")
    body: dict[str, Any] = {"cron": cron}
    if timezone:
        body["timezone"] = timezone
    if name:
        body["name"] = name
    if message_json is not None:
        body["message"] = _json_option("--message-json", message_json)
    else:
        body["campaign"] = _json_option("--campaign-json", campaign_json or "")
    with _api(url, token) as api:
        s = api.create_schedule(body)
    if as_json:
        _print_json(s)
    else:
        next_at = _when(s.get("next_at"), s.get("timezone"))
        _say(f"schedule {s['id']}: {s.get('cron')} ({s.get('timezone')}), next at {next_at}")


@schedules_app.command("pause")
def schedules_pause(schedule_id: str, url: Url = None, token: Token = None) -> None:
    """Stop a schedule firing, keeping it (resume picks up at the next cron time)."""
    with _api(url, token) as api:
        api.steer_schedule(schedule_id, "pause")
    _say(f"schedule {schedule_id} paused")


@schedules_app.command("resume")
def schedules_resume(schedule_id: str, url: Url = None, token: Token = None) -> None:
    """Fire a paused schedule again from its next cron time (missed times are skipped)."""
    with _api(url, token) as api:
        s = api.steer_schedule(schedule_id, "resume")
    _say(f"schedule {schedule_id} resumed, next at {_when(s.get('next_at'), s.get('timezone'))}")


@schedules_app.command("delete")
def schedules_delete(schedule_id: str, url: Url = None, token: Token = None) -> None:
    """Stop and remove a schedule (what it already sent stays on the books)."""
    with _api(url, token) as api:
        api.delete_schedule(schedule_id)
    _say(f"schedule {schedule_id} deleted")


def main() -> None:
    """Entry point for ``python -m scheduler.cli.app``."""
    app()


if __name__ == "__main__":
    main()
    sys.exit(0)
