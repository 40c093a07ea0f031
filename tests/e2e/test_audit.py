"""The audit trail and the charts' counts end to end: two named keys drive a campaign through a real worker
and scheduler; the audit names who did each step, and the campaign's timeline counts its sends."""

from __future__ import annotations

import httpx

from tests.conftest import ApiStack
from tests.scheduler.api.test_routes import put_account, wait_campaign


def test_the_audit_names_each_key_and_the_timeline_counts_the_sends(api_stack: ApiStack) -> None:
    http = api_stack.http
    keys = {}
    for name, role in (("alice", "operator"), ("bob", "operator"), ("vera", "viewer")):
        keys[name] = http.post("/v1/keys", json={"name": name, "role": role}).json()["key"]

    def as_(name: str) -> httpx.Client:
        return httpx.Client(base_url=api_stack.api_url, headers={"Authorization": f"Bearer {keys[name]}"}, timeout=30)

    put_account(api_stack, "gw", "gewe", f"inst-{api_stack.prefix}-gw")
    api_stack.start_worker()
    api_stack.start("scheduler")
    with as_("alice") as alice, as_("bob") as bob, as_("vera") as vera:
        created = alice.post(
            "/v1/campaigns",
            json={
                "name": "audit",
                "accounts": ["gw"],
                "draft": True,
                "recipients": [{"to": f"wxid_a{i}"} for i in range(5)],
                "message": {"kind": "text", "text": "hi"},
            },
        )
        assert created.status_code == 202, created.text
        cid = created.json()["id"]
        assert vera.post(f"/v1/campaigns/{cid}/start").status_code == 403  # recorded: who tried
        assert bob.post(f"/v1/campaigns/{cid}/start").status_code == 200
        assert wait_campaign(api_stack, cid)["counts"]["sent"] == 5
        paused = bob.post(f"/v1/campaigns/{cid}/pause").status_code
        timeline = vera.get(f"/v1/campaigns/{cid}/timeline").json()
        audit = vera.get("/v1/audit", params={"target": f"campaign:{cid}"}).json()["items"]
        alice_only = vera.get("/v1/audit", params={"key": "alice"}).json()["items"]
    assert sum(m["sent"] for m in timeline["minutes"]) == 5 and timeline["id"] == cid
    http.delete("/v1/keys/bob")
    steps = [(e["key"], e["role"], e["action"], e["status"]) for e in reversed(audit)]
    assert steps == [
        ("alice", "operator", "campaign.create", 202),
        ("vera", "viewer", "campaign.start", 403),
        ("bob", "operator", "campaign.start", 200),
        ("bob", "operator", "campaign.pause", paused),
    ]
    assert [e["action"] for e in alice_only] == ["campaign.create"]
    everything = http.get("/v1/audit", params={"limit": 3}).json()
    assert everything["items"][0]["action"] == "key.revoke"
    assert everything["items"][0]["target"] == "key:bob" and everything["items"][0]["key"] == "bootstrap"
    older = http.get("/v1/audit", params={"limit": 50, "cursor": everything["next_cursor"]}).json()["items"]
    actions = [e["action"] for e in everything["items"] + older]
    # the oldest, newest first; each creation names the role it granted
    assert actions[-4:] == ["account.put", "key.create_viewer", "key.create_operator", "key.create_operator"]
    fleet = http.get("/v1/stats/fleet", params={"hours": 1}).json()
    assert sum(m["sent"] for m in fleet["minutes"]) >= 5
    assert [a["id"] for a in fleet["accounts"]] == ["gw"] and fleet["accounts"][0]["sent_today"] == 5


def test_keys_and_audit_from_the_cli(api: ApiStack) -> None:
    from tests.scheduler.cli.test_ops import cli_runner

    run = cli_runner(api)
    name = f"dora-{api.prefix}"
    made = run("keys", "create", name, "--role", "viewer")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    listing = run("keys", "list", "--json")
    assert name in listing.stdout and key not in listing.stdout
    denied = run("keys", "create", "someone", token=key)  # a viewer cannot hand out keys
    assert denied.returncode != 0 and "admin" in denied.stderr
    assert run("keys", "revoke", name).returncode == 0
    assert run("campaign", "list", token=key).returncode != 0  # revoked: refused
    trail = run("audit", "--target", f"key:{name}")
    assert trail.returncode == 0
    lines = [line for line in trail.stdout.splitlines() if "key." in line]
    assert [("key.revoke" in line, "key.create" in line) for line in lines] == [(True, False), (False, True)]
    assert trail.stdout.rstrip().endswith("2 shown / 显示 2 条"), trail.stdout
    nothing = run("audit", "--target", "key:nobody")  # no entries: still the count, like every list
    assert nothing.returncode == 0 and nothing.stdout.rstrip().endswith("0 shown / 显示 0 条"), nothing.stdout


def test_the_trail_is_trimmed_by_age_and_pages_by_cursor(redis_url: str) -> None:
    import time
    import uuid

    import redis

    from worker.store.audit import AuditLog

    log = AuditLog(redis.Redis.from_url(redis_url, decode_responses=True), f"a{uuid.uuid4().hex[:8]}", 0.2)
    log.record(key="old", role="admin", action="key.create", target="key:x", status=201)
    time.sleep(0.3)
    for n in range(5):
        log.record(key="new", role="operator", action="campaign.pause", target=f"campaign:{n}", status=200)
    items, cursor = log.page(limit=3)
    assert [e["target"] for e in items] == ["campaign:4", "campaign:3", "campaign:2"] and cursor
    rest, end = log.page(limit=3, cursor=cursor)
    assert [e["target"] for e in rest] == ["campaign:1", "campaign:0"] and end is None  # "old" is gone
    assert log.page(cursor="0-0") == ([], None)
    assert log.page(target="campaign:1")[0][0]["key"] == "new"
