"""Recalling a campaign end to end: the API, a real worker and dispatcher, the simulator over HTTP. What is
checked is what the vendor saw: which revokes arrived, with which ids, when, and in what order with the
account's sends."""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
from typing import Any

import httpx
import pytest

from tests.conftest import ApiStack
from tests.e2e.test_pipeline import sim_sends
from tests.procs import wait_for
from tests.scheduler.api.test_routes import put_account

GAP_S = 0.4
#: the simulator and the worker share this machine's clock; a few ms cover float rounding only
TOLERANCE_S = 0.005


def sim_revokes(stack: ApiStack, **filters: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=stack.sim.url) as admin:
        return list(admin.get("/_sim/revokes", params=filters).json()["revokes"])


def campaign(stack: ApiStack, recipients: list[dict[str, str]], name: str) -> str:
    body = {"name": name, "message": {"kind": "text", "text": "双十一快乐"}, "recipients": recipients}
    response = stack.http.post("/v1/campaigns", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def deliveries(stack: ApiStack, cid: str) -> list[dict[str, Any]]:
    return list(stack.http.get(f"/v1/campaigns/{cid}/deliveries", params={"limit": 1000}).json()["deliveries"])


@pytest.mark.timeout(240)
def test_a_campaign_recalled_mid_send_stops_and_revokes_each_message_inside_the_window_once(
    api_stack: ApiStack, sim_admin: httpx.Client
) -> None:
    p = api_stack.prefix
    sim_admin.post("/_sim/latency", json={"latency_s": 0.05}).raise_for_status()  # calls take time: overlaps show
    put_account(api_stack, "gw", "gewe", f"{p}-gw", per_minute=600, min_interval_s=GAP_S, jitter_s=0)
    put_account(api_stack, "lg", "gewe-legacy", f"{p}-lg", per_minute=600, min_interval_s=0.05, jitter_s=0)
    api_stack.start_worker()
    api_stack.start("scheduler")
    recipients = [{"to": f"wxid_c{i:02d}", "account": "gw"} for i in range(40)]
    recipients += [{"to": f"wxid_l{i}", "account": "lg"} for i in range(3)]
    cid = campaign(api_stack, recipients, "recalled")
    other = campaign(api_stack, [{"to": f"wxid_d{i:02d}", "account": "gw"} for i in range(30)], "goes on")

    def mid_send() -> bool:
        sent = [s["to"] for s in sim_sends(api_stack, instance=f"{p}-gw") + sim_sends(api_stack, instance=f"{p}-lg")]
        return sum(to.startswith("wxid_c") for to in sent) >= 10 and sum(to.startswith("wxid_l") for to in sent) == 3

    wait_for(mid_send, timeout=90, what="the campaign half sent", interval=0.05)
    # a short window makes the older sends too late without waiting two minutes
    response = api_stack.http.post(f"/v1/campaigns/{cid}/recall", json={"window_s": 3})
    accepted_at = time.time()
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelled" and response.json()["recall"]["window_s"] == 3

    def settled() -> bool:
        c = api_stack.http.get(f"/v1/campaigns/{cid}").json()
        return bool(c["recall"]["pending"] == 0 and c["counts"]["sending"] == 0)

    wait_for(settled, timeout=90, what="every revoke done", interval=0.1)
    c = api_stack.http.get(f"/v1/campaigns/{cid}").json()
    wait_for(
        lambda: api_stack.http.get(f"/v1/campaigns/{other}").json()["finished"], timeout=90, what="the other campaign"
    )
    assert api_stack.http.get(f"/v1/campaigns/{other}").json()["counts"]["sent"] == 30

    # it stopped: nothing of it went out after the recall was accepted but the one send already in flight
    assert c["counts"]["sent"] + c["counts"]["cancelled"] == c["total"] and c["counts"]["cancelled"] > 0
    gw_sends = sim_sends(api_stack, instance=f"{p}-gw")
    assert sum(s["to"].startswith("wxid_c") and s["received_at"] > accepted_at for s in gw_sends) <= 1

    # each message inside the window revoked exactly once, with the exact ids the vendor issued
    sent = [d for d in deliveries(api_stack, cid) if d["status"] == "sent"]
    outcomes = {d["to"]: d["recall"] for d in sent}
    assert all(outcomes[f"wxid_l{i}"] == "unsupported" for i in range(3))
    gw_outcomes = [outcomes[to] for to in outcomes if to.startswith("wxid_c")]
    assert set(gw_outcomes) == {"recalled", "too_late"}, gw_outcomes
    revokes = sim_revokes(api_stack, instance=f"{p}-gw")
    assert sim_revokes(api_stack, instance=f"{p}-lg") == []  # unsupported: no call
    by_send = {s["new_msg_id"]: s for s in gw_sends}
    recalled = [d for d in sent if d["recall"] == "recalled"]
    assert len(revokes) == len(recalled)
    for d in sent:
        if d["account"] != "gw":
            continue
        ids = {k: int(v) for k, v in d["result"].items() if k in ("msg_id", "new_msg_id", "create_time")}
        record = by_send[ids["new_msg_id"]]
        calls = [r for r in revokes if r["ids"]["newMsgId"] == ids["new_msg_id"]]
        if d["recall"] == "recalled":
            assert [r["ids"] for r in calls] == [
                {"msgId": ids["msg_id"], "newMsgId": ids["new_msg_id"], "createTime": ids["create_time"]}
            ]
            assert calls[0]["outcome"] == "revoked" and record["revoked"] and len(record["revokes"]) == 1
        else:
            assert calls == [] and not record["revoked"] and d["recall_error"]
    counted = {k: c["recall"][k] for k in ("recalled", "too_late", "unsupported", "failed")}
    assert counted == {k: sum(d["recall"] == k for d in sent) for k in counted}
    assert c["recall"]["requested"] == len(sent)

    # revokes were paced like sends: one call in flight, the gap after each, whatever its kind
    timeline = sorted(
        [(s["received_at"], s["sent_at"], "send", s["to"]) for s in gw_sends]
        + [(r["received_at"], r["answered_at"], "revoke", r["to"]) for r in revokes]
    )
    for before, after in itertools.pairwise(timeline):
        assert after[0] - before[1] >= GAP_S - TOLERANCE_S, (before, after)
    # and ahead of the account's other queued sends: no send of the other campaign between them
    kinds = [kind for _, _, kind, _ in timeline]
    first, last = kinds.index("revoke"), len(kinds) - 1 - kinds[::-1].index("revoke")
    assert set(kinds[first : last + 1]) == {"revoke"}, timeline[first : last + 1]
    assert any(to.startswith("wxid_d") for _, _, kind, to in timeline[last + 1 :])  # it was still queued

    # a second recall revokes nothing twice: it answers the progress
    again = api_stack.http.post(f"/v1/campaigns/{cid}/recall", json={"window_s": 100})
    assert again.status_code == 202 and again.json()["recall"] == c["recall"]
    assert len(sim_revokes(api_stack, instance=f"{p}-gw")) == len(revokes)

    # on the books: the single-message view and the export
    view = api_stack.http.get(f"/v1/messages/{recalled[0]['id']}").json()
    assert view["recall"] == "recalled" and view["revoked_at"] and view["history"][-1]["event"] == "revoked"
    exported = api_stack.http.get(f"/v1/campaigns/{cid}/deliveries", params={"format": "csv"}).text
    rows = {row["to"]: row for row in csv.DictReader(io.StringIO(exported))}
    assert {to: rows[to]["recall"] for to in outcomes} == outcomes


@pytest.mark.timeout(120)
def test_cli_recall_watches_until_no_revoke_is_pending(api_stack: ApiStack) -> None:
    from tests.scheduler.cli.test_ops import cli_runner, ok

    p = api_stack.prefix
    put_account(api_stack, "gw", "gewe", f"{p}-gw")
    put_account(api_stack, "lg", "gewe-legacy", f"{p}-lg")
    api_stack.start_worker()
    api_stack.start("scheduler")
    recipients = [{"to": f"wxid_c{i}", "account": "gw"} for i in range(4)] + [{"to": "wxid_l", "account": "lg"}]
    cid = campaign(api_stack, recipients, "cli")
    wait_for(lambda: api_stack.http.get(f"/v1/campaigns/{cid}").json()["finished"], timeout=60, what="sent")
    run = cli_runner(api_stack)
    shown = ok(run("campaign", "recall", cid, "--watch", "--interval", "0.1"))
    assert f"campaign {cid} 撤回 recall: 已申请 asked 5  " in shown
    assert "已撤回 recalled 4" in shown and "不支持撤回 unsupported 1" in shown and "待撤回 pending 0" in shown
    assert len(sim_revokes(api_stack, instance=f"{p}-gw")) == 4
    again = json.loads(ok(run("campaign", "recall", cid, "--window-s", "5", "--json")))
    assert again["recall"]["recalled"] == 4 and again["recall"]["window_s"] == 110
    assert "recall 撤回" in ok(run("campaign", "show", cid))
    refused = run("campaign", "recall", cid, "--window-s", "500")
    assert refused.returncode == 2 and "window_s" in refused.stderr
