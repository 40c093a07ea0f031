"""Recipient hygiene end to end (issue 19): real API, worker and scheduler processes, the simulator over HTTP.

A friend replies 退订 through a GeWe callback the simulator posts → the next campaign to them is skipped
and the vendor receives nothing for them; a "not a friend" answer suppresses that wxid for the next
campaign; two campaigns racing to one recipient under ``recipient_cap {max: 1, window_h: 24}`` → exactly
one message goes out. The callback endpoint answers a bounded fuzz pass without a 5xx and stores nothing
for a wrong key.
"""

from __future__ import annotations

import json
import random
import re
import socket
import time
from typing import Any

import httpx

from scheduler.intake.callbacks import CallbackProcessor
from scheduler.intake.producer import Producer
from tests.conftest import ApiStack
from tests.e2e.test_pipeline import sim_sends
from tests.e2e.test_vendor_holds import add_fault, fault_hits
from tests.procs import wait_for
from tests.scheduler.api.test_routes import put_account, wait_campaign
from tests.scheduler.cli.test_ops import cli_runner
from worker.settings import Settings


def start_campaign(stack: ApiStack, account: str, recipients: list[str], **extra: Any) -> str:
    body = {"name": "h", "account": account, "message": {"kind": "text", "text": "新品上市"},
            "recipients": [{"to": to} for to in recipients], **extra}  # fmt: skip
    created = stack.http.post("/v1/campaigns", json=body)
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


def deliveries(stack: ApiStack, cid: str) -> dict[str, dict[str, Any]]:
    page = stack.http.get(f"/v1/campaigns/{cid}/deliveries", params={"limit": 100}).json()
    return {d["to"]: d for d in page["deliveries"]}


def test_opt_out_by_callback_and_not_a_friend_skip_the_next_campaign(api_stack: ApiStack) -> None:
    stack = api_stack
    instance = f"inst-{stack.prefix}"
    put_account(stack, "gw", "gewe", instance)
    stack.start_worker()
    stack.start("scheduler")
    # the operator makes the callback URL and registers it at the vendor (the simulator keeps it)
    run = cli_runner(stack)
    made = run("accounts", "callback", "gw", "--register", "--public-url", stack.api_url, "--json")
    assert made.returncode == 0, made.stderr
    answer = json.loads(made.stdout)
    assert answer["registered"] is True and answer["url"].startswith(f"{stack.api_url}/v1/callbacks/gw?key=")
    key = answer["url"].split("key=", 1)[1]
    assert key not in stack.logs()
    # run again without --rotate: the state is shown and the registered key kept (the 退订 below still lands)
    again = run("accounts", "callback", "gw")
    assert again.returncode == 0 and "callback set / 回调已设置" in again.stdout and "key=" not in again.stdout
    assert "--rotate --register" in again.stdout, again.stdout
    assert run("accounts", "callback", "gw", "--register", "--public-url", stack.api_url).returncode == 2
    put = run("accounts", "put", "gw", "--per-minute", "30")  # put shows the callback as show does
    assert put.returncode == 0 and re.search(r"callback\s+set\b", put.stdout), put.stdout

    # wxid_fan replies 退订 (GeWe delivers it three times); wxid_gone is not a friend
    with httpx.Client(base_url=stack.sim.url) as sim:
        posted = sim.post("/_sim/callbacks", json={"vendor": "gewe", "instance": instance, "event": "text",
                                                   "from": "wxid_fan", "text": "退订", "times": 3})  # fmt: skip
        assert posted.status_code == 200 and posted.json()["statuses"] == [200, 200, 200], posted.text
    refusal = add_fault(stack, kind="not_friend", instance=instance, to="wxid_gone")

    def opted_out() -> bool:
        page = stack.http.get("/v1/suppressions", params={"account": "gw", "reason": "opted_out"}).json()
        return [s["to"] for s in page["suppressions"]] == ["wxid_fan"]

    wait_for(opted_out, timeout=30, what="the opt-out to be processed")
    first = wait_campaign(stack, start_campaign(stack, "gw", ["wxid_gone", "wxid_ok"]))
    assert first["counts"]["dead"] == 1 and first["counts"]["sent"] == 1
    page = stack.http.get("/v1/suppressions", params={"account": "gw", "reason": "not_friend"}).json()
    assert [s["to"] for s in page["suppressions"]] == ["wxid_gone"]
    made_by_worker = stack.http.get("/v1/audit", params={"key": "worker"}).json()["items"]
    assert [(e["role"], e["action"], e["target"]) for e in made_by_worker] == [
        ("worker", "suppression.add_not_friend", "suppression:gw/wxid_gone")
    ]

    assert fault_hits(stack, refusal) == 1
    cid = start_campaign(stack, "gw", ["wxid_fan", "wxid_gone", "wxid_ok"])
    second = wait_campaign(stack, cid)
    assert second["counts"]["skipped"] == 2 and second["counts"]["sent"] == 1
    assert sum(second["counts"].values()) == second["total"] == 3
    listed = run("campaign", "list").stdout  # the list counts skipped too: its row adds up to the total
    assert re.search(rf"{cid}.*\b3\s+1\s+0\s+2\s+0\s+0\s*$", listed, re.M), listed
    shown = deliveries(stack, cid)
    assert (shown["wxid_fan"]["status"], shown["wxid_fan"]["skip_reason"]) == ("skipped", "suppressed")
    assert shown["wxid_gone"]["skip_reason"] == "suppressed"
    # the vendor heard nothing for either: no send to wxid_fan, no second refusal for wxid_gone
    assert [s["to"] for s in sim_sends(stack, instance=instance)] == ["wxid_ok", "wxid_ok"]
    assert fault_hits(stack, refusal) == 1
    exported = stack.http.get(f"/v1/campaigns/{cid}/deliveries", params={"format": "csv"}).text
    assert "skip_reason" in exported.splitlines()[0] and "suppressed" in exported

    # a single message to them is skipped too, unless the operator says so (recorded with the key's name)
    skipped = run("send", "--account", "gw", "--to", "wxid_fan", "--text", "x", "--wait")
    assert skipped.returncode == 3 and '"skip_reason": "suppressed"' in skipped.stdout, skipped.stdout
    forced = run("send", "--account", "gw", "--to", "wxid_fan", "--text", "人工回复", "--ignore-suppression", "--wait")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    forced_id = json.loads(forced.stdout.split("\n}\n", 1)[0] + "\n}")["id"]
    shown_job = stack.http.get(f"/v1/messages/{forced_id}").json()
    assert shown_job["ignore_suppression"] is True and shown_job["ignore_suppression_by"]
    assert [s["to"] for s in sim_sends(stack, instance=instance, to="wxid_fan")] == ["wxid_fan"]

    # the operator lifts one by the CLI; the list shows what is left
    assert run("suppressions", "remove", "wxid_gone", "--account", "gw").returncode == 0
    listed = run("suppressions", "list", "--account", "gw")
    assert "wxid_fan" in listed.stdout and "wxid_gone" not in listed.stdout, listed.stdout


def test_a_forged_offline_callback_does_not_stop_an_account_the_vendor_calls_online(api_stack: ApiStack) -> None:
    """Whoever holds the callback URL can post an ``Offline``: the worker asks the vendor's online check
    first (worker/execution/offline.py), and an account it calls online keeps sending."""
    stack = api_stack
    instance = f"inst-off-{stack.prefix}"
    put_account(stack, "go", "gewe", instance)
    stack.start_worker()
    stack.start("scheduler")
    made = cli_runner(stack)("accounts", "callback", "go", "--register", "--public-url", stack.api_url, "--json")
    assert made.returncode == 0, made.stderr
    with httpx.Client(base_url=stack.sim.url) as sim:
        posted = sim.post("/_sim/callbacks", json={"vendor": "gewe", "instance": instance, "event": "offline"})
        assert posted.status_code == 200 and posted.json()["statuses"] == [200], posted.text

    def checked() -> list[str]:
        items = stack.http.get("/v1/audit", params={"key": "callback"}).json()["items"]
        return [e["action"] for e in items]

    wait_for(lambda: "callback.offline_refuted" in checked(), timeout=60, what="the vendor's online check")
    assert checked() == ["callback.offline_refuted"]
    assert stack.http.get("/v1/accounts/go").json()["status"] == "active"
    done = wait_campaign(stack, start_campaign(stack, "go", ["wxid_after"]))
    assert done["counts"]["sent"] == 1  # it still sends


def test_two_campaigns_racing_to_one_recipient_under_a_cap_send_exactly_once(api_stack: ApiStack) -> None:
    stack = api_stack
    instance = f"inst-{stack.prefix}"
    put_account(stack, "gw", "gewe", instance, recipient_cap={"max": 1, "window_h": 24})
    campaigns = [start_campaign(stack, "gw", ["wxid_busy", f"wxid_only{i}"]) for i in range(2)]
    stack.start_worker()
    stack.start("scheduler")
    views = [wait_campaign(stack, cid) for cid in campaigns]
    assert [s["to"] for s in sim_sends(stack, instance=instance)].count("wxid_busy") == 1
    assert sorted(v["counts"]["skipped"] for v in views) == [0, 1]
    capped = [deliveries(stack, cid)["wxid_busy"] for cid in campaigns]
    assert sorted(d["skip_reason"] or "" for d in capped) == ["", "frequency_cap"]


def test_the_callback_endpoint_under_a_fuzz_pass(api: ApiStack) -> None:
    stack = api
    put_account(stack, "fz", "gewe", f"inst-fz-{stack.prefix}")
    old = stack.http.post("/v1/accounts/fz/callback", json={}).json()["url"]
    kept = stack.http.post("/v1/accounts/fz/callback", json={})  # never replaced by accident
    assert kept.status_code == 409 and kept.json()["error"]["code"] == "callback_exists", kept.text
    url = stack.http.post("/v1/accounts/fz/callback", json={"rotate": True}).json()["url"]
    path, _, key = url.partition("?key=")
    assert stack.http.post(old.replace(stack.api_url, ""), content=b"{}").status_code == 404  # the old URL is gone
    inbox = f"{stack.prefix}:cb:in"
    rng = random.Random(1919)
    wrong = [key[:-1] + ("A" if key[-1] != "A" else "B"), "", key.upper(), "x" * 300, key + "x"]
    keys_before = stack.stored_keys()
    with httpx.Client(base_url=stack.api_url, timeout=30) as anon:
        for bad in wrong:  # wrong keys: 404, nothing stored, whatever the body
            answer = anon.post("/v1/callbacks/fz", params={"key": bad}, content=b'{"TypeName": "AddMsg"}')
            assert answer.status_code == 404, answer.text
        assert anon.post("/v1/callbacks/nobody", params={"key": key}, content=b"{}").status_code == 404
        assert stack.stored_keys() == keys_before and stack.redis.xlen(inbox) == 0
        oversize = anon.post(path, params={"key": key}, content=b"x" * (65 * 1024))  # taken, not stored
        assert oversize.status_code == 200 and oversize.json() == {"ok": True, "stored": False}, oversize.text
        stack.redis.set(f"{stack.prefix}:cb:in:bytes", 64 * 1024 * 1024)  # as if the inbox held its bound
        full = anon.post(path, params={"key": key}, content=b"{}")
        assert full.status_code == 503 and full.headers["retry-after"] == "60", full.text  # the vendor retries
        stack.redis.set(f"{stack.prefix}:cb:in:bytes", 0)
        assert stack.redis.xlen(inbox) == 0
        bodies: list[bytes] = [b"", b"[" * 50_000, b"\xff\xfe\x00", b"null", b'{"TypeName": ["AddMsg"]}']
        for _ in range(60):
            value = {rng.choice(["TypeName", "Data", "messageType", "data", "Appid"]):
                     rng.choice([None, 1, "AddMsg", "60001", [1, {}], {"MsgType": "1"}, "退订" * rng.randrange(50)])
                     for _ in range(rng.randrange(4))}  # fmt: skip
            bodies.append(json.dumps(value).encode())
        statuses = [anon.post(path, params={"key": key}, content=body).status_code for body in bodies]
    assert set(statuses) == {200}
    assert stack.redis.xlen(inbox) == len(bodies)
    metrics = stack.http.get("/metrics").text
    assert f'broadcast_callbacks_total{{kind="received"}} {float(len(bodies))}' in metrics
    # and the processing side takes every one of them without failing (the scheduler's drain, run here)
    processor = CallbackProcessor(
        Settings(key_prefix=stack.prefix),
        stack.redis,
        stack.accounts,
        Producer(stack.ledger, stack.accounts),
        check_offline=None,
    )
    while processor.drain():
        pass
    counted = stack.redis.hgetall(f"{stack.prefix}:stats:callbacks")
    assert "failed" not in counted and stack.redis.xlen(inbox) == 0
    assert sum(int(v) for k, v in counted.items() if k not in ("received", "oversize")) == len(bodies)


def test_suppressions_over_http_add_list_import_export_and_remove(api: ApiStack) -> None:
    stack = api
    put_account(stack, "sx", "gewe", f"inst-sx-{stack.prefix}")
    refused = stack.http.post("/v1/suppressions", json={"account": "nobody", "to": "wxid_a"})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "account", refused.text
    refused = stack.http.post("/v1/suppressions", json={"account": "sx", "to": "not a wxid!"})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "to", refused.text
    added = stack.http.post("/v1/suppressions", json={"account": "sx", "to": "wxid_a", "note": "=HYPERLINK()"})
    assert added.status_code == 201 and added.json()["reason"] == "manual" and added.json()["by"] == "bootstrap"

    keys_before = stack.stored_keys()
    bad = "to,account,reason\nwxid_b,sx,manual\nwxid_c,sx,spam\n"
    answer = stack.http.post("/v1/suppressions/import", content=bad.encode(), headers={"Content-Type": "text/csv"})
    assert answer.status_code == 422 and "line 3" in answer.json()["error"]["message"], answer.text
    assert stack.stored_keys() == keys_before  # all rows or none
    deep = "[" * 40 + "]" * 40  # a note is text, not JSON: any brackets
    good = f"to,account,note\nwxid_b,sx,{deep}\nwxid_all,,every account\n"
    answer = stack.http.post("/v1/suppressions/import", content=good.encode(), headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200 and answer.json() == {"imported": 2, "kept": 0}, answer.text

    listed = stack.http.get("/v1/suppressions", params={"account": "sx"}).json()
    assert sorted(s["to"] for s in listed["suppressions"]) == ["wxid_a", "wxid_b"] and listed["next_cursor"] is None
    everyone = stack.http.get("/v1/suppressions", params={"account": "*"}).json()["suppressions"]
    assert [(s["account"], s["to"]) for s in everyone] == [(None, "wxid_all")]
    exported = stack.http.get("/v1/suppressions/export", params={"account": "sx"})
    assert exported.headers["content-type"].startswith("text/csv")
    lines = exported.text.splitlines()
    assert lines[0] == "account,to,reason,at,by,note" and len(lines) == 3
    assert any(line.endswith(",'=HYPERLINK()") for line in lines), lines  # never a formula in a spreadsheet

    assert stack.http.delete("/v1/suppressions/sx/wxid_a").status_code == 204
    assert stack.http.delete("/v1/suppressions/sx/wxid_a").status_code == 404
    assert stack.http.delete("/v1/suppressions/*/wxid_all").status_code == 204


def test_overrides_and_entries_name_the_key_and_secrets_are_not_cached(api: ApiStack) -> None:
    """Attack findings F9-F11: an ignore_suppression override stands out in the audit and only a real
    boolean asks for it; an entry (added or imported) names the key that made it; every CSV formula start
    is neutralised in the export; answers carrying a key are not cached; http:// is not a prod callback."""
    stack = api
    put_account(stack, "ov", "gewe", f"inst-ov-{stack.prefix}")
    name = f"olga{stack.prefix[-4:]}"
    key = stack.http.post("/v1/keys", json={"name": name, "role": "operator"})
    assert key.headers["cache-control"] == "no-store"
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key.json()['key']}"}) as olga:
        message = {"account": "ov", "to": "wxid_ov1", "message": {"kind": "text", "text": "hi"}}
        refused = olga.post("/v1/messages", json={**message, "ignore_suppression": "yes"})
        assert refused.status_code == 422 and "ignore_suppression" in refused.text, refused.text
        assert olga.post("/v1/messages", json={**message, "ignore_suppression": True}).status_code == 202
        added = olga.post("/v1/suppressions", json={"account": "ov", "to": "wxid_ov2", "note": "\t=cmd|' /C calc'!A0"})
        assert added.status_code == 201 and added.json()["by"] == name, added.text
        csv_body = 'to,account,note\nwxid_ov3,ov,"=1+1"\n'
        broken = olga.post(
            "/v1/suppressions/import", content=b'to,note\nwxid_ov4,a\r"b\n', headers={"Content-Type": "text/csv"}
        )
        assert broken.status_code in (200, 422), broken.text  # a malformed CSV is never a 500
        imported = olga.post("/v1/suppressions/import", content=csv_body.encode(), headers={"Content-Type": "text/csv"})
        assert imported.status_code == 200, imported.text
    audit = stack.http.get("/v1/audit", params={"key": name}).json()["items"]
    made = [(e["action"], e["status"]) for e in audit if e["action"].startswith("message.")]
    assert made == [("message.create_ignore_suppression", 202), ("message.create", 422)], made
    listed = stack.http.get("/v1/suppressions", params={"account": "ov"}).json()["suppressions"]
    assert {s["to"]: s["by"] for s in listed} == {"wxid_ov2": name, "wxid_ov3": name}
    exported = stack.http.get("/v1/suppressions/export", params={"account": "ov"}).text
    assert ",'\t=cmd" in exported and "\t=cmd" not in exported.replace("'\t=cmd", ""), exported
    callback = stack.http.post("/v1/accounts/ov/callback", json={"public_url": "http://broadcast.example.com"})
    assert callback.status_code == 422 and callback.json()["error"]["field"] == "public_url", callback.text
    callback = stack.http.post("/v1/accounts/ov/callback", json={"public_url": "https://example.com"})
    assert callback.status_code == 200 and callback.headers["cache-control"] == "no-store"


def test_a_callback_whose_key_is_rotated_while_it_arrives_is_not_stored(api: ApiStack) -> None:
    stack = api
    put_account(stack, "rot", "gewe", f"inst-rot-{stack.prefix}")
    url = stack.http.post("/v1/accounts/rot/callback", json={}).json()["url"]
    path = url.removeprefix(stack.api_url)
    body = json.dumps({"TypeName": "Offline", "Appid": f"inst-rot-{stack.prefix}", "Wxid": "wxid_me"}).encode()
    host, port = stack.api_url.removeprefix("http://").split(":")
    inbox = f"{stack.prefix}:cb:in"
    before = stack.redis.xlen(inbox)
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode() + body[:5])
        time.sleep(0.3)  # the key was checked at the head; the body is still arriving
        assert stack.http.post("/v1/accounts/rot/callback", json={"rotate": True}).status_code == 200
        conn.sendall(body[5:])
        answer = conn.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 404"), answer
    assert stack.redis.xlen(inbox) == before
