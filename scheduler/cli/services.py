"""The commands that run a process of the product: ``api``, ``worker``, ``flower``, ``scheduler``, ``simulator``,
``dev``, ``demo``.

Registered on the root app by :mod:`scheduler.cli.app`. Uvicorn, Celery and the worker's internals are
imported inside each command, so ``broadcast --help`` and the operator commands never pay for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli.client import DEFAULT_URL, TOKEN_ENV, URL_ENV
from scheduler.cli.render import console, err, markup_safe

#: Context settings of the commands whose unknown arguments go on to Celery or Flower.
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _settings() -> Any:
    from worker.settings import get_settings

    return get_settings()


def api(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Run the HTTP API / 运行 HTTP API

    The producer HTTP API (FastAPI): accounts, messages, campaigns, dead letters, /healthz, /metrics."""
    import uvicorn

    from scheduler.api.app import create_app
    from scheduler.api.protocol import HeadTimedH11Protocol
    from worker.errors import ConfigError
    from worker.logs import setup_logging

    settings = _settings()
    setup_logging(settings.log_level, settings.log_json)
    try:
        application = create_app(settings)
    except ConfigError as exc:
        err.print(f"[red]cannot start the API:[/red] {markup_safe(exc)}")
        raise typer.Exit(2) from None
    # our log line per call is the audit trail and the metrics: no access log; request heads have a deadline
    served = {"host": host, "port": port, "log_level": "warning", "access_log": False, "http": HeadTimedH11Protocol}
    if workers > 1:
        uvicorn.run("scheduler.api.app:create_app", factory=True, workers=workers, **served)  # type: ignore[arg-type]
    else:
        uvicorn.run(application, **served)  # type: ignore[arg-type]


def worker(ctx: typer.Context) -> None:
    """Run workers / 运行发送进程

    Celery workers sending for hundreds of accounts at once: one process per CPU core, each pinned to its
    core (BROADCAST_WORKER_PIN_CPUS) with a threads pool of BROADCAST_WORKER_CONCURRENCY sessions (extra
    arguments go to Celery; -P, -c or -n run one process exactly as given, e.g. -P prefork -c 4)."""
    from worker.runtime.launch import celery_argv, cores_for, processes_for, supervise

    settings = _settings()
    count = processes_for(settings, ctx.args)
    if count > 1:
        raise typer.Exit(supervise(count, ctx.args, cores_for(count, settings)))
    from worker.runtime.celery_app import app as celery_app

    celery_app.worker_main(celery_argv(settings, ctx.args))


def flower(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Flower's HTTP port")] = 5555,
    address: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
) -> None:
    """Run Flower / 运行 Flower 监控

    Flower for our workers (basic auth from FLOWER_BASIC_AUTH=user:password; extra args go to Flower)."""
    import os

    from worker.runtime.celery_app import app as celery_app

    args = ["flower", f"--port={port}", f"--address={address}", *ctx.args]
    basic_auth = os.environ.get("FLOWER_BASIC_AUTH")
    if basic_auth:
        args.append(f"--basic-auth={basic_auth}")
    celery_app.start(["celery", *args][1:])


def scheduler() -> None:
    """Run the dispatcher / 运行调度器

    The dispatcher: releases due and ready jobs to workers (one leader; others stand by)."""
    import signal
    import threading

    from scheduler.dispatch.dispatcher import Dispatcher
    from worker.logs import setup_logging
    from worker.runtime.celery_app import app as celery_app
    from worker.runtime.connections import redis_client
    from worker.store.accounts import AccountStore
    from worker.store.ledger import Ledger

    settings = _settings()
    client = redis_client(settings.redis_url, settings)
    ledger = Ledger(client, settings.key_prefix)
    if settings.accounts_file:  # BROADCAST_ACCOUNTS_FILE is loaded into Redis at start
        keys = settings.secret_keys()
        AccountStore(client, settings.key_prefix, secret_keys=keys, require_key=settings.env != "dev").load_file(
            settings.accounts_file
        )
    setup_logging(settings.log_level, settings.log_json)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    Dispatcher(settings, ledger.redis, celery_app, ledger).run(stop)


def simulator(
    host: str = "127.0.0.1",
    port: int = 8899,
    accounts: Annotated[Path | None, typer.Option(help="TOML file of simulator accounts")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed for ids and fault probabilities")] = None,
    friends: Annotated[
        int, typer.Option(min=0, max=20_000, help="friends each account has (in 4 labels) / 好友数")
    ] = 300,
    groups: Annotated[int, typer.Option(min=0, max=2000, help="groups each account keeps / 群数")] = 8,
) -> None:
    """Run the vendor simulator / 运行模拟器

    The bundled vendor simulator: all four protocols, with fault injection under /_sim."""
    from simulator.server import load_accounts, serve
    from simulator.state import DEMO_ACCOUNTS

    err.print(f"vendor simulator on http://{host}:{port}  (admin: /_sim/sends, /_sim/faults, /_sim/contacts)")
    serve(
        host=host,
        port=port,
        accounts=load_accounts(accounts) if accounts else DEMO_ACCOUNTS,
        seed=seed,
        contacts=(friends, groups),
    )


def dev(
    api_port: Annotated[int, typer.Option(help="API port (0 = any free port)")] = 8000,
    flower_port: Annotated[int, typer.Option(help="Flower port (0 = any free port)")] = 5555,
    sim_port: Annotated[int, typer.Option(help="simulator port (0 = any free port)")] = 8899,
    workers: Annotated[
        int, typer.Option(help="sends the worker holds in flight (default: BROADCAST_WORKER_CONCURRENCY)")
    ] = 0,
    demo: Annotated[bool, typer.Option(help="send the demo campaigns once everything is up")] = False,
) -> None:
    """Run everything locally / 本地一键运行

    Everything on an embedded default: private Redis, vendor simulator, API, worker, scheduler, Flower."""
    from scheduler.devtools.devstack import run_dev

    code = run_dev(
        api_port=api_port, flower_port=flower_port, sim_port=sim_port, workers=workers, demo=demo,
        say=lambda line: console.print(line, highlight=False, soft_wrap=True),
    )  # fmt: skip
    raise typer.Exit(code)


def demo(
    url: Annotated[str, typer.Option(envvar=URL_ENV, help="API base URL")] = DEFAULT_URL,
    token: Annotated[str, typer.Option(envvar=TOKEN_ENV, help="API bearer token")] = "",
) -> None:
    """Send demo campaigns / 发送演示群发

    Send one small demo campaign per message kind and show every delivery's msgIds."""
    from scheduler.devtools.demo import run_demo

    run_demo(url, token.split(",")[0])
