"""Issue 11 end to end: real API, worker and scheduler processes against the simulator over real HTTP.

Resuming a down account needs a probe send, a daily mini-program cap holds only that kind, GeWe's echoed
token never lands anywhere, revokes without ids are refused with a 4xx, E云 refuses a pasted mini-program
without a cover at the door, and GeWe's forwardMiniApp receives the whole pasted ``<msg>``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.conftest import ApiStack
from tests.e2e.test_pipeline import sim_sends
from tests.procs import wait_for
from tests.scheduler.api.test_routes import put_account
from tests.scheduler.cli.test_ops import cli_runner
from tests.worker.vendors.test_against_simulator import MESSAGES
from worker.pacing.holds import next_local_midnight


def add_fault(stack: ApiStack, **fault: object) -> int:
    with httpx.Client(base_url=stack.sim.url) as admin:
        response = admin.post("/_sim/faults", json=fault)
        response.raise_for_status()
        return int(response.json()["id"])


def remove_fault(stack: ApiStack, fault_id: int) -> None:
    with httpx.Client(base_url=stack.sim.url) as admin:
        admin.delete(f"/_sim/faults/{fault_id}").raise_for_status()


def fault_hits(stack: ApiStack, fault_id: int) -> int:
    with httpx.Client(base_url=stack.sim.url) as admin:
        faults = admin.get("/_sim/faults").json()["faults"]
    return int(next(f["hits"] for f in faults if f["id"] == fault_id))


def post(stack: ApiStack, account: str, to: str, message: dict[str, Any]) -> str:
    response = stack.http.post("/v1/messages", json={"account": account, "to": to, "message": message})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def status(stack: ApiStack, job: str) -> str:
    return str(stack.http.get(f"/v1/messages/{job}").json()["status"])


def test_a_down_gewe_account_resumes_only_after_a_probe_send(api_stack: ApiStack) -> None:
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "gw", "gewe", instance)
    api_stack.start_worker()
    api_stack.start("scheduler")
    # offline while checkOnline still says true (Devo919/Gewechat#36, #224)
    hidden = add_fault(api_stack, kind="offline_hidden", instance=instance)
    job = post(api_stack, "gw", "wxid_p1", {"kind": "text", "text": "hello"})
    wait_for(lambda: api_stack.http.get("/v1/accounts/gw").json()["status"] == "down", timeout=30, what="down")
    down_reason = api_stack.http.get("/v1/accounts/gw").json()["status_reason"]
    assert "微信已离线" in down_reason

    refused = api_stack.http.post("/v1/accounts/gw/resume")
    assert refused.status_code == 409, refused.text
    message = refused.json()["error"]["message"]
    assert "probe send to filehelper failed" in message and "微信已离线" in message
    account = api_stack.http.get("/v1/accounts/gw").json()
    assert (account["status"], account["status_reason"]) == ("down", down_reason)  # the reason stays visible
    assert status(api_stack, job) == "queued"  # the job is kept
    assert sim_sends(api_stack, instance=instance) == []

    remove_fault(api_stack, hidden)
    resumed = api_stack.http.post("/v1/accounts/gw/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "active"
    assert resumed.json()["status_reason"].startswith("resumed after a probe send to filehelper (was down:")
    wait_for(lambda: status(api_stack, job) == "sent", timeout=30, what="the kept job sent")
    probe, sent = sim_sends(api_stack, instance=instance)
    assert (probe["to"], sent["to"]) == ("filehelper", "wxid_p1")


def test_an_offline_ecloud_account_is_not_resumed(api: ApiStack) -> None:
    instance = f"inst-{api.prefix}"
    put_account(api, "ec", "ecloud", instance)
    api.accounts.set_status("ec", "down", "微信已离线")
    offline = add_fault(api, kind="offline", instance=instance)  # /isOnline: code 1000, isOnline false
    refused = api.http.post("/v1/accounts/ec/resume")
    assert refused.status_code == 409 and "offline" in refused.json()["error"]["message"]
    assert api.http.get("/v1/accounts/ec").json()["status"] == "down"
    remove_fault(api, offline)
    assert api.http.post("/v1/accounts/ec/resume").json()["status"] == "active"


def test_the_daily_mini_program_cap_holds_that_kind_until_the_next_local_day(api_stack: ApiStack) -> None:
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "gw", "gewe", instance)
    cap = add_fault(api_stack, kind="daily_cap", instance=instance)  # answers only mini-program sends
    minis = [post(api_stack, "gw", f"g{i}@chatroom", MESSAGES["mini-structured"]) for i in range(3)]
    texts = [post(api_stack, "gw", f"wxid_t{i}", {"kind": "text", "text": "hi"}) for i in range(2)]
    before = time.time()
    api_stack.start_worker()
    api_stack.start("scheduler")
    wait_for(lambda: all(status(api_stack, j) == "sent" for j in texts), timeout=30, what="texts sent")
    wait_for(lambda: all(status(api_stack, j) == "retrying" for j in minis), timeout=30, what="minis held")
    after = time.time()

    # one vendor call hit the cap; the other mini-programs were held without calling the vendor
    assert fault_hits(api_stack, cap) == 1
    assert sorted(s["kind"] for s in sim_sends(api_stack, instance=instance)) == ["text", "text"]
    account = api_stack.http.get("/v1/accounts/gw").json()
    assert account["status"] == "active"
    hold = account["holds"]["miniprogram"]
    assert "Too many attempts" in hold["reason"]  # WeChat's words for the cap (wechaty/python-wechaty#133)
    midnights = {next_local_midnight(before, "Asia/Shanghai"), next_local_midnight(after, "Asia/Shanghai")}
    assert hold["until"] in midnights
    for job in minis:
        detail = api_stack.http.get(f"/v1/messages/{job}").json()
        assert detail["history"][-1]["outcome"] == "held" and detail["history"][-1]["error_class"] == "daily_cap"
        assert float(api_stack.redis.zscore(api_stack.ledger.keys.due, job) or 0) == hold["until"]
    remove_fault(api_stack, cap)
    # the operator sees why on the account
    shown = cli_runner(api_stack)("accounts", "show", "gw")
    assert shown.returncode == 0, shown.stderr
    assert "miniprogram until" in shown.stdout and "Too many attempts" in shown.stdout


def test_gewe_token_echo_is_redacted_everywhere(api_stack: ApiStack) -> None:
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "gw", "gewe", instance)
    secret = f"wrong-token-{api_stack.prefix}-4711"
    patched = api_stack.http.patch("/v1/accounts/gw", json={"token": secret})  # the simulator does not know it
    assert patched.status_code == 200, patched.text
    api_stack.start_worker()
    api_stack.start("scheduler")
    job = post(api_stack, "gw", "wxid_tok", {"kind": "text", "text": "hello"})
    wait_for(lambda: api_stack.http.get("/v1/accounts/gw").json()["status"] == "down", timeout=30, what="down")

    # the simulator answers like GeWe: the token in the message (Devo919/Gewechat#263)
    with httpx.Client(base_url=api_stack.sim.url) as raw:
        echoed = raw.post(
            "/gewe/v2/api/message/postText",
            headers={"X-GEWE-TOKEN": secret},
            json={"appId": instance, "toWxid": "wxid_tok", "content": "x"},
        ).json()
    assert echoed == {"ret": 500, "msg": f"HTTP HEADER: X-GEWE-TOKEN={secret} 不可用或已过期"}

    answers = [
        api_stack.http.get("/v1/accounts/gw"),
        api_stack.http.get(f"/v1/messages/{job}"),
        api_stack.http.get("/v1/dead-letters"),
        api_stack.http.post("/v1/accounts/gw/resume"),  # the probe fails with the same echo
        api_stack.http.get("/v1/accounts"),
    ]
    assert answers[3].status_code == 409
    for answer in answers:
        assert secret not in answer.text
    account = answers[0].json()
    assert account["status_reason"] == "HTTP HEADER: X-GEWE-TOKEN=*** 不可用或已过期"
    errors = [h.get("error", "") for h in answers[1].json()["history"]]
    assert "HTTP HEADER: X-GEWE-TOKEN=*** 不可用或已过期" in errors

    # every stored value (jobs, histories, dead letters, stats...) but the account's own token field
    leaks = []
    for key in api_stack.redis.scan_iter(match=f"{api_stack.prefix}:*", count=1000):
        kind = api_stack.redis.type(key)
        if kind == "hash":
            values = [v for f, v in api_stack.redis.hgetall(key).items() if not (f == "token" and ":account:" in key)]
        elif kind == "list":
            values = api_stack.redis.lrange(key, 0, -1)
        elif kind == "set":
            values = list(api_stack.redis.smembers(key))
        elif kind == "zset":
            values = api_stack.redis.zrange(key, 0, -1)
        elif kind == "string":
            values = [api_stack.redis.get(key) or ""]
        else:
            values = [json.dumps(api_stack.redis.xrange(key))] if kind == "stream" else []
        leaks += [key for value in values if secret in str(value)]
    assert leaks == []
    assert "X-GEWE-TOKEN=***" in api_stack.logs() and secret not in api_stack.logs()


def test_a_revoke_without_the_ids_the_vendor_needs_is_a_4xx(api_stack: ApiStack) -> None:
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "gw", "gewe", instance)
    api_stack.start_worker()
    api_stack.start("scheduler")
    job = post(api_stack, "gw", "wxid_rv", {"kind": "text", "text": "oops"})
    wait_for(lambda: status(api_stack, job) == "sent", timeout=30, what="sent")
    # GeWe's image sends answer createTime 0: a revoke with it would "succeed" and do nothing
    api_stack.redis.hset(api_stack.ledger.keys.job(job), "create_time", "0")
    refused = api_stack.http.post(f"/v1/messages/{job}/revoke")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "not_revocable" and "createTime" in refused.json()["error"]["message"]
    (record,) = sim_sends(api_stack, instance=instance)
    assert record["revoked"] is False
    assert api_stack.http.get(f"/v1/messages/{job}").json()["revoked_at"] is None


def test_ecloud_refuses_a_pasted_mini_program_without_cover_at_the_door(api: ApiStack) -> None:
    put_account(api, "ec", "ecloud", f"inst-{api.prefix}")
    put_account(api, "gw", "gewe", f"inst-gw-{api.prefix}")
    before = api.stored_keys()
    pasted = MESSAGES["mini-xml"]  # seed 000: no cover
    single = api.http.post("/v1/messages", json={"account": "ec", "to": "wxid_a", "message": pasted})
    assert single.status_code == 422 and single.json()["error"]["field"] == "message.cover_url", single.text
    campaign = api.http.post(
        "/v1/campaigns",
        json={"name": "c", "account": "ec", "message": pasted, "recipients": [{"to": "wxid_a"}]},
    )
    assert campaign.status_code == 422 and campaign.json()["error"]["field"] == "message.cover_url", campaign.text
    assert api.stored_keys() == before
    # the same message is fine for GeWe, and for E云 once it has a cover
    assert api.http.post("/v1/messages", json={"account": "gw", "to": "wxid_a", "message": pasted}).is_success
    covered = {**pasted, "cover_url": "https://example.com/c.jpg"}
    assert api.http.post("/v1/messages", json={"account": "ec", "to": "wxid_a", "message": covered}).is_success


def test_gewe_forward_mini_app_receives_the_whole_pasted_document(api_stack: ApiStack) -> None:
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "gw", "gewe", instance)
    api_stack.start_worker()
    api_stack.start("scheduler")
    job = post(api_stack, "gw", "g1@chatroom", MESSAGES["mini-msg-cover"])
    wait_for(lambda: status(api_stack, job) == "sent", timeout=30, what="sent")
    (record,) = sim_sends(api_stack, instance=instance)
    assert record["endpoint"] == "forwardMiniApp" and record["kind"] == "miniapp"
    xml = record["body"]["xml"]
    assert xml.startswith('<?xml version="1.0"?>\n<msg>') and "<fromusername>wxid_sender</fromusername>" in xml
    assert api_stack.http.get(f"/v1/messages/{job}").json()["result"]["new_msg_id"] == str(record["new_msg_id"])


def test_a_revoke_refused_for_the_token_answers_without_it(api_stack: ApiStack) -> None:
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "gw", "gewe", instance)
    api_stack.start_worker()
    api_stack.start("scheduler")
    job = post(api_stack, "gw", "wxid_rt", {"kind": "text", "text": "oops"})
    wait_for(lambda: status(api_stack, job) == "sent", timeout=30, what="sent")
    secret = f"rotated-token-{api_stack.prefix}-0815"
    assert api_stack.http.patch("/v1/accounts/gw", json={"token": secret}).status_code == 200
    refused = api_stack.http.post(f"/v1/messages/{job}/revoke")
    assert refused.status_code == 502, refused.text
    assert secret not in refused.text
    assert "X-GEWE-TOKEN=*** 不可用或已过期" in refused.json()["error"]["message"]
    assert secret not in api_stack.logs()
