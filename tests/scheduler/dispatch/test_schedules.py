"""Recurring schedules through the API: persisted in Redis, fired by the dispatcher, at least twice."""

from __future__ import annotations

import itertools
import time

from tests.conftest import ApiStack
from tests.e2e.test_pipeline import sim_sends
from tests.procs import wait_for
from tests.scheduler.api.test_routes import put_account


def test_recurring_schedule_fires_repeatedly_and_stops_when_deleted(api_stack: ApiStack) -> None:
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "gw", "gewe", instance)
    api_stack.start_worker()
    api_stack.start("scheduler")
    before = time.time()
    created = api_stack.http.post(
        "/v1/schedules",
        json={
            "name": "every two seconds",
            "cron": "* * * * * */2",
            "timezone": "Asia/Shanghai",
            "message": {"account": "gw", "to": "wxid_r", "message": {"kind": "text", "text": "早安"}},
        },
    )
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["next_at"] > before - 1 and schedule["kind"] == "message"
    assert [s["id"] for s in api_stack.http.get("/v1/schedules").json()["schedules"]] == [schedule["id"]]

    wait_for(lambda: len(sim_sends(api_stack, instance=instance)) >= 2, timeout=30, what="two firings sent")
    state = api_stack.http.get(f"/v1/schedules/{schedule['id']}").json()
    assert state["fires"] >= 2 and state["last_error"] == ""
    records = sim_sends(api_stack, instance=instance)
    assert all(r["body"]["content"] == "早安" for r in records)
    # separate firings, not a double fire: each firing's idempotency key names its own fire time
    keys = api_stack.redis.keys(f"{api_stack.prefix}:idem:m:schedule:{schedule['id']}:*")
    fire_times = sorted(int(k.rsplit(":", 1)[1]) for k in keys)
    assert len(fire_times) >= 2 and all(b - a >= 2 for a, b in itertools.pairwise(fire_times)), fire_times
    assert len(records) <= len(fire_times)  # one send per firing

    # a second schedule on the same cron keeps firing: it shows when the deleted one would have fired again
    other = {
        "name": "the other",
        "cron": "* * * * * */2",
        "message": {"account": "gw", "to": "wxid_other", "message": {"kind": "text", "text": "早安"}},
    }
    assert api_stack.http.post("/v1/schedules", json=other).status_code == 201

    def sent_to(to: str) -> int:
        return len(sim_sends(api_stack, instance=instance, to=to))

    assert api_stack.http.delete(f"/v1/schedules/{schedule['id']}").json() == {"deleted": schedule["id"]}
    others = sent_to("wxid_other")
    wait_for(lambda: sent_to("wxid_other") > others, timeout=30, what="the other schedule firing")
    settled = sent_to("wxid_r")  # a firing queued before the delete has gone out by now (one account, in order)
    wait_for(lambda: sent_to("wxid_other") >= others + 3, timeout=30, what="two more firings of the other")
    assert sent_to("wxid_r") == settled
    assert api_stack.http.get(f"/v1/schedules/{schedule['id']}").status_code == 404


def test_recurring_campaign_schedule(api_stack: ApiStack) -> None:
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "gw", "gewe", instance)
    api_stack.start_worker()
    api_stack.start("scheduler")
    body = {
        "cron": "* * * * * */3",
        "campaign": {
            "name": "daily",
            "account": "gw",
            "recipients": [{"to": "wxid_a", "vars": {"n": "A"}}, {"to": "wxid_b", "vars": {"n": "B"}}],
            "message": {"kind": "text", "text": "hi {n}"},
        },
    }
    schedule = api_stack.http.post("/v1/schedules", json=body).json()
    wait_for(lambda: len(sim_sends(api_stack, instance=instance)) >= 4, timeout=30, what="two campaign firings")
    campaigns = api_stack.http.get("/v1/campaigns").json()["campaigns"]
    assert len(campaigns) >= 2 and all(c["name"].startswith("daily @ ") for c in campaigns)
    # each firing's campaign carries the schedule's key: revoking that key pauses it too
    assert {c["created_by"] for c in campaigns} == {"bootstrap"}
    api_stack.http.delete(f"/v1/schedules/{schedule['id']}")


def test_bad_schedules_are_refused_naming_the_field(api_stack: ApiStack) -> None:
    put_account(api_stack, "gw", "gewe", f"inst-{api_stack.prefix}")
    message = {"account": "gw", "to": "wxid_r", "message": {"kind": "text", "text": "x"}}
    cases = [
        ({"cron": "every day at nine", "message": message}, "cron"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus", "message": message}, "timezone"),
        ({"cron": "0 9 * * *"}, None),
        ({"cron": "0 0 30 2 *", "message": message}, "cron"),  # 30 February never comes
        ({"cron": "0 9 * * *", "message": {**message, "account": "ghost"}}, "message.account"),
    ]
    for body, field in cases:
        response = api_stack.http.post("/v1/schedules", json=body)
        assert response.status_code == 422, (body, response.text)
        if field:
            assert response.json()["error"]["field"] == field, response.json()
    assert api_stack.http.get("/v1/schedules").json()["schedules"] == []
