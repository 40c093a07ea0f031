"""The producer API over real HTTP (`broadcast api` process) with a real worker, scheduler and simulator."""

from __future__ import annotations

import collections
import csv
import io
import json
import time
from typing import Any

import httpx
import pytest

from tests.conftest import API_TOKEN, ApiStack
from tests.e2e.test_pipeline import add_fault, clear_faults, sim_sends
from tests.procs import wait_for
from tests.worker.test_xmlsafe import BILLION_LAUGHS, XXE
from tests.worker.vendors.test_against_simulator import MESSAGES


def put_account(stack: ApiStack, account_id: str, vendor: str, instance: str, **limits: Any) -> dict[str, Any]:
    token = f"tok-{instance}-secret"
    with httpx.Client(base_url=stack.sim.url) as admin:
        admin.post(
            "/_sim/accounts",
            json={"vendor": vendor, "instance": instance, "token": "" if vendor == "ohwxapi" else token},
        ).raise_for_status()
    from tests.conftest import VENDOR_PREFIX

    response = stack.http.put(
        f"/v1/accounts/{account_id}",
        json={
            "vendor": vendor,
            "base_url": stack.sim.url + VENDOR_PREFIX[vendor],
            "token": "" if vendor == "ohwxapi" else token,
            "instance": instance,
            "limits": {"per_minute": 0, **limits},
        },
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_campaign(stack: ApiStack, cid: str, timeout: float = 90) -> dict[str, Any]:
    def finished() -> bool:
        return bool(stack.http.get(f"/v1/campaigns/{cid}").json()["finished"])

    wait_for(finished, timeout=timeout, what=f"campaign {cid}", interval=0.2)
    return dict(stack.http.get(f"/v1/campaigns/{cid}").json())


def all_deliveries(stack: ApiStack, cid: str, status: str | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: int | None = 0
    while cursor is not None:
        params: dict[str, Any] = {"cursor": cursor, "limit": 137}
        if status:
            params["status"] = status
        page = stack.http.get(f"/v1/campaigns/{cid}/deliveries", params=params).json()
        items += page["deliveries"]
        cursor = page["next_cursor"]
    return items


def test_auth_is_required_and_tokens_never_echoed(api: ApiStack) -> None:
    url = api.api_url
    assert httpx.get(f"{url}/healthz").json() == {"ok": True}
    assert httpx.get(f"{url}/v1/accounts").status_code == 401
    assert httpx.get(f"{url}/v1/accounts", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{url}/v1/accounts", headers={"Authorization": API_TOKEN}).status_code == 401
    assert httpx.get(f"{url}/v1/accounts", headers={"Authorization": "Bearer other-key"}).status_code == 200
    account = put_account(api, "shop", "gewe", f"inst-{api.prefix}")
    token = f"tok-inst-{api.prefix}-secret"
    assert account["token_set"] is True and "token" not in account
    listing = api.http.get("/v1/accounts").text
    assert token not in listing and "shop" in listing
    # an update without a token keeps the old one (write-only field)
    again = api.http.put(
        "/v1/accounts/shop",
        json={
            "vendor": "gewe",
            "base_url": account["base_url"],
            "instance": account["instance"],
            "limits": {"per_minute": 10},
        },
    ).json()
    assert again["token_set"] is True and again["limits"]["per_minute"] == 10
    assert api.accounts.get("shop").spec.token.get_secret_value() == token  # type: ignore[union-attr]


def test_single_message_lifecycle_and_idempotency(api_stack: ApiStack) -> None:
    put_account(api_stack, "shop", "ecloud", f"inst-{api_stack.prefix}")
    api_stack.start_worker()
    api_stack.start("scheduler")
    body = {"account": "shop", "to": "wxid_a1", "message": MESSAGES["mini-xml-cover"], "idempotency_key": "order-42"}
    first = api_stack.http.post("/v1/messages", json=body)
    assert first.status_code == 202, first.text
    job_id = first.json()["id"]
    keys_after_first = api_stack.stored_keys()
    second = api_stack.http.post("/v1/messages", json=body)
    assert second.status_code == 202 and second.json()["id"] == job_id
    assert second.headers["Idempotent-Replayed"] == "true"
    # the trail tells the replay from the create (attack round 5: a replay read as a second create)
    trail = api_stack.http.get("/v1/audit", params={"target": f"message:{job_id}"}).json()["items"]
    assert [e["action"] for e in trail] == ["message.create_replayed", "message.create"], trail
    wait_for(lambda: api_stack.http.get(f"/v1/messages/{job_id}").json()["status"] == "sent", timeout=30, what="sent")
    job = api_stack.http.get(f"/v1/messages/{job_id}").json()
    (record,) = sim_sends(api_stack, instance=f"inst-{api_stack.prefix}")
    assert job["result"]["new_msg_id"] == str(record["new_msg_id"])  # a string: exact for JS readers
    assert isinstance(job["result"]["create_time"], str) and job["attempts"] == 1 and job["errors"] == []
    assert api_stack.stored_keys() >= keys_after_first
    third = api_stack.http.post("/v1/messages", json=body)
    assert third.json()["id"] == job_id
    time.sleep(0.5)
    assert len(sim_sends(api_stack, instance=f"inst-{api_stack.prefix}")) == 1


BAD_MESSAGES: list[tuple[str, dict[str, Any], int, str]] = [
    ("missing to", {"account": "shop", "message": {"kind": "text", "text": "x"}}, 422, "to"),
    ("missing message", {"account": "shop", "to": "wxid_a"}, 422, "message"),
    ("unknown kind", {"account": "shop", "to": "wxid_a", "message": {"kind": "video", "url": "x"}}, 422, "message"),
    ("empty text", {"account": "shop", "to": "wxid_a", "message": {"kind": "text", "text": ""}}, 422, "message.text"),
    (
        "xml bomb",
        {"account": "shop", "to": "wxid_a", "message": {"kind": "appmsg", "xml": BILLION_LAUGHS}},
        422,
        "message.xml",
    ),
    ("xxe", {"account": "shop", "to": "wxid_a", "message": {"kind": "appmsg", "xml": XXE}}, 422, "message.xml"),
    (
        "malformed xml",
        {"account": "shop", "to": "wxid_a", "message": {"kind": "appmsg", "xml": "<appmsg><a></appmsg>"}},
        422,
        "message.xml",
    ),
    ("unknown account", {"account": "ghost", "to": "wxid_a", "message": {"kind": "text", "text": "x"}}, 422, "account"),
    ("bad recipient", {"account": "shop", "to": "not a wxid!", "message": {"kind": "text", "text": "x"}}, 422, "to"),
    (
        "naive send_at",
        {"account": "shop", "to": "wxid_a", "message": {"kind": "text", "text": "x"}, "send_at": "2030-01-01T10:00:00"},
        422,
        "send_at",
    ),
    ("missing var", {"account": "shop", "to": "wxid_a", "message": {"kind": "text", "text": "hi {name}"}}, 422, "vars"),
    (
        "extra field",
        {"account": "shop", "to": "wxid_a", "message": {"kind": "text", "text": "x"}, "colour": 1},
        422,
        "colour",
    ),
]


@pytest.mark.parametrize(("case", "body", "status", "field"), BAD_MESSAGES, ids=[c[0] for c in BAD_MESSAGES])
def test_bad_input_is_refused_naming_the_field_and_stores_nothing(
    api: ApiStack, case: str, body: dict[str, Any], status: int, field: str
) -> None:
    put_account(api, "shop", "gewe", f"inst-{api.prefix}")
    before = api.stored_keys()
    response = api.http.post("/v1/messages", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert api.stored_keys() == before


@pytest.mark.parametrize("vendor", ["gewe-legacy", "ohwxapi"])
def test_an_audience_on_a_vendor_without_contact_calls_is_refused_as_its_sync_is(api: ApiStack, vendor: str) -> None:
    """Not ``contacts_not_synced`` with a hint to run a sync that would itself be refused."""
    account = f"nc-{vendor}"
    put_account(api, account, vendor, f"inst-{api.prefix}-{vendor}")
    sync = api.http.post(f"/v1/accounts/{account}/contacts/sync")
    assert sync.status_code == 409, sync.text
    before = api.stored_keys()
    audience = {"accounts": [account], "labels_any": ["VIP"]}
    message = {"kind": "text", "text": "{name} 你好"}
    preview = api.http.post("/v1/audiences/preview", json={"audience": audience, "message": message})
    campaign = api.http.post("/v1/campaigns", json={"name": "by label", "message": message, "audience": audience})
    for response in (preview, campaign):
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("contacts_unsupported", "audience.accounts[0]")
        assert sync.json()["error"]["message"] in error["message"]  # the sync route's own words
        assert "contacts sync" not in error["message"]
    assert api.stored_keys() == before


def test_non_json_and_huge_bodies_are_refused(api: ApiStack) -> None:
    before = api.stored_keys()
    for content in (
        b"{not json",
        b'{"account": "shop", "to": "wxid_a", "n": ' + b"9" * 100_000 + b"}",  # past Python's 4,300 digits
        b'{"account": "sh\xff\xfeop"}',  # not UTF-8
    ):
        for route in ("/v1/messages", "/v1/campaigns"):  # the campaign body is streamed by its own parser
            response = api.http.post(route, content=content, headers={"Content-Type": "application/json"})
            assert response.status_code == 400, response.text
            assert (response.json()["error"]["code"], response.json()["error"]["field"]) == ("invalid_json", "body")
            assert "999999" not in response.text and "sh" not in response.json()["error"]["message"], response.text
    huge = (
        b'{"account": "shop", "to": "wxid_a", "message": {"kind": "text", "text": "'
        + b"x" * (10 * 1024 * 1024)
        + b'"}}'
    )
    response = api.http.post("/v1/messages", content=huge, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert api.stored_keys() == before


def test_thousand_recipient_campaign_across_two_vendors(api_stack: ApiStack) -> None:
    put_account(api_stack, "gw", "gewe", f"inst-{api_stack.prefix}-gw")
    put_account(api_stack, "ec", "ecloud", f"inst-{api_stack.prefix}-ec")
    api_stack.start_worker()
    api_stack.start("scheduler")
    recipients = [{"to": f"wxid_c{i:04d}", "vars": {"name": f"用户{i}"}} for i in range(1000)]
    recipients.append({"to": "wxid_c0007", "vars": {"name": "dup"}})  # a duplicate is sent once
    response = api_stack.http.post(
        "/v1/campaigns",
        json={
            "name": "双十一",
            "accounts": ["gw", "ec"],
            "recipients": recipients,
            "message": {"kind": "text", "text": "{name} 你好"},
        },
    )
    assert response.status_code == 202, response.text
    cid, total = response.json()["id"], response.json()["total"]
    assert total == 1000 and response.json()["duplicates"] == 1
    campaign = wait_campaign(api_stack, cid)
    assert campaign["status"] == "finished"
    assert campaign["counts"]["sent"] == 1000 and sum(campaign["counts"].values()) == 1000
    deliveries = all_deliveries(api_stack, cid)
    assert len(deliveries) == 1000 and len({d["to"] for d in deliveries}) == 1000
    records = {
        r["to"]: r for inst in ("gw", "ec") for r in sim_sends(api_stack, instance=f"inst-{api_stack.prefix}-{inst}")
    }
    assert len(records) == 1000
    assert collections.Counter(d["account"] for d in deliveries).keys() == {"gw", "ec"}
    for d in deliveries:
        record = records[d["to"]]
        assert d["result"]["new_msg_id"] == str(record["new_msg_id"])
        assert record["body"].get("content", record["body"].get("content")) == f"用户{int(d['to'][6:])} 你好"
    # exports carry the same ids
    csv_rows = list(
        csv.DictReader(
            io.StringIO(api_stack.http.get(f"/v1/campaigns/{cid}/deliveries", params={"format": "csv"}).text)
        )
    )
    assert len(csv_rows) == 1000 and csv_rows[0]["new_msg_id"] == deliveries[0]["result"]["new_msg_id"]
    lines = api_stack.http.get(
        f"/v1/campaigns/{cid}/deliveries", params={"format": "jsonl", "status": "sent"}
    ).text.splitlines()
    assert (
        len(lines) == 1000 and json.loads(lines[-1])["result"]["new_msg_id"] == deliveries[-1]["result"]["new_msg_id"]
    )


def test_campaign_with_a_bad_recipient_stores_nothing(api: ApiStack) -> None:
    put_account(api, "gw", "gewe", f"inst-{api.prefix}")
    before = api.stored_keys()
    recipients = [{"to": f"wxid_{i}"} for i in range(10)]
    recipients[7] = {"to": "wxid_7", "account": "ghost"}
    response = api.http.post(
        "/v1/campaigns",
        json={"name": "x", "account": "gw", "recipients": recipients, "message": {"kind": "text", "text": "x"}},
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "recipients[7].account"
    recipients[7] = {"to": "wxid_7", "vars": {"n": "1"}}
    response = api.http.post(
        "/v1/campaigns",
        json={"name": "x", "account": "gw", "recipients": recipients, "message": {"kind": "text", "text": "{n}"}},
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "recipients[0].vars"
    # a campaign that names its accounts sends from those only: a row naming another is refused
    put_account(api, "gw2", "gewe", f"inst2-{api.prefix}")
    before = api.stored_keys()
    recipients[7] = {"to": "wxid_7", "account": "gw2"}
    body = {"name": "x", "accounts": ["gw"], "recipients": recipients, "message": {"kind": "text", "text": "x"}}
    response = api.http.post("/v1/campaigns", json=body)
    assert response.status_code == 422 and response.json()["error"]["field"] == "recipients[7].account"
    assert "not one of the campaign's accounts" in response.json()["error"]["message"]
    csv_body = "to,account\nwxid_1,gw\nwxid_2,gw2\n"
    spec = json.dumps({"name": "x", "accounts": ["gw"], "message": {"kind": "text", "text": "x"}})
    response = api.http.post(
        "/v1/campaigns/upload", data={"spec": spec}, files={"recipients": ("r.csv", csv_body, "text/csv")}
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "recipients[1].account"
    assert api.stored_keys() == before
    assert "x" not in {c["name"] for c in api.http.get("/v1/campaigns").json()["campaigns"]}


def test_pause_resume_and_cancel_under_load(api_stack: ApiStack) -> None:
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "gw", "gewe", instance)
    add_fault(api_stack, kind="slow", instance=instance, delay_s=0.02)
    api_stack.start_worker()
    api_stack.start("scheduler")
    try:
        recipients = [{"to": f"wxid_p{i:04d}"} for i in range(400)]
        cid = api_stack.http.post(
            "/v1/campaigns",
            json={"name": "p", "account": "gw", "recipients": recipients, "message": {"kind": "text", "text": "x"}},
        ).json()["id"]
        wait_for(
            lambda: api_stack.http.get(f"/v1/campaigns/{cid}").json()["counts"]["sent"] >= 50,
            timeout=30,
            what="50 sent",
        )
        paused = api_stack.http.post(f"/v1/campaigns/{cid}/pause").json()
        assert paused["status"] == "paused"
        time.sleep(1.0)  # let the send in flight land
        held = len(sim_sends(api_stack, instance=instance))
        time.sleep(1.0)
        assert len(sim_sends(api_stack, instance=instance)) == held, "sends continued while paused"
        counts = api_stack.http.get(f"/v1/campaigns/{cid}").json()["counts"]
        assert sum(counts.values()) == 400 and counts["sent"] == held and counts["sending"] == 0
        assert api_stack.http.post(f"/v1/campaigns/{cid}/pause").status_code == 409
        assert api_stack.http.post(f"/v1/campaigns/{cid}/resume").json()["status"] in ("active", "finished")
        wait_for(
            lambda: api_stack.http.get(f"/v1/campaigns/{cid}").json()["counts"]["sent"] >= held + 50,
            timeout=30,
            what="resumed",
        )
        cancelled = api_stack.http.post(f"/v1/campaigns/{cid}/cancel").json()
        assert cancelled["status"] == "cancelled"
        time.sleep(1.0)
        final = api_stack.http.get(f"/v1/campaigns/{cid}").json()
        assert final["finished"] and sum(final["counts"].values()) == 400
        assert final["counts"]["cancelled"] > 0 and final["counts"]["sent"] + final["counts"]["cancelled"] == 400
        records = sim_sends(api_stack, instance=instance)
        assert len(records) == final["counts"]["sent"]
        assert max(collections.Counter(r["to"] for r in records).values()) == 1
        assert all(d["status"] == "cancelled" for d in all_deliveries(api_stack, cid, status="cancelled"))
    finally:
        clear_faults(api_stack)


def test_csv_upload_campaign_with_variables(api_stack: ApiStack) -> None:
    put_account(api_stack, "gw", "gewe", f"inst-{api_stack.prefix}")
    api_stack.start_worker()
    api_stack.start("scheduler")
    rows = "to,name,code\n" + "".join(f"wxid_u{i},张{i},C&{i}\n" for i in range(20))
    spec = {
        "name": "upload",
        "account": "gw",
        "message": {"kind": "appmsg", "xml": "<appmsg><title>{name}</title><des>{code}</des><type>5</type></appmsg>"},
    }
    response = api_stack.http.post(
        "/v1/campaigns/upload",
        data={"spec": json.dumps(spec)},
        files={"recipients": ("list.csv", rows.encode(), "text/csv")},
    )
    assert response.status_code == 202, response.text
    campaign = wait_campaign(api_stack, response.json()["id"])
    assert campaign["counts"]["sent"] == 20
    record = sim_sends(api_stack, instance=f"inst-{api_stack.prefix}", to="wxid_u3")[0]
    assert "<title>张3</title><des>C&amp;3</des>" in record["body"]["appmsg"]


def test_dead_letters_over_http(api_stack: ApiStack) -> None:
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "gw", "gewe", instance)
    add_fault(api_stack, kind="not_friend", instance=instance)
    api_stack.start_worker()
    api_stack.start("scheduler")
    ids = [
        api_stack.http.post(
            "/v1/messages", json={"account": "gw", "to": f"wxid_d{i}", "message": {"kind": "text", "text": "x"}}
        ).json()["id"]
        for i in range(3)
    ]
    wait_for(
        lambda: api_stack.http.get("/v1/dead-letters", params={"account": "gw"}).json()["total"] == 3,
        timeout=30,
        what="3 dead",
    )
    listing = api_stack.http.get("/v1/dead-letters", params={"reason": "permanent"}).json()["dead_letters"]
    assert {d["id"] for d in listing} == set(ids)
    detail = api_stack.http.get(f"/v1/dead-letters/{ids[0]}").json()
    assert detail["history"][0]["error_class"] == "permanent"
    clear_faults(api_stack)
    assert api_stack.http.post(f"/v1/dead-letters/{ids[0]}/replay").json()["replayed"] == 1
    many = api_stack.http.post("/v1/dead-letters/replay", json={"ids": [ids[0], ids[1]]}).json()
    assert many["results"] == {ids[0]: "not_dead", ids[1]: "ok"}
    # the bulk replay is on the record against the job it replayed, not only against "dead_letter"
    trail = api_stack.http.get("/v1/audit", params={"target": f"dead_letter:{ids[1]}"}).json()["items"]
    assert [(e["action"], e["status"]) for e in trail] == [("dead_letter.replay_bulk", 200)]
    single = api_stack.http.get("/v1/audit", params={"target": f"dead_letter:{ids[0]}"}).json()["items"]
    assert [e["action"] for e in single] == ["dead_letter.replay"]  # the bulk call did not replay it: no entry
    assert api_stack.http.delete(f"/v1/dead-letters/{ids[2]}").json() == {"deleted": ids[2]}
    assert api_stack.http.get(f"/v1/dead-letters/{ids[2]}").status_code == 404
    wait_for(
        lambda: all(api_stack.http.get(f"/v1/messages/{i}").json()["status"] == "sent" for i in ids[:2]),
        timeout=30,
        what="replays sent",
    )
    assert len(sim_sends(api_stack, instance=instance)) == 2


def test_account_pause_resume_with_online_check(api: ApiStack) -> None:
    instance = f"inst-{api.prefix}"
    put_account(api, "gw", "gewe", instance)
    assert api.http.post("/v1/accounts/gw/pause").json()["status"] == "paused"
    add_fault(api, kind="offline", instance=instance)
    try:
        refused = api.http.post("/v1/accounts/gw/resume")
        assert refused.status_code == 409 and "offline" in refused.json()["error"]["message"]
        assert api.http.get("/v1/accounts/gw").json()["status"] == "paused"
    finally:
        clear_faults(api)
    assert api.http.post("/v1/accounts/gw/resume").json()["status"] == "active"


def test_metrics_endpoint_moves_with_sends(api_stack: ApiStack) -> None:
    put_account(api_stack, "gw", "gewe", f"inst-{api_stack.prefix}")
    api_stack.start_worker()
    api_stack.start("scheduler")
    job = api_stack.http.post(
        "/v1/messages", json={"account": "gw", "to": "wxid_m", "message": {"kind": "text", "text": "x"}}
    ).json()["id"]
    wait_for(lambda: api_stack.http.get(f"/v1/messages/{job}").json()["status"] == "sent", timeout=30, what="sent")
    # workers add their counts up and write them once a second
    sent = 'broadcast_sends_total{account="gw",kind="text",outcome="sent",vendor="gewe"} 1.0'
    wait_for(lambda: sent in api_stack.http.get("/metrics").text, timeout=30, what="the count")
    text = api_stack.http.get("/metrics").text
    assert "broadcast_vendor_latency_seconds_bucket" in text


def test_patch_account_merges_limits_and_keeps_the_token(api: ApiStack) -> None:
    put_account(api, "gw", "gewe", f"inst-{api.prefix}", min_interval_s=2.5)
    patched = api.http.patch("/v1/accounts/gw", json={"limits": {"per_minute": 12}})
    assert patched.status_code == 200, patched.text
    limits = patched.json()["limits"]
    assert limits["per_minute"] == 12 and limits["min_interval_s"] == 2.5
    assert api.accounts.get("gw").spec.token.get_secret_value() == f"tok-inst-{api.prefix}-secret"  # type: ignore[union-attr]
    bad = api.http.patch("/v1/accounts/gw", json={"limits": {"per_minute": -1}})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "limits.per_minute"
    assert api.http.get("/v1/accounts/gw").json()["limits"]["per_minute"] == 12


def test_unreadable_csv_upload_is_a_422_not_a_500(api: ApiStack) -> None:
    put_account(api, "gw", "gewe", f"inst-{api.prefix}")
    before = api.stored_keys()
    huge_field = "to,name\nwxid_a," + "x" * (200 * 1024) + "\n"
    response = api.http.post(
        "/v1/campaigns/upload",
        data={"spec": json.dumps({"name": "csv", "account": "gw", "message": {"kind": "text", "text": "{name}"}})},
        files={"recipients": ("r.csv", huge_field.encode(), "text/csv")},
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "recipients", response.text
    assert api.stored_keys() == before


@pytest.mark.parametrize(
    ("vendor", "revocable"), [("gewe", True), ("ecloud", True), ("ohwxapi", True), ("gewe-legacy", False)]
)
def test_revoke_a_sent_message_with_its_exact_ids(api_stack: ApiStack, vendor: str, revocable: bool) -> None:
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "acct", vendor, instance)
    api_stack.start_worker()
    api_stack.start("scheduler")
    job = api_stack.http.post(
        "/v1/messages", json={"account": "acct", "to": "wxid_rv", "message": {"kind": "text", "text": "oops"}}
    ).json()["id"]
    wait_for(lambda: api_stack.http.get(f"/v1/messages/{job}").json()["status"] == "sent", timeout=30, what="sent")
    response = api_stack.http.post(f"/v1/messages/{job}/revoke")
    if not revocable:
        assert response.status_code == 409 and response.json()["error"]["code"] == "unsupported"
        return
    assert response.status_code == 200, response.text
    (record,) = sim_sends(api_stack, instance=instance)
    assert record["revoked"] is True
    detail = api_stack.http.get(f"/v1/messages/{job}").json()
    assert detail["revoked_at"] and detail["history"][-1]["event"] == "revoked"
    again = api_stack.http.post(f"/v1/messages/{job}/revoke")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_revoked"


def test_an_idempotency_key_reused_for_a_different_request_is_a_conflict(api: ApiStack) -> None:
    put_account(api, "gw", "gewe", f"inst-{api.prefix}")
    body = {"account": "gw", "to": "wxid_a", "message": {"kind": "text", "text": "x"}, "idempotency_key": "k-1"}
    first = api.http.post("/v1/messages", json=body).json()["id"]
    assert api.http.post("/v1/messages", json=body).json()["id"] == first
    other = api.http.post("/v1/messages", json={**body, "to": "wxid_other"})
    assert other.status_code == 409 and other.json()["error"]["field"] == "idempotency_key"
    # a replay that adds the suppression override asks for more than the stored job does (attack round 4: it
    # answered the job without the override and the audit recorded an override that never happened)
    forced = api.http.post("/v1/messages", json={**body, "ignore_suppression": True})
    assert forced.status_code == 409 and forced.json()["error"]["code"] == "idempotency_conflict", forced.text
    assert api.http.get(f"/v1/messages/{first}").json()["ignore_suppression"] is False
    overriding = {**body, "idempotency_key": "k-2", "ignore_suppression": True}
    forced_first = api.http.post("/v1/messages", json=overriding).json()["id"]
    assert api.http.post("/v1/messages", json=overriding).json()["id"] == forced_first  # its own replay still is one
    campaign = {
        "name": "c",
        "account": "gw",
        "recipients": [{"to": "wxid_b"}],
        "message": {"kind": "text", "text": "x"},
        "idempotency_key": "k-1",
    }
    created = api.http.post("/v1/campaigns", json=campaign)
    assert created.status_code == 202 and created.json()["id"] != first  # messages and campaigns: separate keys
    changed = api.http.post("/v1/campaigns", json={**campaign, "message": {"kind": "text", "text": "y"}})
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "idempotency_conflict"


def test_a_finished_campaign_cannot_be_cancelled_and_replays_report_its_status(api_stack: ApiStack) -> None:
    put_account(api_stack, "gw", "gewe", f"inst-{api_stack.prefix}")
    api_stack.start_worker()
    api_stack.start("scheduler")
    body = {
        "name": "c",
        "account": "gw",
        "recipients": [{"to": "wxid_f"}],
        "message": {"kind": "text", "text": "x"},
        "idempotency_key": "fin",
    }
    cid = api_stack.http.post("/v1/campaigns", json=body).json()["id"]
    wait_campaign(api_stack, cid)
    assert api_stack.http.post("/v1/campaigns", json=body).json()["status"] == "finished"
    refused = api_stack.http.post(f"/v1/campaigns/{cid}/cancel")
    assert refused.status_code == 409
    for action in ("pause", "resume"):  # like cancel: a 409 saying why, never a 200 that changes nothing
        refused = api_stack.http.post(f"/v1/campaigns/{cid}/{action}")
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == {
            "code": "conflict", "message": f"cannot {action} a campaign that is finished", "field": None
        }  # fmt: skip
    assert api_stack.http.get(f"/v1/campaigns/{cid}").json()["counts"]["sent"] == 1


def test_the_openapi_description_names_every_resource_and_the_favicon_is_served(api: ApiStack) -> None:
    description = api.http.get("/openapi.json").json()["info"]["description"]
    for resource in ("accounts", "contacts", "audiences", "messages", "campaigns", "dead letters", "schedules",
                     "suppressions", "callbacks", "keys", "audit", "stats"):  # fmt: skip
        assert resource in description, resource
    icon = httpx.get(f"{api.api_url}/favicon.ico")  # no token: browsers ask for it on every page
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg")
    root = httpx.get(f"{api.api_url}/")  # the address the dev banner labels "API": no 404
    assert root.status_code in (302, 307) and root.headers["location"] == "/console"
