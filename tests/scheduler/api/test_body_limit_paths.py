"""The upload size limit belongs to the upload route alone, by exact path (not to any path ending in /upload)."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message, Receive, Scope, Send

from scheduler.api.body_limit import MAX_JSON_BODY, MAX_UPLOAD_BODY, BodyLimit

BIG = MAX_JSON_BODY + 1  # over the JSON limit, under the upload limit


def _call(path: str, method: str) -> tuple[list[Message], bool]:
    called = False

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal called
        called = True
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-length", str(BIG).encode()), (b"content-type", b"application/json")]
    if path.endswith("/upload") and method == "POST":
        headers[1] = (b"content-type", b"multipart/form-data; boundary=x")
    scope: Scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(BodyLimit(app)(scope, receive, send))
    return sent, called


@pytest.mark.parametrize(
    ("path", "method"),
    [("/v1/accounts/upload", "PUT"), ("/v1/schedules/upload", "PUT"), ("/v1/campaigns/x/upload", "POST")],
)
def test_a_route_merely_ending_in_upload_keeps_the_json_limit(path: str, method: str) -> None:
    sent, called = _call(path, method)
    assert not called
    assert sent[0]["status"] == 413


def test_the_upload_route_takes_the_upload_limit() -> None:
    assert BIG < MAX_UPLOAD_BODY
    sent, called = _call("/v1/campaigns/upload", "POST")
    assert called and sent[0]["status"] == 204
