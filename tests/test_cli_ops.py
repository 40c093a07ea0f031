"""The operator commands of the real ``broadcast`` CLI, run as subprocesses against a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as redis_lib

from worker.accounts import AccountSpec, AccountStore
from worker.ledger import Ledger
from worker.messages import TextMessage

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Ops:
    """A key prefix of its own, its stores, and a way to run the CLI against it."""

    redis_url: str
    prefix: str
    ledger: Ledger
    accounts: AccountStore

    def run(self, *args: str, columns: int = 250) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROADCAST_")}
        env.update(
            BROADCAST_REDIS_URL=self.redis_url,
            BROADCAST_KEY_PREFIX=self.prefix,
            COLUMNS=str(columns),  # rich sizes its tables to this when output is not a terminal
            NO_COLOR="1",
            PYTHONIOENCODING="utf-8",
        )
        return subprocess.run(
            [sys.executable, "-m", "scheduler.cli", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=60,
            check=False,
        )

    def dead_job(self, to: str = "wxid_stranger", *, reason: str = "permanent") -> str:
        """A job dead-lettered through the ledger, as a worker would: claim, begin, finish_dead."""
        job_id, _ = self.ledger.submit(account="acct1", to=to, message=TextMessage(text="hi"))
        (claim,) = self.ledger.claim(lease_ttl_s=30, batch_size=10)
        assert claim.job_ids == [job_id]
        assert self.ledger.begin("acct1", claim.token, job_id, lease_ttl_s=30).status == "go"
        status = self.ledger.finish_dead(
            "acct1", claim.token, job_id, reason=reason, error_class="permanent", error="对方不是你的好友",
            history={"n": 1, "outcome": "dead", "error_class": "permanent"},
        )  # fmt: skip
        assert status == "ok"
        self.ledger.release("acct1", claim.token)
        return job_id


@pytest.fixture
def ops(redis_url: str) -> Iterator[Ops]:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"u{uuid.uuid4().hex[:8]}"
    accounts = AccountStore(client, prefix)
    spec = {"vendor": "gewe", "base_url": "http://127.0.0.1:9/gewe/v2/api", "token": "tok-cli-1", "instance": "wx_1"}
    accounts.put("acct1", AccountSpec.model_validate(spec))
    yield Ops(redis_url, prefix, Ledger(client, prefix), accounts)
    client.close()


def json_out(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode in (0, 1), proc.stderr
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    return data


# --- send / job -------------------------------------------------------------------------------------------


def test_send_stores_a_queued_job_and_prints_its_id(ops: Ops) -> None:
    proc = ops.run("send", "--account", "acct1", "--to", "wxid_abc", "--text", "周末大促 hello")

    assert proc.returncode == 0, proc.stderr
    out = json_out(proc)
    assert out["status"] == "queued" and out["created"] is True
    job = ops.ledger.get(str(out["id"]))
    assert job is not None
    assert (job.state, job.account, job.to) == ("queued", "acct1", "wxid_abc")
    assert job.message() == TextMessage(text="周末大促 hello")
    assert ops.ledger.redis.lrange(ops.ledger.keys.queue("acct1"), 0, -1) == [out["id"]]


def test_send_with_an_idempotency_key_twice_answers_the_same_job(ops: Ops) -> None:
    args = ("send", "--account", "acct1", "--to", "wxid_abc", "--text", "x", "--idempotency-key", "order-77")
    first = json_out(ops.run(*args))
    second = json_out(ops.run(*args))
    assert first["created"] is True and second["created"] is False
    assert second["id"] == first["id"]
    assert ops.ledger.redis.llen(ops.ledger.keys.queue("acct1")) == 1


def test_send_from_an_unknown_account_is_refused_with_exit_2(ops: Ops) -> None:
    proc = ops.run("send", "--account", "ghost", "--to", "wxid_abc", "--text", "hi")
    assert proc.returncode == 2
    assert "account" in proc.stderr and "ghost" in proc.stderr
    assert proc.stdout.strip() == ""
    assert ops.ledger.redis.keys(f"{ops.prefix}:job:*") == []


def test_send_to_a_bad_recipient_is_refused_naming_the_field(ops: Ops) -> None:
    proc = ops.run("send", "--account", "acct1", "--to", "not a wxid!", "--text", "hi")
    assert proc.returncode == 2
    assert "to:" in proc.stderr
    assert ops.ledger.redis.keys(f"{ops.prefix}:job:*") == []


def test_job_shows_fields_and_history(ops: Ops) -> None:
    job_id = ops.dead_job()
    out = json_out(ops.run("job", job_id))
    assert out["id"] == job_id and out["state"] == "dead" and out["reason"] == "permanent"
    assert "message" not in out
    assert out["history"] == [{"n": 1, "outcome": "dead", "error_class": "permanent"}]
    missing = ops.run("job", "j-nope")
    assert missing.returncode == 1 and "no job j-nope" in missing.stderr


# --- dead letters -------------------------------------------------------------------------------------------


def test_dead_letters_list_show_replay(ops: Ops) -> None:
    job_id = ops.dead_job()

    listed = ops.run("dead-letters", "list")
    assert listed.returncode == 0, listed.stderr
    assert job_id in listed.stdout and "wxid_stranger" in listed.stdout and "permanent" in listed.stdout
    assert "1 shown" in listed.stdout
    other = ops.run("dead-letters", "list", "--reason", "retries_exhausted")
    assert job_id not in other.stdout and "0 shown" in other.stdout

    shown = json_out(ops.run("dead-letters", "show", job_id))
    assert shown["id"] == job_id and shown["reason"] == "permanent" and shown["error"] == "对方不是你的好友"
    assert shown["attempts"] == 1
    assert shown["history"] == [{"n": 1, "outcome": "dead", "error_class": "permanent"}]

    replay = ops.run("dead-letters", "replay", job_id)
    assert replay.returncode == 0, replay.stderr
    assert json_out(replay) == {job_id: "ok"}
    job = ops.ledger.get(job_id)
    assert job is not None and job.state == "queued"
    assert ops.ledger.redis.lrange(ops.ledger.keys.queue("acct1"), 0, -1) == [job_id]
    assert ops.ledger.redis.zscore(ops.ledger.keys.dlq, job_id) is None

    again = ops.run("dead-letters", "replay", job_id)
    assert again.returncode != 0
    assert json_out(again) == {job_id: "not_dead"}
    assert ops.ledger.redis.llen(ops.ledger.keys.queue("acct1")) == 1  # not queued twice

    not_dead = ops.run("dead-letters", "show", job_id)
    assert not_dead.returncode == 1 and "not a dead letter" in not_dead.stderr
    assert "0 shown" in ops.run("dead-letters", "list").stdout


def test_dead_letters_replay_of_an_unknown_outcome_needs_force(ops: Ops) -> None:
    job_id, _ = ops.ledger.submit(account="acct1", to="wxid_maybe", message=TextMessage(text="hi"))
    (claim,) = ops.ledger.claim(lease_ttl_s=30, batch_size=10)
    ops.ledger.begin("acct1", claim.token, job_id, lease_ttl_s=30)
    ops.ledger.redis.delete(ops.ledger.keys.lease("acct1"))
    assert ops.ledger.recover() == (0, 1)

    refused = ops.run("dead-letters", "replay", job_id)
    assert refused.returncode == 1 and json_out(refused) == {job_id: "unknown_outcome"}
    assert ops.ledger.get(job_id).state == "dead"  # type: ignore[union-attr]

    forced = ops.run("dead-letters", "replay", "--force", job_id)
    assert forced.returncode == 0 and json_out(forced) == {job_id: "ok"}
    assert ops.ledger.get(job_id).state == "queued"  # type: ignore[union-attr]


def test_dead_letters_replay_of_several_fails_if_any_fails(ops: Ops) -> None:
    good = ops.dead_job("wxid_a")
    proc = ops.run("dead-letters", "replay", good, "j-missing")
    assert proc.returncode == 1
    assert json_out(proc) == {good: "ok", "j-missing": "missing"}
    assert ops.ledger.get(good).state == "queued"  # type: ignore[union-attr]


def test_dead_letters_delete(ops: Ops) -> None:
    job_id = ops.dead_job()
    proc = ops.run("dead-letters", "delete", job_id, "j-missing")
    assert proc.returncode == 0, proc.stderr
    assert json_out(proc) == {job_id: True, "j-missing": False}
    assert ops.ledger.redis.zscore(ops.ledger.keys.dlq, job_id) is None
    job = ops.ledger.get(job_id)
    assert job is not None and job.state == "dead" and job.fields["dismissed"] == "1"
    assert "0 shown" in ops.run("dead-letters", "list").stdout
    assert json_out(ops.run("dead-letters", "delete", job_id)) == {job_id: False}


def test_dead_letters_list_prints_whole_ids_at_80_columns(ops: Ops) -> None:
    job_id = ops.dead_job("wxid_a_rather_long_recipient_name")
    listed = ops.run("dead-letters", "list", columns=80)
    assert listed.returncode == 0, listed.stderr
    assert "1 shown" in listed.stdout
    assert job_id in listed.stdout
