"""Big campaign submissions (issue 10, item 8): refused before any write when over the limit, a bounded
memory budget for a 200k-recipient body, and a bounded number of submissions at once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator.server import SimulatorServer
from tests.conftest import ApiStack
from tests.procs import wait_for
from tests.scheduler.api.test_routes import put_account

pytestmark = pytest.mark.e2e  # starts `broadcast` processes

TEXT = {"kind": "text", "text": "hi {n}"}


def writes(stack: ApiStack) -> int:
    """Calls of every command a campaign writes with, server-wide (the test's API is the only client)."""
    stats = stack.redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("hset", "rpush", "set", "zadd"))


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def upload(stack: ApiStack, csv: bytes, **spec: Any) -> httpx.Response:
    body = {"name": "u", "account": "gw", "message": TEXT, **spec}
    return stack.http.post(
        "/v1/campaigns/upload", data={"spec": json.dumps(body)}, files={"recipients": ("r.csv", csv, "text/csv")}
    )


@pytest.fixture
def small_limit_stack(redis_url: str, sim: SimulatorServer, tmp_path: Path) -> Iterator[ApiStack]:
    s = ApiStack(redis_url, sim, tmp_path, BROADCAST_MAX_CAMPAIGN_RECIPIENTS="1000")
    yield s
    s.stop()


def test_over_limit_or_bad_uploads_are_refused_before_any_write(small_limit_stack: ApiStack) -> None:
    stack = small_limit_stack
    put_account(stack, "gw", "gewe", f"inst-{stack.prefix}")
    rows = [f"wxid_{i:06d},v{i}\n" for i in range(1001)]
    keys, written = stack.stored_keys(), writes(stack)

    over = upload(stack, ("to,n\n" + "".join(rows)).encode())
    assert over.status_code == 422 and over.json()["error"]["field"] == "recipients", over.text
    assert "1000" in over.json()["error"]["message"]
    bad_last = upload(stack, ("to,n\n" + "".join(rows[:999]) + "not a wxid!,v\n").encode())
    assert bad_last.status_code == 422 and bad_last.json()["error"]["field"] == "recipients[999].to", bad_last.text
    as_json = stack.http.post(
        "/v1/campaigns",
        json={
            "name": "j",
            "account": "gw",
            "message": TEXT,
            "recipients": [{"to": f"wxid_{i}", "vars": {"n": "v"}} for i in range(1001)],
        },
    )
    assert as_json.status_code == 422 and as_json.json()["error"]["field"] == "recipients", as_json.text
    assert writes(stack) == written, "a refused campaign must not write a single job"
    assert stack.stored_keys() == keys

    exactly = upload(stack, ("to,n\n" + "".join(rows[:1000])).encode())
    assert exactly.status_code == 202 and exactly.json()["total"] == 1000, exactly.text


def test_a_200k_recipient_json_campaign_stays_within_a_memory_budget(api_stack: ApiStack) -> None:
    """Before streaming, this body (9.9 MB) took ~270 MB of API memory; now ~40 MB. The budget: 150 MB."""
    put_account(api_stack, "gw", "gewe", f"inst-{api_stack.prefix}")
    api_pid = api_stack.procs[0].proc.pid
    recipients = [{"to": f"wxid_{i:07d}", "vars": {"n": f"v{i}"}} for i in range(200_000)]
    body = json.dumps({"name": "big", "account": "gw", "message": TEXT, "recipients": recipients}).encode()
    del recipients
    before = peak_rss_kb(api_pid)
    response = api_stack.http.post(
        "/v1/campaigns", content=body, headers={"Content-Type": "application/json"}, timeout=300
    )
    assert response.status_code == 202 and response.json()["total"] == 200_000, response.text
    grown_mb = (peak_rss_kb(api_pid) - before) / 1024
    assert grown_mb < 150, f"the API's peak memory grew by {grown_mb:.0f} MB for a 200k-recipient body"
    assert api_stack.http.get(f"/v1/campaigns/{response.json()['id']}").json()["total"] == 200_000


@pytest.fixture
def one_slot_stack(redis_url: str, sim: SimulatorServer, tmp_path: Path) -> Iterator[ApiStack]:
    s = ApiStack(redis_url, sim, tmp_path, BROADCAST_MAX_CONCURRENT_UPLOADS="1")
    yield s
    s.stop()


def slow_campaign(
    stack: ApiStack, account: str, release: threading.Event, answers: list[httpx.Response]
) -> threading.Thread:
    """A thread posting a campaign whose body stops halfway until ``release`` is set; its answer goes to
    ``answers``. It holds a submission slot meanwhile."""

    def slow_body() -> Iterator[bytes]:
        yield b'{"name": "slow", "account": "' + account.encode() + b'", "message": {"kind": "text", "text": "x"}, '
        release.wait(60)
        yield b'"recipients": [{"to": "wxid_slow"}]}'

    def post() -> None:
        answers.append(
            stack.http.post("/v1/campaigns", content=slow_body(), headers={"Content-Type": "application/json"})
        )

    holder = threading.Thread(target=post)
    holder.start()
    return holder


def refused_while_held(stack: ApiStack, what: str) -> httpx.Response:
    """Post an invalid campaign (a 422 that stores nothing, were it let in) until it is refused 503: a
    submission slot it needs is held."""
    busy: list[httpx.Response] = []

    def refused() -> bool:
        busy[:] = [stack.http.post("/v1/campaigns", json={"name": "probe"})]
        return busy[0].status_code == 503

    wait_for(refused, timeout=30, what=what)
    return busy[0]


def test_concurrent_campaign_submissions_are_bounded(one_slot_stack: ApiStack) -> None:
    stack = one_slot_stack
    put_account(stack, "gw", "gewe", f"inst-{stack.prefix}")
    release = threading.Event()
    answers: list[httpx.Response] = []
    holder = slow_campaign(stack, "gw", release, answers)
    try:
        busy = refused_while_held(stack, "the second submission to be refused while the first holds the slot")
        assert busy.headers["Retry-After"] == "5" and busy.json()["error"]["code"] == "busy"
        assert stack.http.get("/v1/accounts").status_code == 200  # small requests are not held up
    finally:
        release.set()
        holder.join(60)
    assert answers and answers[0].status_code == 202, answers
    assert stack.http.post("/v1/campaigns", json={"name": "probe"}).status_code == 422  # the slot is free again


def test_one_key_cannot_hold_every_submission_slot(api: ApiStack) -> None:
    """Two slots (the default): a key trickling one campaign body holds one; its second submission is
    refused at once, another key's still gets the other slot."""
    stack = api
    put_account(stack, "gw2", "gewe", f"inst2-{stack.prefix}")
    other = stack.http.post("/v1/keys", json={"name": f"other-{stack.prefix}", "role": "operator"}).json()["key"]
    release = threading.Event()
    answers: list[httpx.Response] = []
    holder = slow_campaign(stack, "gw2", release, answers)
    try:
        mine = refused_while_held(stack, "the same key's second submission to be refused")
        assert "this key" in mine.json()["error"]["message"]
        theirs = httpx.post(
            f"{stack.api_url}/v1/campaigns", json={"name": "probe"}, headers={"Authorization": f"Bearer {other}"}
        )
        assert theirs.status_code == 422, theirs.text  # it got the other slot (and its body was judged)
    finally:
        release.set()
        holder.join(60)
    assert answers and answers[0].status_code == 202, answers
