"""Schedules are validated like the submissions they make, and their fan-out is bounded (issue 10, item 6)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.dispatch.schedules import cron_fan_out
from simulator.server import SimulatorServer
from tests.conftest import ApiStack
from tests.e2e.test_pipeline import sim_sends
from tests.procs import wait_for
from tests.scheduler.api.test_routes import put_account


@pytest.fixture
def bounded_stack(redis_url: str, sim: SimulatorServer, tmp_path: Path) -> Iterator[ApiStack]:
    """The API with the default minimum interval (60 s) and a small hourly job cap."""
    s = ApiStack(
        redis_url,
        sim,
        tmp_path,
        BROADCAST_SCHEDULE_MIN_INTERVAL_S="60",
        BROADCAST_SCHEDULE_MAX_JOBS_PER_HOUR="100",
    )
    yield s
    s.stop()


def test_cron_fan_out_is_read_from_the_fields() -> None:
    assert cron_fan_out("* * * * * *") == (1.0, 3600)
    assert cron_fan_out("* * * * * */2") == (2.0, 1800)
    assert cron_fan_out("* * * * *") == (60.0, 60)
    assert cron_fan_out("*/5 9-17 * * 1-5") == (300.0, 12)
    assert cron_fan_out("0,1 9 * * *") == (60.0, 2)
    assert cron_fan_out("0 * * * *") == (3600.0, 1)
    assert cron_fan_out("30 9 * * *") == (86400.0, 1)
    assert cron_fan_out("0 9,10 * * * 0,59") == (1.0, 2)  # 09:00:59 → 09:01:00 is assumed possible: a safe bound


@pytest.mark.e2e
def test_a_schedule_is_validated_like_its_submission(bounded_stack: ApiStack) -> None:
    put_account(bounded_stack, "gw", "gewe", f"inst-{bounded_stack.prefix}")
    text = {"kind": "text", "text": "hi {n}"}
    message = {"account": "gw", "to": "wxid_r", "message": text, "vars": {"n": "A"}}
    campaign = {"name": "c", "account": "gw", "message": text, "recipients": [{"to": "wxid_a", "vars": {"n": "A"}}]}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"message": {**message, "account": "ghost"}}, "message.account"),
        ({"message": {**message, "to": "not a wxid!"}}, "message.to"),
        ({"message": {**message, "vars": None}}, "message.vars"),
        ({"message": {**message, "vars": {"n": "a\u0001"}}}, "message.vars.n"),
        ({"message": {**message, "vars": {"n": "x" * 20_000}}}, "message.vars"),
        ({"campaign": {**campaign, "account": "ghost"}}, "campaign.account"),
        (
            {"campaign": {**campaign, "recipients": [*campaign["recipients"], {"to": "bad id"}]}},
            "campaign.recipients[1].to",
        ),
        ({"campaign": {**campaign, "recipients": [{"to": "wxid_a"}]}}, "campaign.recipients[0].vars"),
        (
            {"campaign": {**campaign, "recipients": [{"to": "wxid_a", "account": "ghost", "vars": {"n": "A"}}]}},
            "campaign.recipients[0].account",
        ),
        ({"message": message, "cron": "* * * * * */2"}, "cron"),  # every 2 s: under the 60 s minimum
        ({"message": message, "cron": "*/30 * * * *", "name": "a\u0000"}, "name"),
    ]
    for extra, field in cases:
        body = {"cron": "0 9 * * *", **extra}
        response = bounded_stack.http.post("/v1/schedules", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["field"] == field, (field, response.json())
    assert bounded_stack.http.get("/v1/schedules").json()["schedules"] == []
    assert bounded_stack.http.post("/v1/schedules", json={"cron": "* * * * *", "message": message}).status_code == 201


@pytest.mark.e2e
def test_jobs_an_hour_are_capped_at_creation(bounded_stack: ApiStack) -> None:
    put_account(bounded_stack, "gw", "gewe", f"inst-{bounded_stack.prefix}")
    recipients = [{"to": f"wxid_{i}"} for i in range(3)]
    campaign = {"name": "c", "account": "gw", "message": {"kind": "text", "text": "x"}, "recipients": recipients}
    every_minute = bounded_stack.http.post("/v1/schedules", json={"cron": "* * * * *", "campaign": campaign})
    assert every_minute.status_code == 422 and every_minute.json()["error"]["field"] == "cron"  # 3 × 60 > 100
    assert "BROADCAST_SCHEDULE_MAX_JOBS_PER_HOUR" in every_minute.json()["error"]["message"]
    every_two = bounded_stack.http.post("/v1/schedules", json={"cron": "*/2 * * * *", "campaign": campaign})
    assert every_two.status_code == 201, every_two.text  # 3 × 30 = 90 ≤ 100
    assert len(bounded_stack.http.get("/v1/schedules").json()["schedules"]) == 1


def test_the_cap_holds_at_firing_time_too(api_stack: ApiStack) -> None:
    """The dispatcher enforces the hourly cap with its own settings: firings past it are skipped."""
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "gw", "gewe", instance)
    api_stack.start_worker()
    api_stack.env["BROADCAST_SCHEDULE_MAX_JOBS_PER_HOUR"] = "2"
    api_stack.start("scheduler")
    created = api_stack.http.post(
        "/v1/schedules",
        json={
            "cron": "* * * * * *",
            "message": {"account": "gw", "to": "wxid_r", "message": {"kind": "text", "text": "tick"}},
        },
    )
    assert created.status_code == 201, created.text
    schedule_id = created.json()["id"]

    def fired(n: int) -> bool:
        return bool(api_stack.http.get(f"/v1/schedules/{schedule_id}").json()["fires"] >= n)

    wait_for(lambda: fired(4), timeout=30, what="four firings")
    state = api_stack.http.get(f"/v1/schedules/{schedule_id}").json()
    api_stack.http.delete(f"/v1/schedules/{schedule_id}")
    assert "BROADCAST_SCHEDULE_MAX_JOBS_PER_HOUR" in state["last_error"], state
    wait_for(lambda: len(sim_sends(api_stack, instance=instance)) >= 2, timeout=30, what="two sends")
    created_jobs = [k for k in api_stack.redis.scan_iter(match=f"{api_stack.prefix}:job:*") if not k.endswith(":h")]
    assert len(created_jobs) == 2
    assert len(sim_sends(api_stack, instance=instance)) == 2
