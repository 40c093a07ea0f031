"""Audiences end to end: a contact sync from the simulator under the account's lease, then campaigns to an
account's own friends, labels and groups. What is checked is what the vendor saw: the contact calls (their
gaps, never beside a send), the sends (exactly the expected set, once each, ``{name}`` filled, groups with
the group gap)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator.contacts import friend_labels
from simulator.server import SimulatorServer
from tests.conftest import ApiStack
from tests.e2e.test_pipeline import sim_sends
from tests.procs import wait_for
from tests.scheduler.api.test_routes import all_deliveries, put_account, wait_campaign
from tests.scheduler.cli.test_ops import cli_runner

pytestmark = pytest.mark.e2e

FRIENDS, ROOMS = 2000, 30
GAP_MIN_S = 0.01
GROUP_GAP_S = 0.3
SYNC_ENV = {
    "BROADCAST_CONTACTS_GAP_MIN_S": str(GAP_MIN_S),
    "BROADCAST_CONTACTS_GAP_MAX_S": "0.03",
    "BROADCAST_CONTACTS_LIST_TIMEOUT_S": "0.5",
}
#: the simulator and the worker share this machine's clock; a few ms cover float rounding only
TOLERANCE_S = 0.005


def contact_calls(stack: ApiStack, instance: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=stack.sim.url) as admin:
        return list(admin.get("/_sim/contact_calls", params={"instance": instance}).json()["calls"])


def give_contacts(stack: ApiStack, vendor: str, instance: str, friends: int, rooms: int) -> None:
    with httpx.Client(base_url=stack.sim.url) as admin:
        body = {"vendor": vendor, "instance": instance, "friends": friends, "chatrooms": rooms,
                "list_slow_s": 3, "cache_delay_s": 0.5}  # fmt: skip
        admin.post("/_sim/contacts", json=body).raise_for_status()


def sync(stack: ApiStack, account: str, timeout: float = 120) -> dict[str, Any]:
    response = stack.http.post(f"/v1/accounts/{account}/contacts/sync")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "running"

    def ended() -> bool:
        return stack.http.get(f"/v1/accounts/{account}/contacts/sync").json()["status"] != "running"

    wait_for(ended, timeout=timeout, what="the contact sync", interval=0.2)
    return dict(stack.http.get(f"/v1/accounts/{account}/contacts/sync").json())


@pytest.fixture
def sync_stack(redis_url: str, sim: SimulatorServer, tmp_path: Path) -> Any:
    s = ApiStack(redis_url, sim, tmp_path, **SYNC_ENV)
    yield s
    s.stop()


@pytest.mark.timeout(300)
def test_a_synced_account_reaches_its_labels_and_groups_once_each_with_names_and_the_group_gap(
    sync_stack: ApiStack,
) -> None:
    stack, p = sync_stack, sync_stack.prefix
    instance = f"{p}-gw"
    put_account(stack, "gw", "gewe", instance, per_minute=6000, min_interval_s=0.02, jitter_s=0,
                group_min_interval_s=GROUP_GAP_S, group_jitter_s=0)  # fmt: skip
    give_contacts(stack, "gewe", instance, FRIENDS, ROOMS)
    options = stack.http.patch("/v1/accounts/gw", json={"options": {"contacts_members": "true"}})
    assert options.status_code == 200, options.text
    stack.start_worker()
    stack.start("scheduler")

    # never synced: refused, nothing stored
    before = stack.stored_keys()
    body = {"name": "early", "message": {"kind": "text", "text": "{name} 你好"}, "audience": {"accounts": ["gw"]}}
    refused = stack.http.post("/v1/campaigns", json=body)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == {
        **refused.json()["error"],
        "code": "contacts_not_synced",
        "field": "audience.accounts[0]",
    }
    assert stack.stored_keys() == before

    # a campaign sends on the account while it syncs: the two never overlap at the vendor
    busy = [{"to": f"wxid_busy{i:02d}", "account": "gw"} for i in range(40)]
    sent = stack.http.post(
        "/v1/campaigns", json={"name": "busy", "message": {"kind": "text", "text": "hi"}, "recipients": busy}
    )
    assert sent.status_code == 202, sent.text
    status = sync(stack, "gw")
    assert status["status"] == "done", status
    assert (status["friends"], status["chatrooms"], status["labels"], status["ghs"]) == (FRIENDS, ROOMS, 4, 2)
    wait_campaign(stack, sent.json()["id"])

    calls = contact_calls(stack, instance)
    endpoints = [c["endpoint"] for c in calls]
    assert "contacts/fetchContactsListCache" in endpoints  # the slow list timed out: the cache answered
    assert sum(c["ids"] for c in calls if c["endpoint"] == "contacts/getBriefInfo") == FRIENDS + ROOMS
    assert all(c["ids"] <= 20 for c in calls)  # the documented batch
    # the list call the worker gave up on (the vendor keeps building the list for its cache) is left out:
    # from the worker's side it ended at the timeout
    calls = [c for c in calls if c["ended"] - c["started"] < 0.5 + 0.1]
    ordered = sorted(calls, key=lambda c: c["started"])
    for prev, nxt in itertools.pairwise(ordered):
        assert nxt["started"] - prev["ended"] >= GAP_MIN_S - TOLERANCE_S, (prev, nxt)
    sends = sim_sends(stack, instance=instance)
    for call in calls:
        for s in sends:  # a send's [received, answered] never meets a contact call's
            assert s["sent_at"] <= call["started"] + TOLERANCE_S or s["received_at"] >= call["ended"] - TOLERANCE_S, (
                s,
                call,
            )

    assert sum(c["endpoint"] == "group/getChatroomMemberList" for c in calls) == ROOMS  # one per group, opted in
    rooms = stack.http.get("/v1/accounts/gw/contacts", params={"kind": "chatroom", "limit": 100}).json()["items"]
    assert sorted(r["members"] for r in rooms) == [3 + i for i in range(1, ROOMS + 1)]
    labels = {item["name"]: item for item in stack.http.get("/v1/accounts/gw/labels").json()["items"]}
    assert labels["VIP"]["count"] == FRIENDS // 4
    page = stack.http.get("/v1/accounts/gw/contacts", params={"label": "VIP", "q": "备注", "limit": 5}).json()
    assert page["next"] is not None and all("VIP" in c["labels"] and c["remark"] for c in page["items"])

    # the audience: VIP friends but colleagues, every group; {name} = remark, or else nickname
    audience = {"accounts": ["gw"], "labels_any": ["VIP"], "exclude_labels": ["同事"], "chatrooms": True}
    body = {"name": "vip", "message": {"kind": "text", "text": "{name} 你好"}, "audience": audience, "draft": True}
    created = stack.http.post("/v1/campaigns", json=body)
    assert created.status_code == 202, created.text
    tag = calls[0]["instance"]  # not needed: ids come from the listing
    del tag
    expected_friends = {i for i in range(1, FRIENDS + 1) if 1 in friend_labels(i) and 3 not in friend_labels(i)}
    answer = created.json()
    assert answer["total"] == len(expected_friends) + ROOMS
    assert answer["audience"]["sample"] and answer["audience"]["accounts"]["gw"]["sync_age_s"] >= 0
    cid = answer["id"]
    assert stack.http.post(f"/v1/campaigns/{cid}/start").status_code == 200
    wait_campaign(stack, cid, timeout=200)

    names = {c["wxid"]: c for c in _all_contacts(stack, "gw")}
    got = [s for s in sim_sends(stack, instance=instance) if not s["to"].startswith("wxid_busy")]
    tos = [s["to"] for s in got]
    assert len(tos) == len(set(tos))  # once each
    want = {w for w, c in names.items() if c["kind"] == "friend" and int(w[-5:]) in expected_friends}
    want |= {w for w, c in names.items() if c["kind"] == "chatroom"}
    assert set(tos) == want
    for s in got:
        contact = names[s["to"]]
        assert s["body"]["content"] == f"{contact['remark'] or contact['nickname']} 你好"
    ordered_sends = sorted(got, key=lambda s: s["received_at"])
    for prev, nxt in itertools.pairwise(ordered_sends):
        if nxt["to"].endswith("@chatroom"):
            assert nxt["received_at"] - prev["sent_at"] >= GROUP_GAP_S - TOLERANCE_S, [
                (s["to"], s["received_at"], s["sent_at"])
                for s in ordered_sends
                if abs(s["received_at"] - nxt["received_at"]) < 1
            ]


def _all_contacts(stack: ApiStack, account: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor: str | None = "0"
    while cursor is not None:
        page = stack.http.get(f"/v1/accounts/{account}/contacts", params={"cursor": cursor, "limit": 500}).json()
        out += page["items"]
        cursor = page["next"]
    return out


@pytest.mark.timeout(300)
def test_a_sync_killed_mid_way_resumes_and_finishes_and_bad_audiences_store_nothing(sync_stack: ApiStack) -> None:
    stack, p = sync_stack, sync_stack.prefix
    instance = f"{p}-ec"
    put_account(stack, "ec", "ecloud", instance)
    put_account(stack, "lg", "gewe-legacy", f"{p}-lg")
    give_contacts(stack, "ecloud", instance, FRIENDS, 5)
    worker = stack.start_worker()
    stack.start("scheduler")

    unsupported = stack.http.post("/v1/accounts/lg/contacts/sync")
    assert unsupported.status_code == 409 and unsupported.json()["error"]["code"] == "contacts_unsupported"
    assert "gewe-legacy" in unsupported.json()["error"]["message"]

    assert stack.http.post("/v1/accounts/ec/contacts/sync").status_code == 202

    def part_done() -> bool:
        return int(stack.http.get("/v1/accounts/ec/contacts/sync").json()["progress"]["done"]) >= 400

    wait_for(part_done, timeout=120, what="a fifth of the details", interval=0.05)
    worker.kill()
    worker.stop()
    mid = stack.http.get("/v1/accounts/ec/contacts/sync").json()
    assert mid["status"] == "running" and mid["progress"]["done"] < FRIENDS + 5
    stack.start_worker()

    def ended() -> bool:
        return stack.http.get("/v1/accounts/ec/contacts/sync").json()["status"] != "running"

    wait_for(ended, timeout=200, what="the resumed sync", interval=0.2)
    status = stack.http.get("/v1/accounts/ec/contacts/sync").json()
    assert (status["status"], status["friends"], status["chatrooms"]) == ("done", FRIENDS, 5), status
    calls = contact_calls(stack, instance)
    assert all(c["ids"] <= 20 for c in calls)

    # bad audiences: each refused naming the field, nothing stored
    before = stack.stored_keys()
    text = {"kind": "text", "text": "{name} 你好"}
    cases = [
        ({"accounts": ["ec"], "labels_any": ["nope"]}, None, 422, "audience.labels_any[0]"),
        ({"accounts": ["ec"]}, ["lg"], 422, "audience.accounts[0]"),
        ({"accounts": ["ec"], "exclude": [f"wxid_{i}" for i in range(1)], "friends": False}, None, 422, "audience"),
        ({"accounts": ["lg"]}, None, 409, "audience.accounts[0]"),
    ]
    for audience, accounts, code, field in cases:
        body: dict[str, Any] = {"name": "bad", "message": text, "audience": audience}
        if accounts:
            body["accounts"] = accounts
        refused = stack.http.post("/v1/campaigns", json=body)
        assert refused.status_code == code, (audience, refused.text)
        assert refused.json()["error"]["field"] == field, refused.text
    deep: Any = "ec"
    for _ in range(40):  # the body's shape is bounded before any parsing, the audience included
        deep = [deep]
    bounded = stack.http.post("/v1/campaigns", json={"name": "deep", "message": text, "audience": {"accounts": deep}})
    assert bounded.status_code == 422 and bounded.json()["error"]["code"] == "json_limit", bounded.text
    assert stack.stored_keys() == before
    extra = stack.http.post("/v1/campaigns", json={"name": "x", "message": {"kind": "text", "text": "{code}"},
                                                   "audience": {"accounts": ["ec"]}})  # fmt: skip
    assert extra.status_code == 422 and extra.json()["error"]["field"] == "message"

    # a schedule's campaign takes an audience too: checked against the last sync at creation, resolved at each firing
    schedule = {"cron": "0 9 * * *", "campaign": {"name": "weekly", "message": text,
                                                   "audience": {"accounts": ["ec"], "labels_any": ["VIP"]}}}  # fmt: skip
    made = stack.http.post("/v1/schedules", json=schedule)
    assert made.status_code == 201, made.text
    schedule["campaign"]["audience"] = {"accounts": ["lg"]}  # type: ignore[index]
    refused = stack.http.post("/v1/schedules", json=schedule)
    assert refused.status_code == 409 and refused.json()["error"]["field"] == "campaign.audience.accounts[0]", (
        refused.text
    )

    # the CLI: labels, a filtered listing, a draft for an audience with its preview
    run = cli_runner(stack)
    shown = run("contacts", "labels", "ec")
    assert shown.returncode == 0 and "VIP" in shown.stdout and str(FRIENDS // 4) in shown.stdout, shown.stderr
    listed = run("contacts", "list", "ec", "--label", "上海", "--limit", "3", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["total"] == FRIENDS // 5, listed.stderr
    draft = run("campaign", "create", "--name", "cli", "--account", "ec", "--label", "VIP", "--exclude-label", "同事",
                "--text", "{name} 你好", "--draft")  # fmt: skip
    assert draft.returncode == 0, draft.stderr
    expected = sum(1 for i in range(1, FRIENDS + 1) if 1 in friend_labels(i) and 3 not in friend_labels(i))
    assert f"{expected} recipients" in draft.stdout and "first recipients / 前几位接收人" in draft.stdout, draft.stdout
    first = [line.split() for line in draft.stdout.splitlines() if line.strip().startswith("wxid_")]
    assert first and all(row[1] == "ec" and row[2].startswith("name=") for row in first), draft.stdout
    assert "{'" not in draft.stdout  # the variables read as name=…, not as a Python dict

    # cancel: a running sync stops, the last finished one stays in use
    assert stack.http.post("/v1/accounts/ec/contacts/sync").status_code == 202
    cancelled = stack.http.post("/v1/accounts/ec/contacts/sync/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["friends"] == FRIENDS
    assert stack.http.delete("/v1/accounts/ec/contacts/sync").status_code == 409


@pytest.mark.timeout(300)
def test_an_audience_campaign_skips_suppressed_contacts_at_the_vendor(sync_stack: ApiStack) -> None:
    """Audiences become ordinary campaign jobs, so the suppression list (issue 19) holds for them at the
    moment of sending: an account's own entry and an all-accounts entry each skip one friend."""
    stack, p = sync_stack, sync_stack.prefix
    instance = f"{p}-hy"
    put_account(stack, "hy", "gewe", instance, per_minute=6000, min_interval_s=0.02, jitter_s=0)
    give_contacts(stack, "gewe", instance, 12, 0)
    stack.start_worker()
    stack.start("scheduler")
    assert sync(stack, "hy")["status"] == "done"
    friends = sorted(c["wxid"] for c in _all_contacts(stack, "hy") if c["kind"] == "friend")
    assert len(friends) == 12
    mine, everyone = friends[0], friends[1]
    for account, to in (("hy", mine), (None, everyone)):
        added = stack.http.post("/v1/suppressions", json={"account": account, "to": to, "reason": "opted_out"})
        assert added.status_code == 201, added.text

    body = {"name": "hygiene", "message": {"kind": "text", "text": "{name} 你好"}, "audience": {"accounts": ["hy"]}}
    created = stack.http.post("/v1/campaigns", json=body)
    assert created.status_code == 202, created.text
    final = wait_campaign(stack, created.json()["id"])
    assert final["counts"]["sent"] == 10 and final["counts"]["skipped"] == 2, final["counts"]
    got = {s["to"] for s in sim_sends(stack, instance=instance)}
    assert got == set(friends) - {mine, everyone}  # the vendor never heard of the two
    skipped = all_deliveries(stack, created.json()["id"], "skipped")
    assert sorted((d["to"], d["skip_reason"]) for d in skipped) == sorted(
        [(mine, "suppressed"), (everyone, "suppressed")]
    )
