"""What the operator commands take: the connection options, the message options, and their parsing.

Every operator command reaches the API through :func:`connect`, so a failed request always ends the same
way: one line on stderr and the client's exit code (1 failed, 2 refused).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
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
MessageOpt = Annotated[
    str | None,
    typer.Option("--message", help='the message as JSON, any kind (a sequence: {"kind": "sequence", "parts": […]})'),
]
MessageFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--message-file", exists=True, dir_okay=False, help="the message as a JSON file, any kind (sequences)"
    ),
]
ImageOpt = Annotated[str | None, typer.Option("--image", help="an image URL the vendor fetches (GeWe, E云)")]
FileOpt = Annotated[
    str | None, typer.Option("--file", help="a file URL the vendor fetches (GeWe, E云); with --file-name")
]
FileNameOpt = Annotated[str | None, typer.Option("--file-name", help="the file name the recipient sees (报价单.pdf)")]
LinkOpt = Annotated[
    str | None, typer.Option("--link", help="a link card's URL (every vendor); with --title, --thumb, --description")
]
TitleOpt = Annotated[str | None, typer.Option("--title", help="the link card's title")]
DescriptionOpt = Annotated[str | None, typer.Option("--description", help="the link card's description")]
ThumbOpt = Annotated[str | None, typer.Option("--thumb", help="the link card's picture URL (png/jpg under 50 KB)")]
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


def message_body(options: Mapping[str, Any]) -> dict[str, Any]:
    """The message of exactly one of ``--text``, ``--appmsg-file``, ``--message``, ``--message-file``,
    ``--image``, ``--file`` (with ``--file-name``) or ``--link`` (with ``--title`` and ``--thumb``).
    ``options``: the command's parameters (its ``locals()``), which declare these options by the same names."""
    text: str | None = options.get("text")
    appmsg_file: Path | None = options.get("appmsg_file")
    message_json: str | None = options.get("message_json")
    message_file: Path | None = options.get("message_file")
    image: str | None = options.get("image")
    file: str | None = options.get("file")
    file_name: str | None = options.get("file_name")
    link: str | None = options.get("link")
    title: str | None = options.get("title")
    description: str | None = options.get("description")
    thumb: str | None = options.get("thumb")
    choices = (
        ("--text", text), ("--appmsg-file", appmsg_file), ("--message", message_json),
        ("--message-file", message_file), ("--image", image), ("--file", file), ("--link", link),
    )  # fmt: skip
    given = [name for name, value in choices if value is not None]
    if len(given) != 1:
        names = ", ".join(name for name, _ in choices)
        raise fail(
            f"give exactly one of {names}"
            + (f" (got {', '.join(given)})" if given else "")
            + " / 消息选项须且只能给一个"
        )
    if (file_name is not None) != (file is not None):
        raise fail(
            "--file and --file-name go together (the URL and the name the recipient sees)"
            " / --file 与 --file-name 须一起给出（文件地址和接收人看到的文件名）"
        )
    if link is None and (title is not None or description is not None or thumb is not None):
        raise fail("--title, --description and --thumb describe a --link card / 这些选项只用于 --link 链接卡片")
    if text is not None:
        return {"kind": "text", "text": text}
    if appmsg_file is not None:
        return {"kind": "appmsg", "xml": appmsg_file.read_text(encoding="utf-8")}
    if image is not None:
        return {"kind": "image", "url": image}
    if file is not None:
        return {"kind": "file", "url": file, "name": file_name}
    if link is not None:
        if title is None or thumb is None:
            raise fail(
                "--link needs --title and --thumb (the card's title and picture) / 链接卡片需要 --title 和 --thumb"
            )
        return {"kind": "link", "url": link, "title": title, "thumb_url": thumb, "description": description or ""}
    if message_file is not None:
        return json_option("--message-file", message_file.read_text(encoding="utf-8"))
    return json_option("--message", message_json or "")


def json_option(option: str, raw: str) -> dict[str, Any]:
    """An option holding a JSON object; anything else is refused naming the option."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise fail(f"{option}: not valid JSON ({exc}) / 不是有效的 JSON") from None
    if not isinstance(value, dict):
        raise fail(f"{option}: must be a JSON object / 须为 JSON 对象")
    return value


def parse_send_at(raw: str | None) -> str | None:
    """``--send-at`` as ISO 8601 with an offset (no offset given = this machine's timezone)."""
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise fail(
            f"--send-at: {raw!r} is not an ISO 8601 time (e.g. 2030-01-31T09:30:00+08:00)"
            " / 不是 ISO 8601 时间（如 2030-01-31T09:30:00+08:00）"
        ) from None
    return (moment if moment.tzinfo else moment.astimezone()).isoformat()


def pairs(option: str, items: list[str]) -> dict[str, str]:
    """Repeated ``NAME=VALUE`` options as a dict."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise fail(f"{option}: expected NAME=VALUE, got {item!r} / 应为 名称=值")
        out[name] = value
    return out
