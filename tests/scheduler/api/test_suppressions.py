"""``/v1/suppressions`` export then import keeps every entry as it was: ``at``, ``by`` and ``note`` (cells a
spreadsheet would run are written with a leading ``'`` and read back without it), while the audit trail names
the key that imported them. Real HTTP against a `broadcast api` process, on real Redis."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import httpx

from tests.conftest import ApiStack
from tests.scheduler.api.test_routes import put_account
from worker.store.suppressions import Suppressions

CSV = {"Content-Type": "text/csv"}


def entries(stack: ApiStack, account: str) -> list[dict[str, Any]]:
    page = stack.http.get("/v1/suppressions", params={"account": account, "limit": 1000}).json()
    return sorted(page["suppressions"], key=lambda s: s["to"])


def test_an_export_imported_again_keeps_at_by_and_note(api: ApiStack) -> None:
    stack = api
    put_account(stack, "rt", "gewe", f"inst-rt-{stack.prefix}")
    store = Suppressions(stack.redis, stack.prefix)
    made = [  # as a callback, a vendor's refusal and operators wrote them, some notes a spreadsheet would run
        ("wxid_opt", "opted_out", "callback", 1733300000.125, "replied 退订"),
        ("wxid_gone", "not_friend", "vendor", 1733300100.5, "对方不是你的好友"),
        ("wxid_f1", "manual", "alice", 1733300200.0, '=HYPERLINK("http://x")'),
        ("wxid_f2", "manual", "bob.ops", 1733300300.0, "'=already quoted"),
        ("wxid_f3", "manual", "bob.ops", 1733300400.0, "''two quotes"),
        ("wxid_f4", "contact_removed", "callback", 1733300500.0, "'plain, with a quote"),
        ("wxid_f5", "manual", "carol", 1733300600.0, "-5"),
    ]
    for to, reason, by, at, note in made:
        store.add("rt", to, reason, by=by, note=note, at=at)
    before = entries(stack, "rt")
    exported = stack.http.get("/v1/suppressions/export", params={"account": "rt"}).text
    notes = {row["to"]: row["note"] for row in csv.DictReader(io.StringIO(exported))}
    assert notes["wxid_f1"] == '\'=HYPERLINK("http://x")' and notes["wxid_f2"] == "''=already quoted"
    assert notes["wxid_f4"] == "'plain, with a quote" and notes["wxid_f5"] == "-5"  # as before: no formula runs
    stack.redis.delete(stack.ledger.keys.suppressions("rt"))
    assert entries(stack, "rt") == []

    name = f"imp-{stack.prefix}"
    key = stack.http.post("/v1/keys", json={"name": name, "role": "operator"}).json()["key"]
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as operator:
        imported = operator.post("/v1/suppressions/import", content=exported.encode(), headers=CSV)
        assert imported.status_code == 200 and imported.json() == {"imported": len(made), "kept": 0}, imported.text
        assert entries(stack, "rt") == before  # at, by, note and reason as they were
        # a row over an entry the recipient's opt-out or a vendor's refusal wrote does not rewrite that record
        # (attack round 4: a CSV turned a callback opt-out into a manual entry of the importer's, backdated)
        over = b"account,to,reason,at,by,note\nrt,wxid_opt,manual,1,alice,x\nrt,wxid_gone,manual,,,y\nrt,wxid_f1,manual,,,z\n"
        answer = operator.post("/v1/suppressions/import", content=over, headers=CSV)
        assert answer.json() == {"imported": 1, "kept": 2}, answer.text
        now = {e["to"]: e for e in entries(stack, "rt")}
        kept = {e["to"]: e for e in before if e["to"] in ("wxid_opt", "wxid_gone")}
        assert {to: now[to] for to in kept} == kept
        assert (now["wxid_f1"]["by"], now["wxid_f1"]["note"]) == (name, "z")  # an operator's entry is replaced
        store.add("rt", "wxid_f1", "manual", by="alice", note='=HYPERLINK("http://x")', at=1733300200.0)
        # a file without at/by columns: dated now, by the importing key
        plain = operator.post("/v1/suppressions/import", content=b"to,account\nwxid_new,rt\n", headers=CSV)
        assert plain.status_code == 200, plain.text
        new = next(e for e in entries(stack, "rt") if e["to"] == "wxid_new")
        assert new["by"] == name and abs(new["at"] - time.time()) < 60
        # a time that is no time, one ahead of now, or a by that is not a key's name: 422 naming it
        for bad, field in [
            ("to,account,at\nwxid_x,rt,yesterday\n", "at"),
            (f"to,account,at\nwxid_x,rt,{time.time() + 86400:.3f}\n", "at"),
            ("to,account,at\nwxid_x,rt,nan\n", "at"),
            ("to,account,by\nwxid_x,rt,=cmd|' /C calc'!A0\n", "by"),
            ("to,account,by\nwxid_x,rt,two words\n", "by"),
        ]:
            refused = operator.post("/v1/suppressions/import", content=bad.encode(), headers=CSV)
            assert refused.status_code == 422 and refused.json()["error"]["field"] == field, (bad, refused.text)
            assert "line 2" in refused.json()["error"]["message"]
        assert "wxid_x" not in {e["to"] for e in entries(stack, "rt")}
    trail = stack.http.get("/v1/audit", params={"key": name}).json()["items"]
    assert [(e["action"], e["status"]) for e in reversed(trail)] == [
        ("suppression.import_attributed", 200), ("suppression.import_attributed", 200), ("suppression.import", 200),
        *[("suppression.import", 422)] * 5,
    ]  # fmt: skip


def test_a_jsonl_export_imported_again_keeps_every_entry_exactly(api: ApiStack) -> None:
    stack = api
    put_account(stack, "jl", "gewe", f"inst-jl-{stack.prefix}")
    store = Suppressions(stack.redis, stack.prefix)
    store.add("jl", "wxid_j1", "opted_out", by="callback", note=" =1+1 \u2028 two\tlines ", at=1733300000.125)
    store.add("jl", "wxid_j2", "manual", by="alice", note="'=quoted", at=1733300001.0)
    store.add(None, f"wxid_all_{stack.prefix}", "manual", by="bob", note="every account", at=1733300002.5)
    before = entries(stack, "jl") + entries(stack, "*")
    exported = stack.http.get("/v1/suppressions/export", params={"format": "jsonl"})
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert {"account": None, "to": f"wxid_all_{stack.prefix}", "reason": "manual", "at": 1733300002.5, "by": "bob",
            "note": "every account"} in lines  # fmt: skip
    stack.redis.delete(stack.ledger.keys.suppressions("jl"), stack.ledger.keys.suppressions("*"))
    answer = stack.http.post(
        "/v1/suppressions/import", content=exported.content, headers={"Content-Type": "application/x-ndjson"}
    )
    assert answer.status_code == 200, answer.text
    assert entries(stack, "jl") + entries(stack, "*") == before  # the note exactly, spaces and U+2028 too
    for bad, field in [('{"to": "wxid_x", "at": "soon"}', "at"), ("[1]", "to"), ('{"to": 5}', "to")]:
        refused = stack.http.post(
            "/v1/suppressions/import", content=bad.encode(), headers={"Content-Type": "application/x-ndjson"}
        )
        assert refused.status_code == 422 and refused.json()["error"]["field"] == field, (bad, refused.text)
