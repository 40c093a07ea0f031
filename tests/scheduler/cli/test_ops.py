"""The operator commands of the real ``broadcast`` CLI, run as subprocesses against the real HTTP API.

Each test has its own ``broadcast api`` process (``api_stack``) on a private Redis key prefix; a real
worker and scheduler are started only where something must actually be sent. The CLI's environment has
no ``BROADCAST_REDIS_URL``: it reaches everything through ``BROADCAST_API_URL`` / ``BROADCAST_API_TOKEN``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from scheduler.devtools.embedded import free_port
from tests.conftest import API_TOKEN, VENDOR_PREFIX, ApiStack
from tests.e2e.test_pipeline import add_fault, clear_faults, sim_sends
from tests.procs import wait_for
from tests.scheduler.api.test_routes import all_deliveries, put_account

ROOT = Path(__file__).resolve().parents[3]
Run = Callable[..., subprocess.CompletedProcess[str]]


def cli_runner(stack: ApiStack) -> Run:
    """``run(*args, token=…, columns=…, stdin=…, env=…)``: the CLI as an operator would run it."""

    def run(
        *args: str,
        token: str | None = API_TOKEN,
        columns: int = 200,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full = {k: v for k, v in os.environ.items() if not k.startswith("BROADCAST_")}
        full.update(
            BROADCAST_API_URL=stack.api_url,
            COLUMNS=str(columns),  # rich sizes tables to this when the output is not a terminal
            NO_COLOR="1",
            PYTHONIOENCODING="utf-8",
        )
        if token is not None:
            full["BROADCAST_API_TOKEN"] = token
        full.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "scheduler.cli.app", *args],
            cwd=ROOT,
            env=full,
            input=stdin,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=90,
            check=False,
        )

    return run


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc.stdout


def json_docs(text: str) -> list[Any]:
    """Every JSON document printed one after the other (``send --wait`` prints two)."""
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    position = 0
    text = text.strip()
    while position < len(text):
        doc, end = decoder.raw_decode(text, position)
        docs.append(doc)
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    return docs


def one_json(proc: subprocess.CompletedProcess[str]) -> Any:
    (doc,) = json_docs(ok(proc))
    return doc


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def api_has_route(path: str) -> bool:
    """Whether this checkout's API serves ``path``, read from its OpenAPI document (no Redis needed)."""
    import redis

    from scheduler.api.app import create_app
    from worker.settings import Settings

    try:
        app = create_app(Settings(env="dev", accounts_file=None), client=redis.Redis())
    except Exception:  # the API cannot even be built: run the test and let it say why
        return True
    return path in app.openapi()["paths"]


# --- send and message ---------------------------------------------------------------------------------------


def test_send_wait_prints_the_vendor_ids_and_message_show_has_them(api_stack: ApiStack) -> None:
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "gw", "gewe", instance)
    api_stack.start_worker()
    api_stack.start("scheduler")
    run = cli_runner(api_stack)

    proc = run("send", "--account", "gw", "--to", "wxid_cli1", "--text", "{name} 你好", "--var", "name=小王", "--wait")
    accepted, outcome = json_docs(ok(proc))
    assert accepted["status"] == "queued" and set(accepted) == {"id", "status"}
    job_id = accepted["id"]
    (record,) = sim_sends(api_stack, instance=instance)
    assert "小王 你好" in json.dumps(record["body"], ensure_ascii=False)
    assert outcome["id"] == job_id and outcome["status"] == "sent" and outcome["attempts"] == 1
    assert outcome["result"]["new_msg_id"] == str(record["new_msg_id"])  # exact 64-bit, as a string
    api_view = api_stack.http.get(f"/v1/messages/{job_id}").json()
    assert outcome["result"] == api_view["result"]

    shown = ok(run("message", "show", job_id))
    assert job_id in shown and str(record["new_msg_id"]) in shown and str(record["create_time"]) in shown
    assert "attempts" in shown and "wxid_cli1" in shown
    assert one_json(run("message", "show", job_id, "--json")) == api_view
    assert one_json(run("job", job_id, "--json")) == api_view  # the old command, kept as an alias
    revoked = ok(run("message", "revoke", job_id)).strip()
    assert re.fullmatch(rf"message {job_id} recalled at .+ UTC[+0-9:]* / 消息 {job_id} 已撤回（.+）", revoked), revoked
    assert sim_sends(api_stack, instance=instance)[0]["revoked"] is True
    again = run("message", "revoke", job_id)  # a recall is final: the second one is refused, readably
    assert again.returncode == 2 and again.stdout == "", again.stdout
    assert again.stderr.strip() == (
        f"error: message {job_id} not revoked: already revoked — this message was already revoked"
        f" / 消息 {job_id} 未撤回：此前已撤回"
    )
    assert run("message", "revoke", job_id, "--json").returncode == 2  # --json: the API's error as before

    # a sequence: --wait prints every part's kind, status and ids, not only the first part's in "result"
    seq = {"kind": "sequence", "parts": [{"kind": "text", "text": "一"}, {"kind": "text", "text": "二"}]}
    proc = run("send", "--account", "gw", "--to", "wxid_cli4", "--message", json.dumps(seq), "--wait")
    _, outcome = json_docs(ok(proc))
    sent_ids = [str(r["new_msg_id"]) for r in sim_sends(api_stack, instance=instance, to="wxid_cli4")]
    assert [(p["index"], p["kind"], p["status"]) for p in outcome["parts"]] == [
        (0, "text", "sent"),
        (1, "text", "sent"),
    ]
    assert [p["new_msg_id"] for p in outcome["parts"]] == sent_ids and len(set(sent_ids)) == 2, outcome

    key_args = ("send", "--account", "gw", "--to", "wxid_cli2", "--text", "x", "--idempotency-key", "order-9")
    first, second = one_json(run(*key_args)), one_json(run(*key_args))
    assert second["id"] == first["id"]

    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    scheduled = one_json(run("send", "--account", "gw", "--to", "wxid_cli3", "--text", "x", "--send-at", later))
    assert scheduled["status"] == "scheduled"
    assert one_json(run("message", "cancel", scheduled["id"])) == {"id": scheduled["id"], "status": "cancelled"}
    again = run("message", "cancel", scheduled["id"])
    assert again.returncode == 2 and "cannot cancel a message that is cancelled" in again.stderr
    assert api_stack.http.get(f"/v1/messages/{scheduled['id']}").json()["status"] == "cancelled"


def test_send_wait_on_a_paused_account_says_so_once_and_gives_up_at_the_timeout(api_stack: ApiStack) -> None:
    put_account(api_stack, "shop", "gewe", f"inst-{api_stack.prefix}")
    run = cli_runner(api_stack)  # no worker needed: the account is paused, nothing may move
    ok(run("accounts", "pause", "shop"))
    waited = run("send", "--account", "shop", "--to", "wxid_x", "--text", "你好", "--wait", "--timeout", "3")
    assert waited.returncode == 4, waited.stderr
    assert waited.stderr.count("account shop is paused") == 1 and "账号 shop 已暂停" in waited.stderr
    assert "timed out waiting" in waited.stderr and "goes on" in waited.stderr
    (accepted,) = json_docs(waited.stdout)
    view = one_json(run("message", "show", accepted["id"], "--json"))
    assert view["status"] == "queued" and view["vendor"] == "gewe"  # never sent: its account's vendor


def test_history_shows_a_requeue_without_an_attempt_number() -> None:
    from scheduler.cli import render

    history = [
        {"n": 1, "started": 1.0, "outcome": "requeue", "error_class": "account_down", "error": "已离线"},
        {"n": 1, "started": 2.0, "outcome": "sent", "new_msg_id": "77"},
    ]
    with render.console.capture() as captured:
        render.print_history(history)
    requeue, sent = [line.split() for line in captured.get().splitlines() if "已离线" in line or "77" in line]
    assert requeue[0] == "-" and "requeued," in requeue and sent[0] == "1" and "sent" in sent


def test_refused_input_bad_tokens_and_an_unreachable_api_exit_non_zero_with_one_clear_line(
    api_stack: ApiStack,
) -> None:
    put_account(api_stack, "gw", "gewe", f"inst-{api_stack.prefix}")
    run = cli_runner(api_stack)
    keys_before = api_stack.stored_keys()

    for args, names in [
        (("--account", "gw", "--to", "not a wxid!", "--text", "hi"), ["to:"]),
        (("--account", "ghost", "--to", "wxid_a", "--text", "hi"), ["account", "ghost"]),
        (("--account", "gw", "--to", "wxid_a", "--message", '{"kind": "text", "text": ""}'), ["message.text"]),
        (("--account", "gw", "--to", "wxid_a", "--text", "hi {name}"), ["vars"]),
        (("--account", "gw", "--to", "wxid_a", "--text", "x", "--priority", "urgent"), ["priority"]),
        (("--account", "gw", "--to", "wxid_a"), ["exactly one of --text"]),
        (("--account", "gw", "--to", "wxid_a", "--text", "x", "--message", "{}"), ["exactly one of --text"]),
        (("--account", "gw", "--to", "wxid_a", "--message", "{nope"), ["--message", "not valid JSON"]),
        (("--account", "gw", "--to", "wxid_a", "--text", "x", "--send-at", "tomorrow"), ["--send-at"]),
    ]:
        proc = run("send", *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert all(name in proc.stderr for name in names), (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stdout == ""
    assert api_stack.stored_keys() == keys_before  # nothing was stored

    missing = run("message", "show", "j-nope")
    assert missing.returncode == 2 and "no message 'j-nope'" in missing.stderr
    assert missing.stderr.rstrip().endswith(" / 未找到消息 'j-nope'"), missing.stderr
    no_campaign = run("campaign", "show", "c-nope")
    assert no_campaign.returncode == 2 and no_campaign.stderr.rstrip().endswith(" / 未找到群发 'c-nope'")
    invalid = run("send", "--account", "gw", "--to", "wxid_a", "--text", "x", "--priority", "urgent")
    assert invalid.stderr.rstrip().endswith(" / 输入有误（字段 priority）"), invalid.stderr

    wrong = run("accounts", "list", token="wrong-token-5150")
    assert wrong.returncode != 0 and "refused the token" in wrong.stderr and "BROADCAST_API_TOKEN" in wrong.stderr
    assert "API 拒绝了该 token（密钥无效或已吊销）" in wrong.stderr and wrong.stderr.count("\n") == 1
    assert "wrong-token-5150" not in wrong.stdout + wrong.stderr
    wrong_option = run("accounts", "list", "--token", "wrong-token-5150", token=None)
    assert wrong_option.returncode != 0 and "wrong-token-5150" not in wrong_option.stdout + wrong_option.stderr
    none = run("accounts", "list", token=None)
    assert none.returncode != 0 and "no API token given" in none.stderr and "`broadcast dev`" in none.stderr
    assert "未提供 API token：请设置 --token 或 BROADCAST_API_TOKEN" in none.stderr
    assert "gw" in ok(run("accounts", "list", "--token", API_TOKEN, token="wrong"))  # the option beats the env
    assert "gw" in ok(run("accounts", "list", token=f" {API_TOKEN} ,another-key"))  # first of comma-separated

    dead_url = f"http://127.0.0.1:{free_port()}"
    down = run("campaign", "list", "--url", dead_url)
    assert down.returncode == 1
    assert f"cannot connect to the API at {dead_url}" in down.stderr and "connection refused" in down.stderr
    assert f"无法连接 {dead_url} 上的 API" in down.stderr and down.stderr.count("\n") == 1
    assert API_TOKEN not in down.stdout + down.stderr


# --- campaigns ---------------------------------------------------------------------------------------------


def test_campaigns_from_csv_and_jsonl_are_watched_to_the_end_and_exported(api_stack: ApiStack, tmp_path: Path) -> None:
    put_account(api_stack, "gw", "gewe", f"inst-{api_stack.prefix}")
    put_account(api_stack, "ec", "ecloud", f"inst-{api_stack.prefix}-ec")
    api_stack.start_worker()
    api_stack.start("scheduler")
    run = cli_runner(api_stack)

    rows = "to,name\n" + "".join(f"wxid_csv{i},客户{i}\n" for i in range(12)) + "wxid_csv0,dup\n"
    created = run(
        "campaign", "create", "--name", "spring sale", "--account", "gw", "--text", "{name}: 春季促销",
        "--recipients", str(write(tmp_path / "list.csv", rows)), "--watch",
    )  # fmt: skip
    lines = ok(created).strip().splitlines()
    assert lines[0].startswith("campaign c") and lines[0].endswith(
        "active: 12 recipients (1 duplicates dropped) / 群发发送中：12 位接收人（已去掉 1 个重复）"
    )
    cid = lines[0].split()[1]
    assert f"campaign {cid} finished: 12 sent, 0 dead, 0 cancelled, 0 remaining of 12" in lines[-1]
    assert "12/12" in created.stderr and "remaining 0" in created.stderr  # the progress bar's last frame
    assert "客户3: 春季促销" in json.dumps(sim_sends(api_stack, to="wxid_csv3")[0]["body"], ensure_ascii=False)

    jsonl = "".join(
        json.dumps({"to": f"wxid_jl{i}", "vars": {"name": f"n{i}"}, **({"account": "ec"} if i < 2 else {})}) + "\n"
        for i in range(6)
    )
    proc = run(
        "campaign", "create", "--name", "jsonl run", "--accounts", "gw,ec", "--message",
        json.dumps({"kind": "text", "text": "hi {name}"}), "--recipients", str(write(tmp_path / "r.jsonl", jsonl)),
        "--watch", "--json",
    )  # fmt: skip
    accepted, final = json_docs(ok(proc))
    assert accepted == {"id": accepted["id"], "total": 6, "duplicates": 0, "status": "active", "audience": None}
    assert final["id"] == accepted["id"] and final["status"] == "finished" and final["counts"]["sent"] == 6
    by_to = {d["to"]: d for d in all_deliveries(api_stack, accepted["id"])}
    assert by_to["wxid_jl0"]["account"] == by_to["wxid_jl1"]["account"] == "ec"

    listed = ok(run("campaign", "list"))
    assert cid in listed and accepted["id"] in listed and "spring sale" in listed and "2 shown" in listed
    shown = ok(run("campaign", "show", cid))
    assert "finished" in shown and "sent 12" in shown and "1 duplicates dropped" in shown
    created_at = api_stack.http.get(f"/v1/campaigns/{cid}").json()["created"]
    for zone, offset in (("Asia/Shanghai", "UTC+8"), ("Asia/Kolkata", "UTC+5:30")):  # the machine's timezone
        local = datetime.fromtimestamp(created_at, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")
        in_zone = ok(run("campaign", "show", cid, env={"TZ": zone}))
        assert re.search(rf"^created +{local} {re.escape(offset)} *$", in_zone, re.MULTILINE), in_zone
    assert one_json(run("campaign", "show", cid, "--json")) == api_stack.http.get(f"/v1/campaigns/{cid}").json()
    watched = run("campaign", "watch", cid)
    assert ok(watched).startswith(f"campaign {cid} finished: 12 sent")

    deliveries = {d["id"]: d for d in all_deliveries(api_stack, cid)}
    out_csv = tmp_path / "out.csv"
    exported = run("campaign", "export", cid, "--format", "csv", "--output", str(out_csv))
    assert ok(exported) == "" and f"wrote {out_csv}" in exported.stderr
    table = list(csv.DictReader(io.StringIO(out_csv.read_text(encoding="utf-8"))))
    assert len(table) == 12 and {r["id"] for r in table} == set(deliveries)
    for row in table:
        assert row["status"] == "sent" and row["new_msg_id"] == deliveries[row["id"]]["result"]["new_msg_id"]
        # ISO 8601 beside the epoch, in the account's timezone (Asia/Shanghai by default)
        assert row["sent_at_iso"].endswith("+08:00")
        assert abs(datetime.fromisoformat(row["sent_at_iso"]).timestamp() - float(row["sent_at"])) < 0.001
    assert list(table[0])[list(table[0]).index("sent_at") + 1] == "sent_at_iso"
    assert not (tmp_path / "out.csv.part").exists()
    streamed = [json.loads(line) for line in ok(run("campaign", "export", cid, "--format", "jsonl")).splitlines()]
    assert [d["id"] for d in streamed] == list(deliveries)
    assert all(d.pop("sent_at_iso").endswith("+08:00") for d in streamed) and streamed == list(deliveries.values())
    only_dead = ok(run("campaign", "export", cid, "--status", "dead"))
    assert only_dead.splitlines()[0].startswith("id,to,account,status") and len(only_dead.splitlines()) == 1
    bad = run("campaign", "export", cid, "--format", "xml")
    assert bad.returncode == 2 and "--format" in bad.stderr
    unknown_type = run(
        "campaign", "create", "--name", "x", "--account", "gw", "--text", "x",
        "--recipients", str(write(tmp_path / "list.txt", rows)),
    )  # fmt: skip
    assert unknown_type.returncode == 2 and ".csv, .jsonl or .ndjson" in unknown_type.stderr


def test_campaign_pause_resume_cancel_and_refusals(api_stack: ApiStack, tmp_path: Path) -> None:
    put_account(api_stack, "gw", "gewe", f"inst-{api_stack.prefix}")
    run = cli_runner(api_stack)  # no worker: nothing may leave while we steer
    recipients = write(tmp_path / "five.csv", "to\n" + "".join(f"wxid_p{i}\n" for i in range(5)))
    base = ("campaign", "create", "--account", "gw", "--text", "x", "--recipients", str(recipients), "--json")
    cid = one_json(run(*base, "--name", "steered"))["id"]

    assert ok(run("campaign", "pause", cid)).startswith(f"campaign {cid} paused: 0 sent")
    assert api_stack.http.get(f"/v1/campaigns/{cid}").json()["status"] == "paused"
    assert ok(run("campaign", "resume", cid)).startswith(f"campaign {cid} active")
    cancelled = ok(run("campaign", "cancel", cid))
    assert cancelled.strip() == (
        f"campaign {cid} cancelled: 0 sent, 0 dead, 5 cancelled, 0 remaining of 5"
        " / 群发已取消：已发送 0，死信 0，已取消 5，剩余 0（共 5）"
    )
    counts = api_stack.http.get(f"/v1/campaigns/{cid}").json()["counts"]
    assert counts["cancelled"] == 5 and counts["queued"] == 0
    watched = run("campaign", "watch", cid)
    assert ok(watched).startswith(f"campaign {cid} cancelled: 0 sent, 0 dead, 5 cancelled")
    refused = run("campaign", "resume", cid)
    assert refused.returncode == 2 and "cannot resume a campaign that is cancelled" in refused.stderr

    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    scheduled = one_json(run(*base, "--name", "tomorrow", "--send-at", later, "--idempotency-key", "k-1"))
    assert scheduled["status"] == "scheduled"
    replayed = run(*base, "--name", "tomorrow", "--send-at", later, "--idempotency-key", "k-1")
    assert one_json(replayed)["id"] == scheduled["id"]
    other_time = run(*base, "--name", "tomorrow", "--idempotency-key", "k-1")  # send_at differs: another request
    assert other_time.returncode == 2 and "idempotency_conflict" in other_time.stderr
    assert api_stack.http.get(f"/v1/campaigns/{scheduled['id']}").json()["send_at"] is not None
    both = run(*base, "--name", "x", "--accounts", "gw")
    assert both.returncode == 2 and "--account or --accounts" in both.stderr
    unknown = run("campaign", "create", "--name", "x", "--accounts", "gw,ghost", "--text", "x",
                  "--recipients", str(recipients))  # fmt: skip
    assert unknown.returncode == 2 and "accounts[1]" in unknown.stderr and "ghost" in unknown.stderr


# --- dead letters ------------------------------------------------------------------------------------------


def test_dead_letters_list_show_replay_delete(api_stack: ApiStack, tmp_path: Path) -> None:
    instance = f"inst-{api_stack.prefix}"
    put_account(api_stack, "gw", "gewe", instance)
    add_fault(api_stack, kind="not_friend", instance=instance)
    try:
        api_stack.start_worker()
        api_stack.start("scheduler")
        run = cli_runner(api_stack)
        names = [f"wxid_a_rather_long_recipient_{i}" for i in range(3)]
        recipients = write(tmp_path / "r.csv", "to\n" + "\n".join(names) + "\n")
        watched = run(
            "campaign", "create", "--name", "strangers", "--account", "gw", "--text", "hi",
            "--recipients", str(recipients), "--watch",
        )  # fmt: skip
        assert watched.returncode == 3, watched.stderr  # finished, but some went dead
        assert "finished: 0 sent, 3 dead, 0 cancelled, 0 remaining of 3" in watched.stdout
        cid = watched.stdout.split()[1]
        ids = [d["id"] for d in all_deliveries(api_stack, cid)]

        narrow = ok(run("dead-letters", "list", columns=80))
        assert all(job_id in narrow for job_id in ids)  # whole ids even at 80 columns: operators copy them
        assert max(len(line) for line in narrow.splitlines()) <= 80
        assert "3 shown (3 in the dead-letter store)" in narrow and "permanent" in narrow
        header, header_zh = (line.split() for line in narrow.splitlines()[:2])
        assert header == ["id", "account", "to", "reason", "tries", "error"], "no column dropped at 80 columns"
        assert header_zh == ["编号", "账号", "接收人", "原因", "次数", "错误"]  # each column's name in Chinese under it
        first_row = narrow.splitlines()[3:7]  # the first dead letter, its cells wrapped over four lines
        assert "".join(line.split()[-1] for line in first_row) == "发送消息失败：对方不是你的好友"  # wrapped, not cut
        listed = one_json(run("dead-letters", "list", "--campaign", cid, "--reason", "permanent", "--json"))
        assert sorted(d["id"] for d in listed) == sorted(ids) and {d["to"] for d in listed} == set(names)
        assert "0 shown" in ok(run("dead-letters", "list", "--reason", "retries_exhausted"))
        assert "0 shown" in ok(run("dead-letters", "list", "--account", "other"))

        shown = ok(run("dead-letters", "show", ids[0]))
        assert ids[0] in shown and "permanent" in shown and "dead" in shown and "attempts" in shown
        detail = one_json(run("dead-letters", "show", ids[0], "--json"))
        assert detail == api_stack.http.get(f"/v1/dead-letters/{ids[0]}").json()
        assert detail["history"][0]["error_class"] == "permanent"
    finally:
        clear_faults(api_stack)

    assert "replayed 1 of 1" in ok(run("dead-letters", "replay", ids[0]))
    # one id is a one-job replay on the record, not a bulk one
    trail = api_stack.http.get("/v1/audit", params={"target": f"dead_letter:{ids[0]}"}).json()["items"]
    assert [e["action"] for e in trail] == ["dead_letter.replay"], trail
    partly = run("dead-letters", "replay", ids[0], ids[1], "j-missing", "--json")
    assert partly.returncode == 1
    assert json_docs(partly.stdout) == [
        {"results": {ids[0]: "not_dead", ids[1]: "ok", "j-missing": "missing"}, "replayed": 1}
    ]
    human = run("dead-letters", "replay", ids[1])
    assert human.returncode == 1 and "not_dead" in human.stdout and "replayed 0 of 1" in human.stdout

    assert ids[2] in ok(run("dead-letters", "delete", ids[2]))
    gone = run("dead-letters", "delete", ids[2])
    assert gone.returncode == 1 and "not dead letter" in gone.stdout
    assert run("dead-letters", "show", ids[2]).returncode == 2
    wait_for(
        lambda: all(api_stack.http.get(f"/v1/messages/{i}").json()["status"] == "sent" for i in ids[:2]),
        timeout=30,
        what="the replayed jobs to be sent",
    )
    assert len(sim_sends(api_stack, instance=instance)) == 2
    assert "0 shown (0 in the dead-letter store)" in ok(run("dead-letters", "list"))


# --- accounts ----------------------------------------------------------------------------------------------


def test_accounts_put_list_show_pause_resume_never_print_the_token(api_stack: ApiStack) -> None:
    instance = f"inst-{api_stack.prefix}"
    secret = f"tok-{instance}-secret"
    with httpx.Client(base_url=api_stack.sim.url) as admin:  # the vendor side, for the online check
        admin.post("/_sim/accounts", json={"vendor": "gewe", "instance": instance, "token": secret})
    run = cli_runner(api_stack)
    base_url = api_stack.sim.url + VENDOR_PREFIX["gewe"]

    created = run(
        "accounts", "put", "shop", "--vendor", "gewe", "--base-url", base_url, "--instance", instance,
        "--token-env", "SHOP_TOKEN", "--per-minute", "12", "--quiet-hours", "22:00-08:00",
        env={"SHOP_TOKEN": secret},
    )  # fmt: skip
    assert "account shop created" in ok(created) and "22:00-08:00" in created.stdout
    stored = api_stack.accounts.get("shop")
    assert stored is not None and stored.spec.token.get_secret_value() == secret
    assert stored.spec.limits.per_minute == 12

    updated = ok(run("accounts", "put", "shop", "--per-minute", "20", "--option", "region=cn"))
    assert "account shop updated" in updated
    stored = api_stack.accounts.get("shop")
    assert stored is not None and stored.spec.token.get_secret_value() == secret  # kept
    assert stored.spec.limits.per_minute == 20 and stored.spec.limits.quiet_hours is not None
    assert stored.spec.instance == instance and stored.spec.options == {"region": "cn"}

    rotated = run("accounts", "put", "shop", "--token-stdin", stdin="tok-rotated-77\n")
    assert "account shop updated" in ok(rotated)
    stored = api_stack.accounts.get("shop")
    assert stored is not None and stored.spec.token.get_secret_value() == "tok-rotated-77"

    listed = ok(run("accounts", "list"))
    assert "shop" in listed and "gewe" in listed and "active" in listed and instance in listed
    shown = ok(run("accounts", "show", "shop"))
    assert "token" in shown and "set" in shown and "per_minute" in shown and "region=cn" in shown
    as_json = one_json(run("accounts", "show", "shop", "--json"))
    assert as_json["token_set"] is True and "token" not in as_json and as_json["limits"]["per_minute"] == 20
    assert one_json(run("accounts", "list", "--json")) == [as_json]
    for proc in (created, rotated):
        assert secret not in proc.stdout + proc.stderr and "tok-rotated-77" not in proc.stdout + proc.stderr
    assert "tok-rotated-77" not in listed + shown + json.dumps(as_json)

    new = run("accounts", "put", "other", "--vendor", "gewe")
    assert new.returncode == 2 and "--base-url" in new.stderr and "--instance" in new.stderr
    bad_url = run("accounts", "put", "other", "--vendor", "gewe", "--base-url", "ftp://x", "--instance", "i")
    assert bad_url.returncode == 2 and "base_url" in bad_url.stderr
    two = run("accounts", "put", "shop", "--token-stdin", "--token-env", "X", stdin="a\n")
    assert two.returncode == 2 and "give one of" in two.stderr
    assert run("accounts", "show", "ghost").returncode == 2

    assert ok(run("accounts", "pause", "shop")).strip() == "account shop paused / 账号 shop 已暂停"
    add_fault(api_stack, kind="offline", instance=instance)
    try:
        refused = run("accounts", "resume", "shop")
        assert refused.returncode == 2 and "offline" in refused.stderr
        assert api_stack.http.get("/v1/accounts/shop").json()["status"] == "paused"
        assert (
            ok(run("accounts", "resume", "shop", "--no-check-online")).strip() == "account shop active / 账号 shop 正常"
        )
    finally:
        clear_faults(api_stack)
    assert api_stack.http.get("/v1/accounts/shop").json()["status"] == "active"


# --- recurring schedules -----------------------------------------------------------------------------------


@pytest.mark.skipif(not api_has_route("/v1/schedules"), reason="the API has no /v1/schedules yet")
def test_schedules_create_list_show_delete(api_stack: ApiStack) -> None:
    put_account(api_stack, "gw", "gewe", f"inst-{api_stack.prefix}")
    run = cli_runner(api_stack)
    message = {"account": "gw", "to": "wxid_weekly", "message": {"kind": "text", "text": "周报"}}

    created = one_json(
        run(
            "schedules", "create", "--name", "weekly", "--cron", "0 9 * * 1", "--timezone", "Asia/Shanghai",
            "--message-json", json.dumps(message, ensure_ascii=False), "--json",
        )
    )  # fmt: skip
    sid = created["id"]
    assert created["cron"] == "0 9 * * 1" and created["timezone"] == "Asia/Shanghai" and created["next_at"]
    assert api_stack.http.get(f"/v1/schedules/{sid}").json()["name"] == "weekly"
    campaign = {
        "name": "c",
        "account": "gw",
        "recipients": [{"to": "wxid_c"}],
        "message": {"kind": "text", "text": "x"},
    }
    human = ok(run("schedules", "create", "--cron", "*/5 * * * *", "--campaign-json", json.dumps(campaign)))
    assert human.startswith("schedule ") and "*/5 * * * * (Asia/Shanghai), next at " in human  # the API's default
    assert human.strip().endswith(":00 UTC+8")  # shown in the schedule's own timezone, with its offset

    listed = ok(run("schedules", "list", columns=80))
    assert sid in listed and "weekly" in listed and "2 shown" in listed
    assert sid in {s["id"] for s in one_json(run("schedules", "list", "--json"))}
    shown = ok(run("schedules", "show", sid))
    assert sid in shown and "0 9 * * 1" in shown and "wxid_weekly" in shown and "09:00:00 UTC+8" in shown
    assert one_json(run("schedules", "show", sid, "--json"))["id"] == sid

    bad = run("schedules", "create", "--cron", "not a cron", "--timezone", "UTC", "--message-json", json.dumps(message))
    assert bad.returncode == 2 and "cron" in bad.stderr
    assert bad.stderr.rstrip().endswith("/ cron 表达式无效（5 段：分 时 日 月 周；或 6 段，最后一段为秒）"), bad.stderr
    neither = run("schedules", "create", "--cron", "* * * * *", "--timezone", "UTC")
    assert neither.returncode == 2 and "exactly one of" in neither.stderr

    assert ok(run("schedules", "delete", sid)).strip() == f"schedule {sid} deleted / 定时任务已删除"
    assert run("schedules", "show", sid).returncode == 2
    assert sid not in ok(run("schedules", "list"))


def test_message_options_build_each_new_kind_and_refuse_half_given_ones(tmp_path: Path) -> None:
    """Issue 20: --image, --file with --file-name, --link with --title and --thumb, --message-file for sequences."""
    import typer

    from scheduler.cli.options import message_body

    assert message_body({"image": "https://c/p.jpg"}) == {"kind": "image", "url": "https://c/p.jpg"}
    assert message_body({"file": "https://c/p.pdf", "file_name": "报价单.pdf"}) == {
        "kind": "file", "url": "https://c/p.pdf", "name": "报价单.pdf"
    }  # fmt: skip
    link = message_body({"link": "https://s/1", "title": "会场", "thumb": "https://c/t.jpg"})
    assert link == {
        "kind": "link",
        "url": "https://s/1",
        "title": "会场",
        "thumb_url": "https://c/t.jpg",
        "description": "",
    }
    sequence = tmp_path / "seq.json"
    sequence.write_text('{"kind": "sequence", "parts": [{"kind": "text", "text": "hi"}]}', encoding="utf-8")
    assert message_body({"message_file": sequence})["kind"] == "sequence"
    for half in ({"file": "https://c/p.pdf"}, {"link": "https://s/1"}, {"text": "x", "title": "t"},
                 {"text": "x", "image": "https://c/p.jpg"}):  # fmt: skip
        with pytest.raises(typer.Exit) as info:
            message_body(half)
        assert info.value.exit_code == 2


def test_suppressions_add_list_remove_import_export_say_each_line_in_english_and_chinese(
    api_stack: ApiStack, tmp_path: Path
) -> None:
    put_account(api_stack, "shop", "gewe", f"inst-{api_stack.prefix}")
    run = cli_runner(api_stack)

    added = ok(run("suppressions", "add", "wxid_a", "wxid_b", "--account", "shop", "--note", "电话投诉"))
    assert added.strip() == "suppressed 2 recipient(s) for shop / 已将 2 个接收人加入退订名单（账号 shop）"
    everywhere = ok(run("suppressions", "add", "wxid_c"))
    assert everywhere.strip() == "suppressed 1 recipient(s) for every account / 已将 1 个接收人加入退订名单（所有账号）"

    listed = ok(run("suppressions", "list", "--account", "shop", env={"TZ": "Asia/Shanghai"}))
    assert listed.rstrip().endswith("2 shown / 显示 2 条"), listed
    at = {s["to"]: s["at"] for s in one_json(run("suppressions", "list", "--account", "shop", "--json"))}
    since = datetime.fromtimestamp(at["wxid_a"], ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M:%S")
    assert re.search(rf"wxid_a +manual +{since} UTC\+8 ", listed), listed  # the since column, with its offset
    # the API answers both at once (a small list comes whole): the hint still says there are more
    cut = ok(run("suppressions", "list", "--account", "shop", "--limit", "1"))
    assert cut.rstrip().endswith(
        "1 shown (more: raise --limit or use export) / 显示 1 条（还有更多：调大 --limit 或用 export 导出）"
    ), cut

    removed = ok(run("suppressions", "remove", "wxid_a", "--account", "shop"))
    assert (
        removed.strip() == "wxid_a may be messaged again by shop / 已移出退订名单（账号 shop），可再次给 wxid_a 发消息"
    )
    lifted = ok(run("suppressions", "remove", "wxid_c"))
    assert (
        lifted.strip()
        == "wxid_c may be messaged again by every account / 已移出退订名单（所有账号），可再次给 wxid_c 发消息"
    )

    imported = ok(
        run("suppressions", "import", str(write(tmp_path / "s.csv", "to\nwxid_d\nwxid_e\n")), "--account", "shop")
    )
    assert imported.strip() == "imported 2 suppression(s) / 已导入 2 条退订记录"
    target = tmp_path / "out.csv"
    written = ok(run("suppressions", "export", "--account", "shop", "--output", str(target)))
    assert written.strip() == f"written to {target} / 已写入 {target}"
    assert {row["to"] for row in csv.DictReader(io.StringIO(target.read_text("utf-8")))} == {
        "wxid_b",
        "wxid_d",
        "wxid_e",
    }

    bad = run("suppressions", "list", "--reason", "angry")
    assert bad.returncode == 2 and "is not one of" in bad.stderr and "原因须为其中之一" in bad.stderr
