"""What the operator commands take: the connection options, the message options, and their parsing.

Every operator command reaches the API through :func:`connect`, so a failed request always ends the same
way: one line on stderr and the client's exit code (1 failed, 2 refused).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli.client import DEFAULT_URL, TOKEN_ENV, URL_ENV, Client, ClientError
from scheduler.cli.render import fail

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
def connect(url: str | None, token: str | None) -> Iterator[Client]:
    """A client for one command; a ClientError becomes a one-line message on stderr and an exit code."""
    try:
        with Client(url, token) as client:
            yield client
    except ClientError as exc:
        raise fail(str(exc), exc.exit_code) from None


def message_body(text: str | None, appmsg_file: Path | None, message_json: str | None) -> dict[str, Any]:
    """The message of ``--text``, ``--appmsg-file`` or ``--message``: exactly one of them."""
    options = (("--text", text), ("--appmsg-file", appmsg_file), ("--message", message_json))
    given = [name for name, value in options if value is not None]
    if len(given) != 1:
        raise fail(
            "give exactly one of --text, --appmsg-file, --message" + (f" (got {', '.join(given)})" if given else "")
        )
    if text is not None:
        return {"kind": "text", "text": text}
    if appmsg_file is not None:
        return {"kind": "appmsg", "xml": appmsg_file.read_text(encoding="utf-8")}
    return json_option("--message", message_json or "")


def json_option(option: str, raw: str) -> dict[str, Any]:
    """An option holding a JSON object; anything else is refused naming the option."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise fail(f"{option}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise fail(f"{option}: must be a JSON object")
    return value


def parse_send_at(raw: str | None) -> str | None:
    """``--send-at`` as ISO 8601 with an offset (no offset given = this machine's timezone)."""
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise fail(f"--send-at: {raw!r} is not an ISO 8601 time (e.g. 2030-01-31T09:30:00+08:00)") from None
    return (moment if moment.tzinfo else moment.astimezone()).isoformat()


def pairs(option: str, items: list[str]) -> dict[str, str]:
    """Repeated ``NAME=VALUE`` options as a dict."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise fail(f"{option}: expected NAME=VALUE, got {item!r}")
        out[name] = value
    return out
