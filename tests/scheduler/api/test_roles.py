"""Keys with roles (issue 23): every route declares its role, each role is tried on every route over real
HTTP (a `broadcast api` process), keys are stored hashed, revoked at once and rate limited."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Mount

from scheduler.api.app import create_app
from scheduler.api.roles import DRY_RUNS, OWN_KEY, PUBLIC, RULES, Rule
from scheduler.api.state import ROLE_ZH, role_needed
from tests.conftest import API_TOKEN, ApiStack
from tests.procs import wait_for
from tests.scheduler.api.test_routes import put_account
from worker.settings import Settings
from worker.store.audit import REFUSALS_PER_MIN
from worker.store.operators import Role


def route_table(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every endpoint, inside included routers too (FastAPI keeps them nested)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from route_table(included.routes, prefix + getattr(route.include_context, "prefix", ""))  # type: ignore[attr-defined]
        elif isinstance(route, Mount):
            continue  # static files: the console's assets and the offline docs' (no data, no key)
        elif isinstance(route, APIRoute) or hasattr(route, "methods"):
            for method in sorted(getattr(route, "methods", None) or ()):
                if method != "HEAD":
                    yield method, prefix + route.path  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def app_routes(redis_url: str) -> list[tuple[str, str]]:
    app = create_app(Settings(env="dev", api_token="x"), redis.Redis.from_url(redis_url))
    return sorted(set(route_table(app.routes)))


def test_every_route_declares_its_role(app_routes: list[tuple[str, str]]) -> None:
    """A route added without its line in scheduler/api/roles.py fails here (and answers 403 but to admins)."""
    undeclared = [r for r in app_routes if r not in RULES and r not in PUBLIC and r not in OWN_KEY]
    assert undeclared == [], f"declare a role in scheduler/api/roles.py RULES for: {undeclared}"
    stale = [r for r in RULES if r not in app_routes]
    assert stale == [], f"RULES names routes that do not exist: {stale}"
    assert all(path.startswith("/v1/") for _, path in RULES)
    assert not any(path.startswith("/v1/") for _, path in PUBLIC)
    assert not OWN_KEY & RULES.keys() and set(app_routes) >= OWN_KEY
    # every route that changes state has an audit action; reads have none
    for (method, path), rule in RULES.items():
        assert bool(rule.action) == (method != "GET" and (method, path) not in DRY_RUNS), (method, path)


@pytest.fixture(scope="module")
def keys(api: ApiStack) -> dict[Role, str]:
    made = {}
    for role in Role:
        answer = api.http.post("/v1/keys", json={"name": f"t-{role.value}-{api.prefix}", "role": role.value})
        assert answer.status_code == 201, answer.text
        made[role] = answer.json()["key"]
    return made


def concrete(path: str) -> str:
    """A path template with made-up ids: an allowed caller gets 404/422, never a change."""
    return re.sub(r"\{[^}]+\}", "nosuchthing0", path)


@pytest.mark.parametrize(("route", "rule"), sorted(RULES.items()), ids=lambda v: str(v))
def test_each_role_against_every_route(
    api: ApiStack, keys: dict[Role, str], route: tuple[str, str], rule: Rule
) -> None:
    method, path = route
    for role, key in keys.items():
        answer = httpx.request(
            method,
            api.api_url + concrete(path),
            headers={"Authorization": f"Bearer {key}"},
            json={} if method != "GET" else None,
            timeout=30,
        )
        if role.allows(rule.role):
            assert answer.status_code not in (401, 403, 429), (role, answer.status_code, answer.text)
        else:
            assert answer.status_code == 403, (role, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "forbidden" and f"needs the {rule.role.value} role" in error["message"]
            assert "角色" in error["message"]  # read first in Chinese
            assert f"需要“{ROLE_ZH[rule.role]}”角色" in error["message"] and "需要 " not in error["message"]


def test_unknown_and_revoked_keys_are_401_and_keys_are_stored_hashed(api: ApiStack) -> None:
    made = api.http.post("/v1/keys", json={"name": f"carol-{api.prefix}", "role": "viewer"}).json()
    key = made["key"]
    assert made["role"] == "viewer" and len(key) > 40
    as_carol = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{api.api_url}/v1/campaigns", headers=as_carol).status_code == 200
    # shown once: never listed, and Redis holds only its SHA-256
    listing = api.http.get("/v1/keys").json()["keys"]
    carol = next(k for k in listing if k["name"] == f"carol-{api.prefix}")
    assert carol["role"] == "viewer" and carol["last_used"] is not None
    assert key not in api.http.get("/v1/keys").text and "digest" not in carol
    for name in api.redis.scan_iter(match=f"{api.prefix}:*"):
        kind = api.redis.type(name)
        values: list[Any] = list(api.redis.hgetall(name).values()) if kind == "hash" else []
        assert key not in values
    # a second key of one name is refused; a wrong key is 401, not 403
    assert api.http.post("/v1/keys", json={"name": f"carol-{api.prefix}", "role": "admin"}).status_code == 409
    assert httpx.get(f"{api.api_url}/v1/campaigns", headers={"Authorization": f"Bearer {key}x"}).status_code == 401
    revoked = api.http.delete(f"/v1/keys/carol-{api.prefix}").json()
    assert revoked == {
        "revoked": f"carol-{api.prefix}", "paused_schedules": [], "paused_campaigns": [], "held_drafts": [],
        "cancelled_messages": [],
    }  # fmt: skip
    gone = httpx.get(f"{api.api_url}/v1/campaigns", headers=as_carol)
    assert gone.status_code == 401 and gone.json()["error"]["field"] == "Authorization"
    assert api.http.delete(f"/v1/keys/carol-{api.prefix}").status_code == 404
    bad = api.http.post("/v1/keys", json={"name": "a b", "role": "viewer"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "name"
    assert api.http.post("/v1/keys", json={"name": "x", "role": "root"}).json()["error"]["field"] == "role"


def test_a_key_over_its_rate_gets_429_with_retry_after(api: ApiStack) -> None:
    made = api.http.post("/v1/keys", json={"name": f"fast-{api.prefix}", "role": "viewer", "rate_per_min": 3})
    headers = {"Authorization": f"Bearer {made.json()['key']}"}
    codes = [httpx.get(f"{api.api_url}/v1/campaigns", headers=headers) for _ in range(8)]
    limited = [c for c in codes if c.status_code == 429]
    assert len(limited) >= 2, [c.status_code for c in codes]  # 3 a minute: 6 at most if a minute turns
    assert 1 <= int(limited[0].headers["Retry-After"]) <= 60
    assert limited[0].json()["error"]["code"] == "rate_limited"
    # the bootstrap key is not limited by it
    assert api.http.get("/v1/campaigns").status_code == 200


def test_metrics_count_against_a_keys_rate(api: ApiStack) -> None:
    made = api.http.post("/v1/keys", json={"name": f"scrape-{api.prefix}", "role": "viewer", "rate_per_min": 2})
    headers = {"Authorization": f"Bearer {made.json()['key']}"}
    codes = [httpx.get(f"{api.api_url}/metrics", headers=headers).status_code for _ in range(6)]
    assert codes.count(429) >= 2, codes


@pytest.mark.parametrize(
    "name",
    [
        "Bootstrap",
        "ANONYMOUS",
        "bootstrap.",
        "anonymous@x",
        "bootstrap-ci",
        "callback",
        "Vendor",
        "callback.x",
        "worker",
        "Worker-1",
    ],
)
def test_names_that_read_as_a_reserved_one_are_refused(api: ApiStack, name: str) -> None:
    answer = api.http.post("/v1/keys", json={"name": name, "role": "viewer"})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "name", answer.text


def test_one_name_created_at_once_by_many_is_one_201_and_409s(api: ApiStack) -> None:
    from concurrent.futures import ThreadPoolExecutor

    body = {"name": f"race-{api.prefix}", "role": "viewer"}
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    with ThreadPoolExecutor(12) as pool:
        codes = list(
            pool.map(lambda _: httpx.post(f"{api.api_url}/v1/keys", json=body, headers=headers).status_code, range(24))
        )
    assert sorted(set(codes)) == [201, 409] and codes.count(201) == 1, codes


@pytest.mark.parametrize("cursor", ["99999999999999999999-0", "1-18446744073709551616", "\u0661-\u0660", "\uff11-0"])
def test_an_audit_cursor_redis_would_refuse_is_422(api: ApiStack, cursor: str) -> None:
    answer = api.http.get("/v1/audit", params={"cursor": cursor})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "cursor", answer.text


def test_a_suppression_added_or_removed_is_audited_with_its_account_and_recipient(api: ApiStack) -> None:
    to = f"wxid_audit{api.prefix}".replace("-", "")
    added = api.http.post("/v1/suppressions", json={"to": to, "reason": "manual"})
    assert added.status_code == 201, added.text
    removed = api.http.delete(f"/v1/suppressions/*/{to}")
    entries = api.http.get("/v1/audit", params={"limit": 50}).json()["items"]
    # the newest entry per action (the module's other tests made refused suppression calls before)
    targets = {e["action"]: e["target"] for e in reversed(entries) if e["action"].startswith("suppression.")}
    assert targets.get("suppression.add") == f"suppression:*/{to}", entries
    assert removed.status_code == 204, removed.text
    assert targets.get("suppression.remove") == f"suppression:*/{to}", entries


def test_a_refused_callers_path_is_audited_short_and_on_one_line(api: ApiStack) -> None:
    """A viewer's 403s are recorded, but the path is the caller's: a 10,000-character id must not fill
    Redis, and a newline or a right-to-left override must not forge a line of `broadcast audit`. (A key of
    its own: the module's viewer key may have used up its recorded refusals of this minute.)"""
    made = api.http.post("/v1/keys", json={"name": f"paths-{api.prefix}", "role": "viewer"}).json()
    viewer = {"Authorization": f"Bearer {made['key']}"}
    long_id = "A" * 10_000
    forged = f"c1\n2026-12-05 05:00 bootstrap admin key.revoke\u202e{api.prefix}"
    for campaign in (long_id, forged):
        answer = api.http.post(f"/v1/campaigns/{quote(campaign, safe='')}/pause", headers=viewer)
        assert answer.status_code == 403, answer.text
    entries = api.http.get("/v1/audit", params={"limit": 20, "action": "campaign.pause"}).json()["items"]
    targets = [e["target"] for e in entries if e["status"] == 403]
    long_target = next(t for t in targets if t.startswith("campaign:AAAA"))
    assert long_target == "campaign:" + "A" * 128 + "…(+9872 chars)"
    forged_target = next(t for t in targets if api.prefix in t)
    assert "\n" not in forged_target and "\u202e" not in forged_target
    assert forged_target == f"campaign:c1\\u000a2026-12-05 05:00 bootstrap admin key.revoke\\u202e{api.prefix}"


def test_revoking_a_key_pauses_the_schedules_it_created_and_only_those(api: ApiStack) -> None:
    """A revoked operator's recurring push must not go on sending in nobody's name (an attack helper's
    schedule fired a minute after its key was revoked)."""
    from tests.scheduler.api.test_routes import put_account

    put_account(api, "sched-acct", "gewe", f"inst-{api.prefix}-s")
    name = f"leaver-{api.prefix}"
    leaver = api.http.post("/v1/keys", json={"name": name, "role": "operator"}).json()["key"]
    body = {
        "cron": "0 9 * * *",
        "timezone": "Asia/Shanghai",
        "message": {"account": "sched-acct", "to": "1@chatroom", "message": {"kind": "text", "text": "早"}},
    }
    as_leaver = {"Authorization": f"Bearer {leaver}"}
    theirs = api.http.post("/v1/schedules", json=body, headers=as_leaver).json()
    # one they had paused already: flagged too, or any operator could resume it in their name (attack round 4)
    parked = api.http.post("/v1/schedules", json=body, headers=as_leaver).json()
    assert api.http.post(f"/v1/schedules/{parked['id']}/pause", headers=as_leaver).status_code == 200
    ours = api.http.post("/v1/schedules", json=body).json()
    try:
        assert (theirs["created_by"], ours["created_by"]) == (name, "bootstrap")
        revoked = api.http.delete(f"/v1/keys/{name}").json()
        assert revoked["revoked"] == name and sorted(revoked["paused_schedules"]) == sorted(
            [theirs["id"], parked["id"]]
        )
        assert api.http.get(f"/v1/schedules/{theirs['id']}").json()["paused"] is True
        assert api.http.get(f"/v1/schedules/{ours['id']}").json()["paused"] is False
        # another operator cannot undo it: sending again in a revoked key's name takes an admin
        other = api.http.post("/v1/keys", json={"name": f"stayer-{api.prefix}", "role": "operator"}).json()["key"]
        refused = api.http.post(f"/v1/schedules/{theirs['id']}/resume", headers={"Authorization": f"Bearer {other}"})
        assert refused.status_code == 403 and "admin" in refused.text, refused.text
        assert api.http.get(f"/v1/schedules/{theirs['id']}").json()["paused"] is True
        refused = api.http.post(f"/v1/schedules/{parked['id']}/resume", headers={"Authorization": f"Bearer {other}"})
        assert refused.status_code == 403 and api.http.get(f"/v1/schedules/{parked['id']}").json()["owner_revoked"]
        resumed = api.http.post(f"/v1/schedules/{theirs['id']}/resume").json()  # the bootstrap key: admin
        assert (resumed["paused"], resumed["owner_revoked"]) == (False, False)
    finally:
        for schedule in (theirs, parked, ours):  # due within the hour another test looks ahead near 00:00 UTC
            api.http.delete(f"/v1/schedules/{schedule['id']}")


def test_a_schedule_resume_reads_the_revocation_flag_in_its_own_transaction(
    api: ApiStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack round 5: an operator's resume racing the revocation could clear owner_revoked (the flag was
    read, then the resume written apart). The resume now reads it under WATCH: a revocation landing between
    its read and its write makes it read again, and refuse."""
    from scheduler.dispatch.schedules import OwnerRevoked, Schedules, ScheduleSpec
    from scheduler.intake.campaigns import Campaigns
    from scheduler.intake.producer import Producer
    from worker.store.accounts import AccountStore
    from worker.store.ledger import Ledger

    put_account(api, "race-acct", "gewe", f"inst-{api.prefix}-race")
    ledger, accounts = Ledger(api.redis, api.prefix), AccountStore(api.redis, api.prefix)
    schedules = Schedules(api.redis, api.prefix, Producer(ledger, accounts), Campaigns(ledger, accounts))
    body = {"cron": "0 9 * * *", "timezone": "Asia/Shanghai",
            "message": {"account": "race-acct", "to": "wxid_x", "message": {"kind": "text", "text": "早"}}}  # fmt: skip
    made = schedules.create(ScheduleSpec.model_validate(body), created_by="racer")
    schedules.pause(made["id"])
    read = redis.client.Pipeline.hmget
    revocations: list[list[str]] = []

    def read_then_revoke(pipe: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
        got = read(pipe, *args, **kwargs)
        if not revocations:  # the revocation lands between the resume's read and its write
            revocations.append(schedules.pause_created_by("racer"))
        return got

    monkeypatch.setattr(redis.client.Pipeline, "hmget", read_then_revoke)
    try:
        with pytest.raises(OwnerRevoked):
            schedules.resume(made["id"], admin=False)
        monkeypatch.undo()
        assert revocations == [[made["id"]]]
        after = schedules.get(made["id"])
        assert after is not None and (after["paused"], after["owner_revoked"]) == (True, True)
        resumed = schedules.resume(made["id"], admin=True)
        assert resumed is not None and (resumed["paused"], resumed["owner_revoked"]) == (False, False)
    finally:
        schedules.delete(made["id"])


def test_revoking_a_key_pauses_its_campaigns_and_cancels_its_future_messages(api: ApiStack) -> None:
    """A revoked key's future-dated campaign or message must not go out later in nobody's name (attack
    round 4): its unfinished campaigns pause (a draft is flagged), its messages not sent yet are cancelled
    (scheduled, or queued: no worker runs here, as behind a paused account; attack round 5), and only an
    admin sends any of it again. Someone else's stay."""
    put_account(api, "rev-acct", "gewe", f"inst-{api.prefix}-r")
    name = f"leaver-c-{api.prefix}"
    leaver = {
        "Authorization": f"Bearer {api.http.post('/v1/keys', json={'name': name, 'role': 'operator'}).json()['key']}"
    }
    other = api.http.post("/v1/keys", json={"name": f"stayer-c-{api.prefix}", "role": "operator"}).json()["key"]
    as_other = {"Authorization": f"Bearer {other}"}
    later = "2099-01-01T09:00:00+08:00"

    def campaign(headers: dict[str, str], **extra: Any) -> str:
        body = {"name": "c", "account": "rev-acct", "message": {"kind": "text", "text": "早"},
                "recipients": [{"to": "wxid_r1"}, {"to": "wxid_r2"}], **extra}  # fmt: skip
        answer = api.http.post("/v1/campaigns", json=body, headers=headers)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    def message(headers: dict[str, str], **extra: Any) -> str:
        body = {"account": "rev-acct", "to": "wxid_r3", "message": {"kind": "text", "text": "晚"}, **extra}
        answer = api.http.post("/v1/messages", json=body, headers=headers)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    future, live, draft = campaign(leaver, send_at=later), campaign(leaver), campaign(leaver, draft=True)
    ours = campaign({}, send_at=later)
    their_later, their_now, our_later = message(leaver, send_at=later), message(leaver), message({}, send_at=later)
    assert api.http.get(f"/v1/campaigns/{future}").json()["created_by"] == name
    assert api.http.get(f"/v1/messages/{their_later}").json()["created_by"] == name
    tested = api.http.post(f"/v1/campaigns/{draft}/test", json={"to": ["wxid_t1"]}, headers=leaver)
    assert tested.status_code == 202, tested.text
    (their_test,) = [j["id"] for j in api.http.get(f"/v1/campaigns/{draft}").json()["tests"]["jobs"]]

    revoked = api.http.delete(f"/v1/keys/{name}").json()
    assert sorted(revoked["paused_campaigns"]) == sorted([future, live])
    assert revoked["held_drafts"] == [draft]
    # a test send is a message of the key too (attack round 6: it escaped the revocation)
    assert sorted(revoked["cancelled_messages"]) == sorted([their_later, their_now, their_test])
    # each campaign's and message's own history says why it stopped
    for target in (f"campaign:{future}", f"campaign:{draft}", f"message:{their_later}", f"key:{name}"):
        trail = api.http.get("/v1/audit", params={"target": target}).json()["items"]
        assert trail[0]["action"] == "key.revoke" and trail[0]["key"] == "bootstrap", (target, trail)
    shown = api.http.get(f"/v1/campaigns/{future}").json()
    assert (shown["status"], shown["owner_revoked"]) == ("paused", True)
    assert shown["pause_reason"] == "the key that created it was revoked: an admin may resume it"
    assert api.http.get(f"/v1/campaigns/{live}").json()["status"] == "paused"
    assert api.http.get(f"/v1/campaigns/{draft}").json()["status"] == "draft"
    untouched = api.http.get(f"/v1/campaigns/{ours}").json()
    assert (untouched["status"], untouched["owner_revoked"], untouched["created_by"]) == (
        "scheduled",
        False,
        "bootstrap",
    )
    assert api.http.get(f"/v1/messages/{their_later}").json()["status"] == "cancelled"
    assert api.http.get(f"/v1/messages/{their_now}").json()["status"] == "cancelled"  # queued, never sent
    assert api.http.get(f"/v1/messages/{our_later}").json()["status"] == "scheduled"

    # another operator cannot send it in the revoked key's name; an admin can
    for path in (f"/v1/campaigns/{future}/resume", f"/v1/campaigns/{draft}/start"):
        refused = api.http.post(path, headers=as_other)
        assert refused.status_code == 403 and "admin" in refused.text, refused.text
    assert api.http.get(f"/v1/campaigns/{draft}").json()["status"] == "draft"
    resumed = api.http.post(f"/v1/campaigns/{future}/resume").json()
    assert (resumed["status"], resumed["owner_revoked"], resumed["pause_reason"]) == ("scheduled", False, None)
    started = api.http.post(f"/v1/campaigns/{draft}/start").json()
    assert (started["status"], started["owner_revoked"]) == ("active", False)
    for cid in (future, live, draft, ours):
        api.http.post(f"/v1/campaigns/{cid}/cancel")


def revoked_midway(api: ApiStack, role: str, path: str, body: bytes, content_type: str) -> str:
    """Send ``body`` to ``path`` with a new key of ``role``, revoking the key once the door let the request
    in and before the body is whole; the answer's status line."""
    name = f"slow-{uuid.uuid4().hex[:8]}"
    key = api.http.post("/v1/keys", json={"name": name, "role": role}).json()["key"]
    host, port = api.api_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        conn.sendall(head.encode() + body[:5])
        time.sleep(0.3)  # the door has let it in; its body is still arriving
        assert api.http.delete(f"/v1/keys/{name}").status_code == 200
        conn.sendall(body[5:])
        return conn.recv(65536).decode().split("\r\n", 1)[0]


def test_a_key_revoked_while_its_request_arrives_changes_nothing(api: ApiStack) -> None:
    """The key is checked at the door, before the body: a write whose key is revoked while the body is still
    arriving is refused once it has arrived — an admin key must not mint a new one, an operator's campaign
    must not go out, also on the routes that read their body themselves (campaigns, suppression imports)."""
    backdoor = f"backdoor-{api.prefix}"
    minted = json.dumps({"name": backdoor, "role": "admin"}).encode()
    assert revoked_midway(api, "admin", "/v1/keys", minted, "application/json").startswith("HTTP/1.1 401")
    assert backdoor not in api.http.get("/v1/keys").text
    put_account(api, "revoked-gw", "gewe", f"inst-rev-{api.prefix}")
    campaign = {"name": f"late-{api.prefix}", "account": "revoked-gw", "message": {"kind": "text", "text": "x"}}
    sent = json.dumps({**campaign, "recipients": [{"to": "wxid_rev1"}]}).encode()
    assert revoked_midway(api, "operator", "/v1/campaigns", sent, "application/json").startswith("HTTP/1.1 401")
    assert f"late-{api.prefix}" not in api.http.get("/v1/campaigns", params={"limit": 200}).text
    rows = f"to,account\nwxid_rev_{api.prefix},revoked-gw\n".encode()
    assert revoked_midway(api, "operator", "/v1/suppressions/import", rows, "text/csv").startswith("HTTP/1.1 401")
    assert f"wxid_rev_{api.prefix}" not in api.http.get("/v1/suppressions", params={"account": "revoked-gw"}).text


def test_refusals_count_toward_the_rate_and_a_flood_of_them_stays_off_the_record(
    api: ApiStack, keys: dict[Role, str]
) -> None:
    """A viewer hammering an admin route gets 429 past its rate like any caller, and the audit trail keeps
    at most REFUSALS_PER_MIN of its refusals a minute, then one marker."""
    name = f"hammer-{api.prefix}"
    made = api.http.post("/v1/keys", json={"name": name, "role": "viewer", "rate_per_min": 25})
    headers = {"Authorization": f"Bearer {made.json()['key']}"}
    codes: list[int] = []
    while codes.count(429) < 5 and len(codes) < 200:  # a loaded machine may see the minute turn meanwhile
        codes.append(httpx.post(f"{api.api_url}/v1/keys", headers=headers, json={}).status_code)
    assert codes.count(429) >= 5 and set(codes) == {403, 429}, codes
    assert codes.index(429) >= 25, codes  # 25 a minute before the first 429
    entries = api.http.get("/v1/audit", params={"limit": 200, "key": name}).json()["items"]
    assert 0 < len(entries) <= 2 * (REFUSALS_PER_MIN + 1)  # the minute may turn during the run
    markers = [e for e in entries if e["target"].startswith("(more refusals")]
    assert markers and all(e["status"] == 403 for e in entries)


def test_a_name_taken_in_another_case_is_taken(api: ApiStack) -> None:
    """'vera' and 'VERA' would read as one key in the audit trail, with two roles."""
    name = f"vera-{api.prefix}"
    assert api.http.post("/v1/keys", json={"name": name, "role": "viewer"}).status_code == 201
    twin = api.http.post("/v1/keys", json={"name": name.upper(), "role": "admin"})
    assert twin.status_code == 409 and name in twin.json()["error"]["message"], twin.text
    assert name.upper() not in api.http.get("/v1/keys").text


def test_an_operators_flood_of_404s_stays_off_the_record_past_its_cap(api: ApiStack) -> None:
    name = f"probe-{api.prefix}"
    made = api.http.post("/v1/keys", json={"name": name, "role": "operator"}).json()
    headers = {"Authorization": f"Bearer {made['key']}"}
    codes = {httpx.post(f"{api.api_url}/v1/campaigns/c{i:04d}/pause", headers=headers).status_code for i in range(60)}
    assert codes == {404}
    entries = api.http.get("/v1/audit", params={"limit": 200, "key": name}).json()["items"]
    assert len(entries) <= 2 * (REFUSALS_PER_MIN + 1) and any(e["target"].startswith("(more") for e in entries)


def test_the_role_needed_reads_in_both_languages_without_stray_spaces() -> None:
    from worker.store.operators import Caller

    message = role_needed(Caller("vera", Role.VIEWER), Role.OPERATOR)
    assert message == (
        "this needs the operator role; key 'vera' is viewer / 需要“操作员”角色，密钥 'vera' 的角色是“只读”"
    )


@pytest.mark.parametrize(("path", "content_type"), [("/v1/campaigns", "application/json"),
                                                    ("/v1/suppressions/import", "text/csv")])  # fmt: skip
def test_a_client_gone_mid_body_is_a_capped_refusal_not_a_500(api: ApiStack, path: str, content_type: str) -> None:
    """A client that hangs up before its body arrived whole leaves no 500 in the audit trail and no traceback
    in the log (an operator could write hundreds a minute of both)."""
    name = f"gone-{uuid.uuid4().hex[:8]}"
    key = api.http.post("/v1/keys", json={"name": name, "role": "operator"}).json()["key"]
    host, port = api.api_url.removeprefix("http://").split(":")
    for _ in range(25):
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: 1000\r\n\r\n{{"
            )
            conn.sendall(head.encode())
            time.sleep(0.05)

    def recorded() -> list[dict[str, object]]:
        return list(api.http.get("/v1/audit", params={"limit": 200, "key": name}).json()["items"])

    wait_for(lambda: len(recorded()) >= REFUSALS_PER_MIN, timeout=30, what="the refusals on record")
    entries = recorded()
    assert {e["status"] for e in entries} == {400}, entries
    assert len(entries) <= 2 * (REFUSALS_PER_MIN + 1)  # capped like any refusal
    assert "ClientDisconnect" not in api.logs()


def test_a_trailing_slash_is_404_not_a_redirect_to_the_host_the_client_named(api: ApiStack) -> None:
    for path in ("/v1/keys/", "/v1/callbacks/shop/?key=secret"):
        answer = httpx.post(f"{api.api_url}{path}", headers={"Host": "evil.example"}, json={})
        assert answer.status_code in (401, 404) and "location" not in answer.headers, (path, answer.headers)


def test_a_dead_message_of_a_revoked_key_is_replayed_only_by_an_admin(api: ApiStack) -> None:
    """Attack round 6: any operator could replay a revoked key's dead message, sending again in its name.
    Now an operator gets 403 naming the admin role; an admin's replay makes the message the admin's."""
    from tests.conftest import claim_ready
    from worker.store.ledger import Ledger

    put_account(api, "dl-acct", "gewe", f"inst-{api.prefix}-dl")
    name = f"dl-leaver-{api.prefix}"
    leaver = api.http.post("/v1/keys", json={"name": name, "role": "operator"}).json()["key"]
    message = {"account": "dl-acct", "to": "wxid_dl", "message": {"kind": "text", "text": "x"}}
    job = api.http.post("/v1/messages", json=message, headers={"Authorization": f"Bearer {leaver}"}).json()["id"]
    ledger = Ledger(api.redis, api.prefix)
    claims = claim_ready(ledger, lease_ttl_s=30, batch_size=10)  # other tests' accounts may have jobs ready
    for other_claim in claims:
        if other_claim.account != "dl-acct":
            ledger.release(other_claim.account, other_claim.token)
    (claim,) = [c for c in claims if c.account == "dl-acct"]
    ledger.begin("dl-acct", claim.token, job, lease_ttl_s=30)
    ledger.finish_dead("dl-acct", claim.token, job, reason="permanent", error_class="permanent",
                       error="对方不是你的好友", history={})  # fmt: skip
    ledger.release("dl-acct", claim.token)
    assert api.http.delete(f"/v1/keys/{name}").status_code == 200
    other = api.http.post("/v1/keys", json={"name": f"dl-stayer-{api.prefix}", "role": "operator"}).json()["key"]
    as_other = {"Authorization": f"Bearer {other}"}
    refused = api.http.post(f"/v1/dead-letters/{job}/replay", headers=as_other)
    assert refused.status_code == 403 and "admin" in refused.text, refused.text
    bulk = api.http.post("/v1/dead-letters/replay", json={"ids": [job]}, headers=as_other).json()
    assert bulk["results"] == {job: "owner_revoked"} and bulk["replayed"] == 0
    assert api.http.get(f"/v1/messages/{job}").json()["status"] == "dead"
    replayed = api.http.post(f"/v1/dead-letters/{job}/replay")  # the bootstrap key: an admin
    assert replayed.status_code == 200 and replayed.json()["results"] == {job: "ok"}
    shown = api.http.get(f"/v1/messages/{job}").json()
    assert (shown["status"], shown["created_by"]) == ("queued", "bootstrap")
