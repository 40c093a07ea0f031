"""What an account's callbacks may change is capped per hour (``BROADCAST_CALLBACK_CHANGES_PER_H``): whoever
holds a leaked callback URL can write new events, each a new suppression and a new audit entry. Past the cap
an opt-out or a removed contact is held, not applied and never dropped: listed and applied by an operator
over the API, counted ``held_over_cap``, one ``callback.over_cap`` marker in the audit per account and hour.

Real HTTP against a `broadcast api` process; the scheduler's callback processing runs here, on real Redis."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import httpx
import pytest

from scheduler.intake import callbacks
from scheduler.intake.callbacks import CallbackProcessor, HeldChanges, Kind
from scheduler.intake.producer import Producer
from tests.conftest import ApiStack
from tests.scheduler.api.test_routes import put_account
from worker.settings import Settings

CAP = 3


def opt_out(instance: str, sender: str, msg_id: int) -> bytes:
    data = {"MsgType": 1, "FromUserName": {"string": sender}, "ToUserName": {"string": "wxid_me"},
            "Content": {"string": "退订"}, "NewMsgId": msg_id}  # fmt: skip
    return json.dumps({"TypeName": "AddMsg", "Appid": instance, "Wxid": "wxid_me", "Data": data}).encode()


def removed(instance: str, who: str, at: int) -> bytes:
    data = {"UserName": {"string": who}, "CreateTime": at}
    return json.dumps({"TypeName": "DelContacts", "Appid": instance, "Wxid": "wxid_me", "Data": data}).encode()


def processor(stack: ApiStack, **settings: Any) -> CallbackProcessor:
    config = Settings(key_prefix=stack.prefix, **settings)
    return CallbackProcessor(
        config, stack.redis, stack.accounts, Producer(stack.ledger, stack.accounts), check_offline=None
    )


def post_all(stack: ApiStack, account: str, bodies: list[bytes]) -> None:
    url = stack.http.post(f"/v1/accounts/{account}/callback", json={}).json()["url"]
    path, _, key = url.partition("?key=")
    with httpx.Client(base_url=stack.api_url, timeout=30) as vendor:
        for body in bodies:
            answer = vendor.post(path, params={"key": key}, content=body)
            assert answer.status_code == 200 and answer.json() == {"ok": True}, answer.text


def suppressed(stack: ApiStack, account: str) -> dict[str, dict[str, Any]]:
    page = stack.http.get("/v1/suppressions", params={"account": account, "limit": 1000}).json()
    return {s["to"]: s for s in page["suppressions"]}


def metric(stack: ApiStack, kind: str) -> float:
    for line in stack.http.get("/metrics").text.splitlines():
        if line.startswith(f'broadcast_callbacks_total{{kind="{kind}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_changes_past_the_hourly_cap_are_held_counted_marked_once_and_applied_by_an_operator(api: ApiStack) -> None:
    stack = api
    to_next_hour = 3600 - time.time() % 3600
    if to_next_hour < 60:  # the cap counts per clock hour: the changes below must not straddle two
        time.sleep(to_next_hour + 1)
    instance = f"inst-cap-{stack.prefix}"
    put_account(stack, "cap", "gewe", instance)
    now = int(time.time())
    bodies = [opt_out(instance, f"wxid_o{n}", 100 + n) for n in range(5)]
    bodies += [removed(instance, f"wxid_r{n}", now + n) for n in range(2)]
    bodies.append(opt_out(instance, "wxid_o0", 999))  # already suppressed by then: changes nothing, not held
    bodies += [opt_out(instance, "wxid_o4", 1000 + n) for n in range(3)]  # held already: not held again
    before = time.time()
    post_all(stack, "cap", bodies)
    work = processor(stack, callback_changes_per_h=CAP)
    while work.drain():
        pass

    # the first CAP changes are applied; the rest are held, not applied
    assert sorted(suppressed(stack, "cap")) == ["wxid_o0", "wxid_o1", "wxid_o2"]
    listing = stack.http.get("/v1/accounts/cap/callback/held").json()
    held = listing["held"]
    assert listing["total"] == 4 and listing["next_cursor"] is None
    assert [(h["reason"], h["from"]) for h in held] == [
        ("opted_out", "wxid_o3"), ("opted_out", "wxid_o4"),
        ("contact_removed", "wxid_r0"), ("contact_removed", "wxid_r1"),
    ]  # fmt: skip
    assert [h["digest"] for h in held] == [hashlib.sha256(b).hexdigest() for b in bodies[3:7]]
    assert all(before - 1 <= h["at"] <= h["held_at"] <= time.time() + 1 for h in held)
    paged = stack.http.get("/v1/accounts/cap/callback/held", params={"limit": 3}).json()
    rest = stack.http.get("/v1/accounts/cap/callback/held", params={"cursor": paged["next_cursor"]}).json()
    assert [h["id"] for h in paged["held"] + rest["held"]] == [h["id"] for h in held]
    # counted (stats:callbacks, Prometheus), and one marker in the audit for the account's hour
    assert metric(stack, "held_over_cap") == 7.0 and metric(stack, "opted_out") == 4.0  # 3 new + the repeat
    trail = stack.http.get("/v1/audit", params={"key": "callback", "limit": 100}).json()["items"]
    actions = [(e["action"], e["target"]) for e in reversed(trail)]
    assert actions == [
        *(("suppression.add_opted_out", f"suppression:cap/wxid_o{n}") for n in range(3)),
        ("callback.over_cap", "account:cap"),
    ]

    # a viewer reads them but may not apply; an operator applies one by id, then the rest
    made = {role: stack.http.post("/v1/keys", json={"name": f"{role}-{stack.prefix}", "role": role}).json()["key"]
            for role in ("viewer", "operator")}  # fmt: skip
    as_viewer = {"Authorization": f"Bearer {made['viewer']}"}
    as_operator = {"Authorization": f"Bearer {made['operator']}"}
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        assert client.get("/v1/accounts/cap/callback/held", headers=as_viewer).status_code == 200
        refused = client.post("/v1/accounts/cap/callback/held/apply", json={}, headers=as_viewer)
        assert refused.status_code == 403, refused.text
        bad = client.post("/v1/accounts/cap/callback/held/apply", json={"ids": ["x"]}, headers=as_operator)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "ids", bad.text
        twice = {"ids": [held[3]["id"]] * 3}  # one change given three times is applied and counted once
        one = client.post("/v1/accounts/cap/callback/held/apply", json=twice, headers=as_operator)
        assert one.json() == {"applied": 1, "already_suppressed": 0, "remaining": 3}, one.text
        rest_applied = client.post("/v1/accounts/cap/callback/held/apply", headers=as_operator)
        assert rest_applied.json() == {"applied": 3, "already_suppressed": 0, "remaining": 0}, rest_applied.text
    entries = suppressed(stack, "cap")
    assert sorted(entries) == ["wxid_o0", "wxid_o1", "wxid_o2", "wxid_o3", "wxid_o4", "wxid_r0", "wxid_r1"]
    for item in held:  # as the callback would have written it, dated when it was received
        entry = entries[item["from"]]
        assert (entry["reason"], entry["by"], entry["at"]) == (item["reason"], "callback", round(item["at"], 3))
        assert f"applied by operator-{stack.prefix}" in entry["note"]
    assert stack.http.get("/v1/accounts/cap/callback/held").json()["total"] == 0
    trail = stack.http.get("/v1/audit", params={"key": f"operator-{stack.prefix}"}).json()["items"]
    applied = [e for e in trail if e["action"] == "suppression.apply_held"]
    assert [(e["target"], e["status"]) for e in applied if e["status"] != 200] == [("suppression:cap", 422)]
    assert sorted(e["target"] for e in applied if e["status"] == 200) == [
        "suppression:cap/wxid_o3", "suppression:cap/wxid_o4", "suppression:cap/wxid_r0", "suppression:cap/wxid_r1",
    ]  # fmt: skip
    assert stack.http.get("/v1/accounts/nobody/callback/held").status_code == 404


def test_the_marker_is_once_per_hour_and_held_changes_are_bounded_and_expire(
    api: ApiStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = api
    instance = f"inst-bnd-{stack.prefix}"
    put_account(stack, "bnd", "gewe", instance)
    work = processor(stack, callback_changes_per_h=1)
    monkeypatch.setattr(callbacks, "HELD_MAX", 3)
    kinds = [work.handle("bnd", opt_out(instance, f"wxid_b{n}", 200 + n)) for n in range(6)]
    # past its bound a change is not kept, but counted apart (and logged)
    assert kinds == [Kind.OPTED_OUT] + [Kind.HELD_OVER_CAP] * 3 + [Kind.HELD_FULL] * 2
    held = HeldChanges(stack.redis, stack.prefix)
    assert held.count("bnd") == 3 and metric(stack, "held_full") == 2.0
    trail = stack.http.get("/v1/audit", params={"target": "account:bnd", "key": "callback"}).json()["items"]
    assert [e["action"] for e in trail] == ["callback.over_cap"]  # one marker for the hour, not five
    # the next hour gets its own marker (its count starts again: the first change of it is applied)
    hour = int(time.time() // 3600)
    monkeypatch.setattr(callbacks.time, "time", lambda: (hour + 1) * 3600 + 5.0)
    assert work.handle("bnd", opt_out(instance, "wxid_n1", 300)) is Kind.OPTED_OUT
    assert work.handle("bnd", opt_out(instance, "wxid_n2", 301)) is Kind.HELD_FULL  # still at its bound
    monkeypatch.undo()
    trail = stack.http.get("/v1/audit", params={"target": "account:bnd", "key": "callback"}).json()["items"]
    assert [e["action"] for e in trail] == ["callback.over_cap", "callback.over_cap"]
    # held changes nobody applies expire (HELD_TTL_S)
    monkeypatch.setattr(callbacks, "HELD_TTL_S", 0)
    assert held.count("bnd") == 0
