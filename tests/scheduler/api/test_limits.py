"""Issue 10 against the real API process, Redis, worker and simulator: the token follows no new URL,
small requests cannot render huge messages, poison input is refused naming the field, malformed input is
a 4xx (never a 500), and an idempotency key answers only the very same request."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from tests.conftest import ApiStack
from tests.e2e.test_pipeline import sim_sends
from tests.procs import wait_for
from tests.scheduler.api.test_routes import put_account
from tests.worker.store.test_recall import send_all
from worker.messages import TextMessage

TEXT = {"kind": "text", "text": "x"}


def post_raw(stack: ApiStack, path: str, body: dict[str, Any]) -> Any:
    """POST JSON with \\u escapes (ASCII): lone surrogates cannot be sent as UTF-8."""
    return stack.http.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


# --- 2. the write-only token never follows a new base_url ---------------------------------------------------


class _Capture(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def _any(self) -> None:
        type(self).seen.append(f"{self.command} {self.path} {self.headers.get('token', '')}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ret": 200, "data": {}}')

    do_GET = do_POST = _any

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server an attacker controls: it records every request (and the token header it carries)."""
    _Capture.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Capture.seen
    server.shutdown()
    server.server_close()


def test_moving_an_account_needs_its_token_again(api: ApiStack, capture: tuple[str, list[str]]) -> None:
    evil_url, seen = capture
    account = put_account(api, "shop", "gewe", f"inst-{api.prefix}")
    token = f"tok-inst-{api.prefix}-secret"
    base = {"vendor": "gewe", "base_url": account["base_url"], "instance": account["instance"]}

    refused = [
        api.http.patch("/v1/accounts/shop", json={"base_url": evil_url}),
        api.http.patch("/v1/accounts/shop", json={"base_url": evil_url, "token": ""}),
        api.http.put("/v1/accounts/shop", json={**base, "base_url": evil_url}),
        api.http.put("/v1/accounts/shop", json={**base, "vendor": "ecloud"}),
    ]
    for response in refused:
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == "token" and token not in response.text
    stored = api.accounts.get("shop")
    assert stored is not None and stored.spec.base_url == account["base_url"] and stored.spec.vendor == "gewe"
    assert stored.spec.token.get_secret_value() == token

    # the online check still goes to the address the token was entered for, never to the new one
    api.http.post("/v1/accounts/shop/pause")
    assert api.http.post("/v1/accounts/shop/resume", params={"check_online": "true"}).status_code == 200
    assert seen == []

    # the same address, or any other field, keeps the stored token
    same = api.http.patch("/v1/accounts/shop", json={"base_url": account["base_url"] + "/", "instance": "i2"})
    assert same.status_code == 200 and same.json()["token_set"] is True
    # with the token in the same request the move is allowed
    moved = api.http.patch("/v1/accounts/shop", json={"base_url": evil_url, "token": "fresh-token"})
    assert moved.status_code == 200, moved.text
    moved_account = api.accounts.get("shop")
    assert moved_account is not None and moved_account.spec.token.get_secret_value() == "fresh-token"


# --- 3. amplification ------------------------------------------------------------------------------------


def test_a_small_request_cannot_render_a_huge_message(api_stack: ApiStack) -> None:
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "shop", "gewe", instance)
    before = api_stack.stored_keys()
    bomb = {"kind": "text", "text": "{a}" * 6000}
    big = {"a": "x" * 200_000}
    response = api_stack.http.post(
        "/v1/messages", json={"account": "shop", "to": "wxid_a", "message": bomb, "vars": big}
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "vars", response.text
    xml = {"kind": "appmsg", "xml": "<appmsg><title>{a}</title><des>{a}</des><type>5</type></appmsg>"}
    response = api_stack.http.post(
        "/v1/messages", json={"account": "shop", "to": "wxid_a", "message": xml, "vars": {"a": "&" * 30_000}}
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "vars", response.text
    campaign = {
        "name": "bomb",
        "account": "shop",
        "message": bomb,
        "recipients": [{"to": "wxid_a", "vars": {"a": "ok"}}, {"to": "wxid_b", "vars": big}],
    }
    response = api_stack.http.post("/v1/campaigns", json=campaign)
    assert response.status_code == 422 and response.json()["error"]["field"] == "recipients[1].vars", response.text
    upload = api_stack.http.post(
        "/v1/campaigns/upload",
        data={"spec": json.dumps({"name": "bomb", "account": "shop", "message": bomb})},
        files={"recipients": ("r.csv", ("to,a\nwxid_a,ok\nwxid_b," + "y" * 10 + "\n").encode(), "text/csv")},
    )
    assert upload.status_code == 422 and upload.json()["error"]["field"] == "recipients[1].vars", upload.text
    assert api_stack.stored_keys() == before

    # at the limit exactly: accepted, and the vendor gets every character
    api_stack.start_worker()
    api_stack.start("scheduler")
    fits = api_stack.http.post(
        "/v1/messages",
        json={
            "account": "shop",
            "to": "wxid_a",
            "message": {"kind": "text", "text": "{a}{a}"},
            "vars": {"a": "z" * 10_000},
        },
    )
    assert fits.status_code == 202, fits.text
    wait_for(lambda: len(sim_sends(api_stack, instance=instance)) == 1, timeout=30, what="the send")
    (record,) = sim_sends(api_stack, instance=instance)
    assert record["body"]["content"] == "z" * 20_000


# --- 4 and 5. poison input: 422 naming the field, nothing stored --------------------------------------------

MINI = {
    "kind": "miniprogram",
    "app_id": "wx1f9ea355b47256dd",
    "username": "gh_690acf47ea05@app",
    "title": "title",
    "page_path": "pages/index.html",
    "cover_url": "https://example.com/c.jpg",
    "display_name": "shop",
}
XML_VAR = {"kind": "appmsg", "xml": "<appmsg><title>{t}</title><type>5</type><url>https://e.com</url></appmsg>"}

POISON: list[tuple[str, str, dict[str, Any], str]] = [
    ("mini app_id control", "/v1/messages", {"message": {**MINI, "app_id": "wx\u0007evil"}}, "message.app_id"),
    ("mini page_path newline", "/v1/messages", {"message": {**MINI, "page_path": "p\nq"}}, "message.page_path"),
    ("mini title NUL", "/v1/messages", {"message": {**MINI, "title": "a\u0000b"}}, "message.title"),
    ("text lone surrogate", "/v1/messages", {"message": {"kind": "text", "text": "hi \ud800"}}, "message.text"),
    ("var control", "/v1/messages", {"message": {"kind": "text", "text": "{n}"}, "vars": {"n": "a\u0001"}}, "vars.n"),
    ("var surrogate", "/v1/messages", {"message": {"kind": "text", "text": "{n}"}, "vars": {"n": "\udc00"}}, "vars.n"),
    ("xml var control", "/v1/messages", {"message": XML_VAR, "vars": {"t": "a\u000bb"}}, "vars.t"),
    ("unused var surrogate", "/v1/messages", {"message": XML_VAR, "vars": {"t": "ok", "u": "\ud83d"}}, "vars.u"),
]


@pytest.mark.parametrize(("case", "path", "body", "field"), POISON, ids=[c[0] for c in POISON])
def test_poison_messages_are_refused_naming_the_field(
    api: ApiStack, case: str, path: str, body: dict[str, Any], field: str
) -> None:
    put_account(api, "shop", "gewe", f"inst-{api.prefix}")
    before = api.stored_keys()
    response = post_raw(api, path, {"account": "shop", "to": "wxid_a", **body})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field, response.json()
    assert api.stored_keys() == before


def test_poison_campaigns_and_uploads_are_refused_naming_the_recipient(api: ApiStack) -> None:
    put_account(api, "shop", "gewe", f"inst-{api.prefix}")
    before = api.stored_keys()
    text = {"kind": "text", "text": "{n}"}
    for vars_, field in (({"n": "\ud800"}, "recipients[1].vars.n"), ({"n": "a\u001bb"}, "recipients[1].vars.n")):
        body = {"name": "c", "account": "shop", "message": text, "recipients": [{"to": "wxid_a", "vars": {"n": "ok"}}]}
        body["recipients"].append({"to": "wxid_b", "vars": vars_})
        response = post_raw(api, "/v1/campaigns", body)
        assert response.status_code == 422 and response.json()["error"]["field"] == field, response.text
    mini = post_raw(
        api,
        "/v1/campaigns",
        {"name": "c", "account": "shop", "message": {**MINI, "title": "\u0085"}, "recipients": [{"to": "wxid_a"}]},
    )
    assert mini.status_code == 422 and mini.json()["error"]["field"] == "message.title", mini.text
    spec = json.dumps({"name": "u", "account": "shop", "message": text})
    uploads = [
        (
            "r.jsonl",
            b'{"to": "wxid_a", "vars": {"n": "ok"}}\n{"to": "wxid_b", "vars": {"n": "\\udfff"}}\n',
            "recipients[1].vars.n",
        ),
        ("r.csv", b"to,n\nwxid_a,ok\nwxid_b,a\x07\n", "recipients[1].vars.n"),
        ("r.jsonl", b'{"to": "wxid_a", "vars": {"n": "ok"}}\n' + b"[" * 100_000 + b"\n", "recipients[1]"),
        ("r.jsonl", b'{"to": "wxid_a", "vars": {"n": "\xff\xfe"}}\n', "recipients"),
        ("r.csv", b"to,n\nwxid_a,\xc3\x28\n", "recipients"),
    ]
    for name, content, field in uploads:
        response = api.http.post(
            "/v1/campaigns/upload", data={"spec": spec}, files={"recipients": (name, content, "text/plain")}
        )
        assert response.status_code == 422, (name, content[:40], response.text)
        assert response.json()["error"]["field"] == field, (name, response.json())
    assert api.stored_keys() == before


def test_malformed_requests_are_4xx_never_5xx(api: ApiStack) -> None:
    put_account(api, "shop", "gewe", f"inst-{api.prefix}")
    created = api.http.post(
        "/v1/campaigns", json={"name": "c", "account": "shop", "message": TEXT, "recipients": [{"to": "wxid_a"}]}
    ).json()["id"]
    job = api.http.post("/v1/messages", json={"account": "shop", "to": "wxid_b", "message": TEXT}).json()["id"]
    # ids that would land on another kind of key (a list, a sorted set) have the wrong shape
    for path in (
        f"/v1/campaigns/{created}:jobs",
        f"/v1/campaigns/{created}:jobs/deliveries",
        f"/v1/messages/{job}:h",
        f"/v1/dead-letters/{job}:h",
        "/v1/schedules/x:y",
        "/v1/accounts/shop:x",
    ):
        response = api.http.get(path)
        assert response.status_code == 422, (path, response.text)
    assert api.http.post(f"/v1/campaigns/{created}:jobs/pause").status_code == 422
    replay = api.http.post("/v1/dead-letters/replay", json={"ids": [f"{job}:h"]})
    assert replay.status_code == 422 and replay.json()["error"]["field"] == "ids[0]"

    before = api.stored_keys()

    def chunks(total: int) -> Iterator[bytes]:
        yield b'{"name": "c", "account": "shop", "message": {"kind": "text", "text": "'
        for _ in range(total // 65536 + 1):
            yield b"x" * 65536
        yield b'"}, "recipients": [{"to": "wxid_a"}]}'

    for path in ("/v1/campaigns", "/v1/messages"):  # no Content-Length: chunked transfer
        response = api.http.post(path, content=chunks(11 * 1024 * 1024), headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large", response.text
    for content, status in (
        (b"", 400),
        (b'{"name": "c", "recipients": [', 400),
        (b"[1, 2]", 422),
        (b"\xff\xfe{}", 400),
    ):
        response = api.http.post("/v1/campaigns", content=content, headers={"Content-Type": "application/json"})
        assert response.status_code == status, (content, response.text)
    not_a_list = api.http.post(
        "/v1/campaigns", json={"name": "c", "account": "shop", "message": TEXT, "recipients": {"to": "wxid_a"}}
    )
    assert not_a_list.status_code == 422 and not_a_list.json()["error"]["field"] == "recipients"
    missing = api.http.post("/v1/campaigns", json={"name": "c", "account": "shop", "message": TEXT})
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "recipients"
    bad_to = api.http.post(
        "/v1/campaigns",
        json={"name": "c", "account": "shop", "message": TEXT, "recipients": [{"to": "wxid_a"}, {"to": 5}]},
    )
    assert bad_to.status_code == 422 and bad_to.json()["error"]["field"] == "recipients[1].to", bad_to.text
    assert api.stored_keys() == before
    assert api.http.get("/healthz").status_code == 200


# --- 7. idempotency: the same request replays, any other is a conflict -----------------------------------


def test_an_idempotency_key_answers_only_the_same_whole_request(api: ApiStack) -> None:
    put_account(api, "gw", "gewe", f"inst-{api.prefix}")
    put_account(api, "gw2", "gewe", f"inst-{api.prefix}-2")
    message = {
        "account": "gw",
        "to": "wxid_a",
        "message": TEXT,
        "idempotency_key": "m-1",
        "send_at": "2031-01-01T09:00:00+08:00",
    }
    first = api.http.post("/v1/messages", json=message)
    assert first.status_code == 202
    again = api.http.post("/v1/messages", json=message)
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    for change in ({"send_at": "2031-01-01T10:00:00+08:00"}, {"priority": "high"}, {"vars": {"x": "1"}}):
        conflict = api.http.post("/v1/messages", json={**message, **change})
        assert conflict.status_code == 409 and conflict.json()["error"]["field"] == "idempotency_key", change

    campaign = {
        "name": "c",
        "account": "gw",
        "recipients": [{"to": "wxid_a"}, {"to": "wxid_b"}],
        "message": TEXT,
        "idempotency_key": "c-1",
    }
    created = api.http.post("/v1/campaigns", json=campaign)
    assert created.status_code == 202, created.text
    keys = api.stored_keys()
    replay = api.http.post("/v1/campaigns", json=campaign)
    assert replay.status_code == 202 and replay.json()["id"] == created.json()["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    changes: list[dict[str, Any]] = [
        {"recipients": [{"to": "wxid_a"}, {"to": "wxid_b"}, {"to": "wxid_c"}]},
        {"recipients": [{"to": "wxid_a"}, {"to": "wxid_b", "vars": {"n": "1"}}]},
        {"account": "gw2"},
        {"account": None, "accounts": ["gw", "gw2"]},
        {"send_at": "2031-01-01T09:00:00+08:00"},
        {"priority": "high"},
    ]
    for change in changes:
        conflict = api.http.post("/v1/campaigns", json={**campaign, **change})
        assert conflict.status_code == 409, (change, conflict.text)
        assert conflict.json()["error"]["code"] == "idempotency_conflict"
    # the same campaign as an upload is the same request
    spec = {k: v for k, v in campaign.items() if k != "recipients"}
    upload = api.http.post(
        "/v1/campaigns/upload",
        data={"spec": json.dumps(spec)},
        files={"recipients": ("r.csv", b"to\nwxid_a\nwxid_b\n", "text/csv")},
    )
    assert upload.status_code == 202 and upload.json()["id"] == created.json()["id"], upload.text
    assert api.stored_keys() == keys


def test_a_vendor_rate_too_slow_to_keep_track_of_is_refused_naming_the_field(api: ApiStack) -> None:
    slow = api.http.put("/v1/vendor-limits/ohwxapi", json={"per_second": 0.1})
    assert slow.status_code == 422
    assert "per_second" in slow.text
    assert "ohwxapi" not in api.http.get("/v1/vendor-limits").json()["vendor_limits"]
    for bad in (True, "3"):  # a JSON number, not a boolean or a string that reads as one
        refused = api.http.put("/v1/vendor-limits/ohwxapi", json={"per_second": bad})
        assert refused.status_code == 422 and "per_second" in refused.text, refused.text
    for ok in (0.2, 5, 0):
        assert api.http.put("/v1/vendor-limits/ohwxapi", json={"per_second": ok}).status_code == 200


def test_an_unknown_dead_letter_reason_is_refused_naming_the_field(api: ApiStack) -> None:
    bogus = api.http.get("/v1/dead-letters", params={"reason": "bogus"})
    assert bogus.status_code == 422 and bogus.json()["error"]["field"] == "query.reason", bogus.text
    assert api.http.get("/v1/dead-letters", params={"reason": "unknown_outcome"}).status_code == 200


def test_an_account_address_with_credentials_is_refused_and_never_echoed(api: ApiStack) -> None:
    body = {
        "vendor": "gewe",
        "base_url": "https://ops:hunter2pass@gw.example/gewe/v2/api",
        "instance": "i",
        "token": "t0ken",
    }
    refused = api.http.put("/v1/accounts/creds", json=body)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "base_url", refused.text
    assert "hunter2pass" not in refused.text
    assert api.http.get("/v1/accounts/creds").status_code == 404


def test_revoking_a_message_whose_account_is_gone_is_a_409_and_asks_nothing(api: ApiStack) -> None:
    job_id = api.ledger.submit(account="gone-acct", to="wxid_x", message=TextMessage(text="oops")).id
    assert send_all(api.ledger, "gone-acct") == [job_id]  # sent by an account the store no longer has
    refused = api.http.post(f"/v1/messages/{job_id}/revoke")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "account_missing", refused.text
    assert not api.ledger.get(f"r{job_id}")  # no revoke job was queued
    assert api.ledger.get(job_id).fields.get("recall") in (None, "")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("auto_pause", "field"),
    [
        ({"ratio": True}, "auto_pause.ratio"),
        ({"ratio": "0.2"}, "auto_pause.ratio"),
        ({"min_attempts": 100, "window": 5}, "auto_pause"),
    ],
)
def test_auto_pause_thresholds_are_numbers_that_can_fire(api: ApiStack, auto_pause: dict[str, Any], field: str) -> None:
    put_account(api, "ap", "gewe", f"inst-{api.prefix}-ap")
    before = api.stored_keys()
    body = {"name": "x", "account": "ap", "recipients": [{"to": "wxid_a"}], "message": {"kind": "text", "text": "x"}}
    refused = api.http.post("/v1/campaigns", json={**body, "auto_pause": auto_pause})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == field, refused.text
    assert api.stored_keys() == before
