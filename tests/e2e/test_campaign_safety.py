"""Campaign safety end to end: real API, worker and scheduler processes against the simulator over HTTP.

A draft sends nothing until it is started, its test sends arrive and are not counted; a campaign whose
recipients start failing pauses itself with the vendor's text, sends nothing more, and finishes once
resumed; an account throttled time after time pauses itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ApiStack, SimulatorServer
from tests.e2e.test_pipeline import sim_sends
from tests.e2e.test_vendor_holds import add_fault, fault_hits, post, remove_fault, status
from tests.procs import wait_for
from tests.scheduler.api.test_routes import put_account, wait_campaign
from tests.scheduler.cli.test_ops import cli_runner

pytestmark = pytest.mark.e2e  # real broadcast processes (the guarded stack is built here, not by a tier fixture)


@pytest.fixture
def guarded_stack(redis_url: str, sim: SimulatorServer, tmp_path: Path) -> Iterator[ApiStack]:
    """An API stack whose server requires a test send before a campaign over 2 recipients starts."""
    s = ApiStack(redis_url, sim, tmp_path, BROADCAST_REQUIRE_TEST_ABOVE="2")
    yield s
    s.stop()


def campaign(stack: ApiStack, cid: str) -> dict[str, Any]:
    return dict(stack.http.get(f"/v1/campaigns/{cid}").json())


def test_a_draft_sends_nothing_until_started_and_its_test_sends_are_not_counted(guarded_stack: ApiStack) -> None:
    stack = guarded_stack
    instance = f"inst-{stack.prefix}"
    put_account(stack, "gw", "gewe", instance)
    stack.start_worker()
    stack.start("scheduler")
    recipients = [{"to": f"wxid_d{i}", "vars": {"name": f"客户{i}"}} for i in range(3)]
    created = stack.http.post(
        "/v1/campaigns",
        json={"name": "草稿", "account": "gw", "recipients": recipients, "message": {"kind": "text", "text": "{name} 你好"},
              "draft": True},
    )  # fmt: skip
    assert created.status_code == 202, created.text
    cid = created.json()["id"]
    assert created.json()["status"] == "draft"

    control = post(stack, "gw", "wxid_control", {"kind": "text", "text": "control"})
    wait_for(lambda: status(stack, control) == "sent", timeout=30, what="the control message")  # workers run
    assert [s["to"] for s in sim_sends(stack, instance=instance)] == ["wxid_control"]  # nothing of the draft
    assert campaign(stack, cid)["status"] == "draft"

    refused = stack.http.post(f"/v1/campaigns/{cid}/start")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "test_send_required", refused.text
    bad = stack.http.post(f"/v1/campaigns/{cid}/test", json={"to": [f"wxid_{i}" for i in range(11)]})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "to", bad.text

    run = cli_runner(stack)
    tested = run("campaign", "test", cid, "--to", "wxid_ops", "--to", "wxid_boss")
    assert tested.returncode == 0, tested.stderr
    wait_for(lambda: campaign(stack, cid)["tests"]["sent"] == 2, timeout=30, what="both test sends out")
    tests = sorted(s["to"] for s in sim_sends(stack, instance=instance) if s["to"] in ("wxid_ops", "wxid_boss"))
    assert tests == ["wxid_boss", "wxid_ops"]
    assert [s["body"]["content"] for s in sim_sends(stack, instance=instance, to="wxid_ops")] == ["客户0 你好"]
    view = campaign(stack, cid)
    assert view["status"] == "draft" and view["counts"]["sent"] == 0 and view["total"] == 3
    assert {t["status"] for t in view["tests"]["jobs"]} == {"sent"}
    test_job = stack.http.get(f"/v1/messages/{view['tests']['jobs'][0]['id']}").json()
    assert (test_job["campaign"], test_job["test_of"]) == (None, cid)  # its own message, not one of the campaign's jobs
    shown = run("campaign", "show", cid)
    assert "2 went out" in shown.stdout and "wxid_boss" in shown.stdout, shown.stdout

    started = run("campaign", "start", cid)
    assert started.returncode == 0 and "active" in started.stdout, started.stdout + started.stderr
    done = wait_campaign(stack, cid)
    assert done["counts"]["sent"] == 3 and done["total"] == 3
    for r in recipients:  # each recipient exactly once
        assert len(sim_sends(stack, instance=instance, to=r["to"])) == 1
    again = stack.http.post(f"/v1/campaigns/{cid}/start")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


def test_a_campaign_whose_recipients_fail_pauses_itself_and_finishes_once_resumed(api_stack: ApiStack) -> None:
    stack = api_stack
    instance = f"inst-{stack.prefix}"
    put_account(stack, "gw", "gewe", instance)
    recipients = [{"to": f"wxid_r{i:02d}"} for i in range(30)]
    failing = [f"wxid_r{i:02d}" for i in range(10, 20)]  # not friends any more: the vendor refuses them
    faults = [add_fault(stack, kind="not_friend", instance=instance, to=to) for to in failing]
    created = stack.http.post(
        "/v1/campaigns",
        json={"name": "失败", "account": "gw", "recipients": recipients, "message": {"kind": "text", "text": "hi"}},
    )
    assert created.status_code == 202, created.text
    cid = created.json()["id"]
    stack.start_worker()
    stack.start("scheduler")
    # defaults: 20% of the last 50 from 10 outcomes on: 10 sent, then the third failure is 3 of 13
    wait_for(lambda: campaign(stack, cid)["status"] == "paused", timeout=60, what="the campaign to pause itself")
    view = campaign(stack, cid)
    assert view["pause_reason"].startswith("error threshold — 3 of the last 13 failed: "), view["pause_reason"]
    assert "对方不是你的好友 ×3" in view["pause_reason"]
    assert (view["counts"]["sent"], view["counts"]["dead"]) == (10, 3)

    control = post(stack, "gw", "wxid_control", {"kind": "text", "text": "control"})
    wait_for(lambda: status(stack, control) == "sent", timeout=30, what="the control message")  # the account works
    assert sum(fault_hits(stack, f) for f in faults) == 3  # nothing more of the campaign was tried
    assert campaign(stack, cid)["counts"]["queued"] == 17
    shown = cli_runner(stack)("campaign", "show", cid)
    assert "paused: error threshold — 3 of the last 13 failed" in shown.stdout, shown.stdout
    watched = cli_runner(stack)("campaign", "watch", cid)  # stops at a campaign that paused itself, saying why
    assert watched.returncode == 3, watched.stderr
    assert watched.stdout.startswith(f"campaign {cid} paused: error threshold — 3 of the last 13 failed"), (
        watched.stdout
    )

    for f in faults:
        remove_fault(stack, f)
    resumed = stack.http.post(f"/v1/campaigns/{cid}/resume")
    assert resumed.status_code == 200 and resumed.json()["pause_reason"] is None, resumed.text
    done = wait_campaign(stack, cid)
    assert (done["status"], done["counts"]["sent"], done["counts"]["dead"]) == ("finished", 27, 3)
    for r in recipients:
        expected = 0 if r["to"] in failing[:3] else 1
        assert len(sim_sends(stack, instance=instance, to=r["to"])) == expected, r["to"]


def test_an_account_throttled_again_and_again_pauses_itself(api_stack: ApiStack) -> None:
    stack = api_stack
    instance = f"inst-{stack.prefix}"
    put_account(stack, "gw", "gewe", instance, pause_after_throttles=4)
    throttled = add_fault(stack, kind="throttled", instance=instance)
    stack.start_worker()
    stack.start("scheduler")
    job = post(stack, "gw", "wxid_t1", {"kind": "text", "text": "hello"})
    wait_for(
        lambda: stack.http.get("/v1/accounts/gw").json()["status"] == "paused", timeout=60, what="the account paused"
    )
    account = stack.http.get("/v1/accounts/gw").json()
    assert account["status_reason"].startswith("auto-paused: 4 throttling answers in a row"), account
    assert fault_hits(stack, throttled) == 4
    assert status(stack, job) in ("retrying", "queued")  # kept for later, never dead-lettered
    shown = cli_runner(stack)("accounts", "show", "gw")
    assert "4 throttling answers in a row" in shown.stdout, shown.stdout
    by_worker = stack.http.get("/v1/audit", params={"key": "worker"}).json()["items"]
    assert [(e["action"], e["target"]) for e in by_worker] == [("account.auto_pause", "account:gw")]

    remove_fault(stack, throttled)
    resumed = stack.http.post("/v1/accounts/gw/resume", params={"check_online": "false"})
    assert resumed.status_code == 200, resumed.text
    wait_for(lambda: status(stack, job) == "sent", timeout=30, what="the kept job sent")
    assert len(sim_sends(stack, instance=instance, to="wxid_t1")) == 1
