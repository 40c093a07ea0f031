"""The ``broadcast`` command: every process of the product, and the operator's commands.

Process commands: ``api``, ``worker``, ``scheduler``, ``simulator``, ``dev``. Operator commands work on
the store named by ``BROADCAST_REDIS_URL``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="wechat-broadcast: paced, crash-safe WeChat broadcasts through protocol vendors.", no_args_is_help=True
)
dead_letters = typer.Typer(help="Dead letters: list, inspect, replay, delete.", no_args_is_help=True)
app.add_typer(dead_letters, name="dead-letters")
console = Console()
err = Console(stderr=True)


def _settings() -> Any:
    from worker.settings import get_settings

    return get_settings()


def _stores() -> tuple[Any, Any, Any]:
    from worker.accounts import AccountStore
    from worker.connections import redis_client
    from worker.ledger import Ledger

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

    from scheduler.api import create_app
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
            "scheduler.api:create_app", factory=True, host=host, port=port, workers=workers, log_level="warning"
        )
    else:
        uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """A Celery worker consuming send batches (extra arguments go to Celery, e.g. -c 4 -P threads)."""
    from worker.celery_app import app as celery_app

    settings = _settings()
    args = ["worker", "-Q", settings.celery_queue, "--loglevel", settings.log_level, "-E", *ctx.args]
    celery_app.worker_main(args)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flower(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Flower's HTTP port")] = 5555,
    address: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
) -> None:
    """Flower for our workers (basic auth from FLOWER_BASIC_AUTH=user:password; extra args go to Flower)."""
    import os

    from worker.celery_app import app as celery_app

    args = ["flower", f"--port={port}", f"--address={address}", *ctx.args]
    basic_auth = os.environ.get("FLOWER_BASIC_AUTH")
    if basic_auth:
        args.append(f"--basic-auth={basic_auth}")
    celery_app.start(["celery", *args][1:])


@app.command()
def scheduler() -> None:
    """The dispatcher: releases due and ready jobs to workers (one leader; others stand by)."""
    from scheduler.dispatcher import Dispatcher
    from worker.celery_app import app as celery_app
    from worker.logs import setup_logging

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
    workers: Annotated[int, typer.Option(help="worker processes")] = 2,
    demo: Annotated[bool, typer.Option(help="send the demo campaigns once everything is up")] = False,
) -> None:
    """Everything on an embedded default: private Redis, vendor simulator, API, worker, scheduler, Flower."""
    from scheduler.devstack import run_dev

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
    from scheduler.demo import run_demo

    run_demo(url, token.split(",")[0])


@app.command()
def send(
    account: Annotated[str, typer.Option(help="sending account id")],
    to: Annotated[str, typer.Option(help="recipient wxid or …@chatroom")],
    text: Annotated[str | None, typer.Option(help="text to send")] = None,
    message_json: Annotated[str | None, typer.Option("--message", help="message as JSON (any kind)")] = None,
    xml_file: Annotated[Path | None, typer.Option("--appmsg-file", help="send this app-message XML")] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option(help="wait until the job is terminal")] = False,
) -> None:
    """Submit one message."""
    from scheduler.producer import Producer
    from worker.errors import MessageError

    _, ledger, accounts = _stores()
    if text is not None:
        message: dict[str, Any] = {"kind": "text", "text": text}
    elif xml_file is not None:
        message = {"kind": "appmsg", "xml": xml_file.read_text(encoding="utf-8")}
    elif message_json is not None:
        message = json.loads(message_json)
    else:
        raise typer.BadParameter("give --text, --appmsg-file or --message")
    try:
        submitted = Producer(ledger, accounts).submit_message(
            account=account, to=to, message=message, idempotency_key=idempotency_key
        )
    except MessageError as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print_json(data={"id": submitted.id, "status": submitted.status, "created": submitted.created})
    if wait:
        from worker.ledger import TERMINAL

        while (job := ledger.get(submitted.id)) is not None and job.state not in TERMINAL:
            time.sleep(0.2)
        _print_job(ledger, submitted.id)


def _print_job(ledger: Any, job_id: str) -> None:
    job = ledger.get(job_id)
    if job is None:
        err.print(f"no job {job_id}")
        raise typer.Exit(1)
    data = {k: v for k, v in job.fields.items() if k not in ("message",)}
    data["id"] = job_id
    data["history"] = ledger.history(job_id)
    console.print_json(data=data)


@app.command()
def job(job_id: str) -> None:
    """Show one job with its vendor ids and attempt history."""
    _, ledger, _ = _stores()
    _print_job(ledger, job_id)


@dead_letters.command("list")
def dl_list(
    account: str | None = None, campaign: str | None = None, reason: str | None = None, limit: int = 50
) -> None:
    """Dead jobs, newest first."""
    from worker.deadletter import DeadLetters

    _, ledger, _ = _stores()
    items = DeadLetters(ledger).list(account=account, campaign=campaign, reason=reason, limit=limit)
    widest = max((len(item.job.id) for item in items), default=2)
    table = Table()
    table.add_column("id", no_wrap=True, min_width=widest)  # whole ids: operators copy them into replay
    for name in ("account", "to", "reason", "class", "attempts", "error"):
        table.add_column(name, overflow="fold")
    for item in items:
        d = item.to_dict()
        table.add_row(
            d["id"], d["account"], d["to"], d["reason"], d["error_class"], str(d["attempts"]), d["error"][:40]
        )
    console.print(table)
    console.print(f"{len(items)} shown")


@dead_letters.command("show")
def dl_show(job_id: str) -> None:
    """A dead job with its full attempt history."""
    from worker.deadletter import DeadLetters

    _, ledger, _ = _stores()
    entry = DeadLetters(ledger).inspect(job_id)
    if entry is None:
        err.print(f"{job_id} is not a dead letter")
        raise typer.Exit(1)
    console.print_json(data=entry)


@dead_letters.command("replay")
def dl_replay(
    job_ids: list[str],
    force: Annotated[bool, typer.Option(help="also replay unknown outcomes (they may already be sent)")] = False,
) -> None:
    """Put dead jobs back in their queue (same id, same history)."""
    from worker.deadletter import DeadLetters

    _, ledger, _ = _stores()
    result = DeadLetters(ledger).replay(job_ids, force=force)
    console.print_json(data=result)
    if any(v != "ok" for v in result.values()):
        raise typer.Exit(1)


@dead_letters.command("delete")
def dl_delete(job_ids: list[str]) -> None:
    """Remove dead jobs from the dead-letter store."""
    from worker.deadletter import DeadLetters

    _, ledger, _ = _stores()
    store = DeadLetters(ledger)
    console.print_json(data={job_id: store.delete(job_id) for job_id in job_ids})


def main() -> None:
    """Entry point for ``python -m scheduler.cli``."""
    app()


if __name__ == "__main__":
    main()
    sys.exit(0)
