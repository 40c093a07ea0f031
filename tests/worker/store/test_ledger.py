"""The job store against a real Redis: every Lua transition driven directly, no worker, no dispatcher."""

from __future__ import annotations

import collections
import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis as redis_lib

from scheduler.intake.campaigns import Campaigns
from tests.conftest import claim_ready
from worker.messages import TextMessage
from worker.pacing.rules import redis_now
from worker.store.accounts import AccountSpec, AccountStore
from worker.store.deadletter import DeadLetters
from worker.store.ledger import STATES, Claim, Ledger, PaceRecord
from worker.vendors.base import SendResult

BIG_ID = 7645748705605226305  # > 2**53: a float would round it
LEASE_S = 30.0


@pytest.fixture
def client(redis_url: str) -> Iterator[redis_lib.Redis]:
    r = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    yield r
    r.close()


@pytest.fixture
def ledger(client: redis_lib.Redis) -> Ledger:
    return Ledger(client, f"u{uuid.uuid4().hex[:8]}")


@pytest.fixture
def accounts(ledger: Ledger) -> AccountStore:
    return AccountStore(ledger.redis, ledger.prefix)


def submit(ledger: Ledger, n: int, *, account: str = "acct1", **kw: object) -> list[str]:
    ids = []
    for i in range(n):
        job_id, created, _ = ledger.submit(
            account=account,
            to=f"wxid_{i:03d}",
            message=TextMessage(text=f"hello {i}"),
            **kw,  # type: ignore[arg-type]
        )
        assert created
        ids.append(job_id)
    return ids


def claim_one(ledger: Ledger, *, batch_size: int = 50) -> Claim:
    claims = claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=batch_size)
    assert len(claims) == 1, claims
    return claims[0]


def result(to: str = "wxid_000", new_msg_id: int = BIG_ID) -> SendResult:
    return SendResult(
        vendor="gewe", to=to, endpoint="postText", msg_id=123, new_msg_id=new_msg_id, create_time=1700000000
    )


def state(ledger: Ledger, job_id: str) -> str:
    job = ledger.get(job_id)
    assert job is not None
    return job.state


def queue(ledger: Ledger, account: str = "acct1") -> list[str]:
    return list(ledger.redis.lrange(ledger.keys.queue(account), 0, -1))


def in_dlq(ledger: Ledger, job_id: str) -> bool:
    return ledger.redis.zscore(ledger.keys.dlq, job_id) is not None


# --- submit ------------------------------------------------------------------------------------------


def test_submit_stores_queued_job_and_enqueues_it(ledger: Ledger) -> None:
    message = TextMessage(text="周末大促")
    job_id, created, _ = ledger.submit(account="acct1", to="wxid_a", message=message, variables={"x": "1"})

    assert created is True
    job = ledger.get(job_id)
    assert job is not None
    assert (job.state, job.account, job.to, job.attempts) == ("queued", "acct1", "wxid_a", 0)
    assert job.message() == message
    assert job.variables == {"x": "1"}
    assert queue(ledger) == [job_id]
    assert ledger.redis.zscore(ledger.keys.sched, "acct1") == 0  # the dispatcher looks at it at once
    assert ledger.redis.llen(ledger.keys.wake) >= 1
    assert ledger.redis.zcard(ledger.keys.due) == 0


def test_high_priority_goes_to_its_own_queue_and_is_claimed_first(ledger: Ledger) -> None:
    (normal,) = submit(ledger, 1)
    (high,) = submit(ledger, 1, priority="high")
    assert queue(ledger) == [normal]
    assert ledger.redis.lrange(ledger.keys.queue_high("acct1"), 0, -1) == [high]
    assert claim_one(ledger).job_ids == [high, normal]


def test_future_send_at_is_scheduled_then_promoted_when_due(ledger: Ledger) -> None:
    send_at = time.time() + 3600
    (job_id,) = submit(ledger, 1, send_at=send_at)

    assert state(ledger, job_id) == "scheduled"
    assert ledger.redis.zscore(ledger.keys.due, job_id) == pytest.approx(send_at, abs=0.01)
    assert queue(ledger) == []
    assert claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=10) == []

    assert ledger.tick(now=send_at - 10).promoted == 0
    assert state(ledger, job_id) == "scheduled"

    assert ledger.tick(now=send_at + 1).promoted == 1
    assert state(ledger, job_id) == "queued"
    assert ledger.redis.zscore(ledger.keys.due, job_id) is None
    assert queue(ledger) == [job_id]


def test_idempotency_key_answers_the_first_id_and_stores_nothing_new(ledger: Ledger) -> None:
    first, created, _ = ledger.submit(account="acct1", to="wxid_a", message=TextMessage(text="a"), idempotency_key="k1")
    assert created
    again, created_again, _ = ledger.submit(
        account="acct1", to="wxid_b", message=TextMessage(text="b"), idempotency_key="k1", job_id="jdup"
    )

    assert (again, created_again) == (first, False)
    assert ledger.get("jdup") is None
    assert ledger.get(first).to == "wxid_a"  # type: ignore[union-attr]
    assert queue(ledger) == [first]
    assert ledger.redis.get(ledger.keys.idempotency("m", "k1")) == first
    # a different key is a different job
    other, created_other, _ = ledger.submit(
        account="acct1", to="wxid_b", message=TextMessage(text="b"), idempotency_key="k2"
    )
    assert created_other and other != first


# --- claim / begin / finish --------------------------------------------------------------------------


def test_claim_hands_a_leased_session_and_a_second_claim_gets_nothing(ledger: Ledger) -> None:
    ids = submit(ledger, 3)
    claim = claim_one(ledger, batch_size=2)

    assert claim.account == "acct1"
    assert claim.job_ids == ids[:2]
    assert ledger.redis.get(ledger.keys.lease("acct1")) == claim.token
    assert 0 < ledger.redis.pttl(ledger.keys.lease("acct1")) <= LEASE_S * 1000
    assert ledger.redis.lrange(ledger.keys.claimed("acct1"), 0, -1) == ids[:2]
    assert queue(ledger) == [ids[2]]

    # the lease lives: the account's third job waits
    assert claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=2) == []
    assert queue(ledger) == [ids[2]]


def test_claims_are_per_account(ledger: Ledger) -> None:
    (a,) = submit(ledger, 1, account="acct1")
    (b,) = submit(ledger, 1, account="acct2")
    claims = {c.account: c for c in claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=5)}
    assert {k: v.job_ids for k, v in claims.items()} == {"acct1": [a], "acct2": [b]}
    assert claims["acct1"].token != claims["acct2"].token


def test_begin_and_finish_sent_record_exact_ids_and_history(ledger: Ledger) -> None:
    (job_id,) = submit(ledger, 1)
    claim = claim_one(ledger)

    begin = ledger.begin("acct1", claim.token, job_id, lease_ttl_s=LEASE_S)
    assert begin.status == "go"
    assert begin.job is not None and begin.job.state == "sending" and begin.job.attempts == 1
    assert begin.job.message() == TextMessage(text="hello 0")
    assert state(ledger, job_id) == "sending"

    entry = {"n": 1, "outcome": "sent", "new_msg_id": str(BIG_ID)}
    assert ledger.finish_sent("acct1", claim.token, job_id, result(), entry).status == "ok"

    job = ledger.get(job_id)
    assert job is not None and job.state == "sent"
    raw = ledger.redis.hgetall(ledger.keys.job(job_id))
    assert raw["new_msg_id"] == "7645748705605226305"
    assert raw["msg_id"] == "123" and raw["create_time"] == "1700000000"
    assert raw["vendor"] == "gewe" and raw["endpoint"] == "postText" and raw["has_ids"] == "1"
    assert "sent_at" in raw
    assert job.result() == {
        "msg_id": "123",
        "new_msg_id": "7645748705605226305",
        "client_msg_id": None,
        "create_time": "1700000000",
    }
    assert int(job.fields["new_msg_id"]) == BIG_ID
    assert ledger.history(job_id) == [entry]
    assert ledger.redis.lrange(ledger.keys.claimed("acct1"), 0, -1) == []


def test_begin_on_a_sent_job_skips_it(ledger: Ledger) -> None:
    (job_id,) = submit(ledger, 1)
    claim = claim_one(ledger)
    assert ledger.begin("acct1", claim.token, job_id, lease_ttl_s=LEASE_S).status == "go"
    assert ledger.finish_sent("acct1", claim.token, job_id, result(), {"outcome": "sent"}).status == "ok"

    again = ledger.begin("acct1", claim.token, job_id, lease_ttl_s=LEASE_S)

    assert (again.status, again.why, again.job) == ("skip", "sent", None)
    job = ledger.get(job_id)
    assert job is not None and job.state == "sent" and job.attempts == 1
    assert job.fields["new_msg_id"] == str(BIG_ID)


def test_begin_on_a_job_already_sending_turns_it_into_an_unknown_outcome(ledger: Ledger) -> None:
    # the same batch delivered twice (Celery redelivery): the second begin must not send again
    (job_id,) = submit(ledger, 1)
    claim = claim_one(ledger)
    assert ledger.begin("acct1", claim.token, job_id, lease_ttl_s=LEASE_S).status == "go"
    again = ledger.begin("acct1", claim.token, job_id, lease_ttl_s=LEASE_S)
    assert (again.status, again.why) == ("skip", "unknown_outcome")
    job = ledger.get(job_id)
    assert job is not None and job.state == "dead" and job.fields["reason"] == "unknown_outcome"
    assert in_dlq(ledger, job_id)


def test_finish_retry_goes_through_the_due_set_with_per_class_counters(ledger: Ledger) -> None:
    (job_id,) = submit(ledger, 1)
    claim = claim_one(ledger)
    ledger.begin("acct1", claim.token, job_id, lease_ttl_s=LEASE_S)
    due_at = time.time() + 600

    status = ledger.finish_retry(
        "acct1", claim.token, job_id, due_at=due_at, error_class="transient", error="HTTP 502", history={"n": 1}
    )

    assert status.status == "ok"
    job = ledger.get(job_id)
    assert job is not None and job.state == "retrying"
    assert ledger.redis.zscore(ledger.keys.due, job_id) == pytest.approx(due_at, abs=0.01)
    assert job.fields["n_transient"] == "1" and job.error_count("transient") == 1
    assert job.error_count("throttled") == 0
    assert (job.fields["last_error_class"], job.fields["last_error"]) == ("transient", "HTTP 502")
    assert queue(ledger) == []
    ledger.release("acct1", claim.token)

    # not due yet: stays; due: back in the queue, then a throttled failure counts separately
    assert ledger.tick(now=due_at - 60).promoted == 0
    assert ledger.tick(now=due_at + 1).promoted == 1
    assert state(ledger, job_id) == "queued" and queue(ledger) == [job_id]
    claim2 = claim_one(ledger)
    assert ledger.begin("acct1", claim2.token, job_id, lease_ttl_s=LEASE_S).status == "go"
    ledger.finish_retry(
        "acct1", claim2.token, job_id, due_at=due_at, error_class="throttled", error="频率过快", history={"n": 2}
    )
    job = ledger.get(job_id)
    assert job is not None
    assert (job.error_count("transient"), job.error_count("throttled"), job.attempts) == (1, 1, 2)
    assert [h["n"] for h in ledger.history(job_id)] == [1, 2]


def test_finish_dead_dead_letters_the_job(ledger: Ledger) -> None:
    (job_id,) = submit(ledger, 1)
    claim = claim_one(ledger)
    ledger.begin("acct1", claim.token, job_id, lease_ttl_s=LEASE_S)

    status = ledger.finish_dead(
        "acct1", claim.token, job_id, reason="permanent", error_class="permanent", error="不是你的好友",
        history={"outcome": "dead"},
    )  # fmt: skip

    assert status.status == "ok"
    job = ledger.get(job_id)
    assert job is not None and job.state == "dead"
    assert (job.fields["reason"], job.fields["error_class"], job.fields["error"]) == (
        "permanent",
        "permanent",
        "不是你的好友",
    )
    assert in_dlq(ledger, job_id)
    assert [d.job.id for d in DeadLetters(ledger).list()] == [job_id]


def test_finish_requeue_puts_the_job_back_at_the_head_without_counting_the_attempt(ledger: Ledger) -> None:
    first, second = submit(ledger, 2)
    claim = claim_one(ledger, batch_size=1)
    ledger.begin("acct1", claim.token, first, lease_ttl_s=LEASE_S)
    status = ledger.finish_requeue(
        "acct1", claim.token, first, error_class="account_down", error="已离线", history={"outcome": "requeue"}
    )
    assert status.status == "ok"
    job = ledger.get(first)
    assert job is not None and job.state == "queued" and job.attempts == 0
    assert queue(ledger) == [first, second]
    # then sent at its first counted attempt: the history still reads oldest first, the requeue before it
    ledger.release("acct1", claim.token)
    again = claim_one(ledger, batch_size=1)
    ledger.begin("acct1", again.token, first, lease_ttl_s=LEASE_S)
    assert ledger.finish_sent("acct1", again.token, first, result(), {"outcome": "sent"}).status == "ok"
    assert [h["outcome"] for h in ledger.history(first)] == ["requeue", "sent"]


def test_finish_with_a_foreign_token_is_stale_and_changes_nothing(ledger: Ledger) -> None:
    (job_id,) = submit(ledger, 1)
    claim = claim_one(ledger)
    ledger.begin("acct1", claim.token, job_id, lease_ttl_s=LEASE_S)
    assert ledger.finish_sent("acct1", "not-the-token", job_id, result(), {"outcome": "sent"}).status == "stale"
    assert state(ledger, job_id) == "sending"
    assert "new_msg_id" not in ledger.redis.hgetall(ledger.keys.job(job_id))


def test_release_returns_unprocessed_jobs_to_the_head_in_order(ledger: Ledger) -> None:
    ids = submit(ledger, 4)
    claim = claim_one(ledger)
    (later,) = submit(ledger, 1, account="acct1")
    assert queue(ledger) == [later]

    ledger.begin("acct1", claim.token, ids[0], lease_ttl_s=LEASE_S)
    ledger.finish_sent("acct1", claim.token, ids[0], result(), {"outcome": "sent"})

    assert ledger.release("acct1", "wrong-token") == -1
    assert queue(ledger) == [later]

    assert ledger.release("acct1", claim.token) == 3
    assert queue(ledger) == [*ids[1:], later]
    assert [state(ledger, i) for i in ids] == ["sent", "queued", "queued", "queued"]
    assert not ledger.redis.exists(ledger.keys.lease("acct1"), ledger.keys.claimed("acct1"))
    assert not ledger.redis.sismember(ledger.keys.leased, "acct1")
    assert claim_one(ledger).job_ids == [*ids[1:], later]


def test_recover_after_lease_expiry_requeues_untouched_and_dead_letters_the_send_in_flight(ledger: Ledger) -> None:
    ids = submit(ledger, 3)
    claim = claim_one(ledger)
    assert ledger.begin("acct1", claim.token, ids[0], lease_ttl_s=LEASE_S).status == "go"

    assert ledger.recover() == (0, 0)  # lease alive: nothing to recover
    ledger.redis.delete(ledger.keys.lease("acct1"))  # the worker died; its lease expired

    assert ledger.recover() == (2, 1)
    job = ledger.get(ids[0])
    assert job is not None and job.state == "dead"
    assert (job.fields["reason"], job.fields["error_class"]) == ("unknown_outcome", "ambiguous")
    assert in_dlq(ledger, ids[0])
    assert queue(ledger) == ids[1:]
    assert [state(ledger, i) for i in ids[1:]] == ["queued", "queued"]
    assert not ledger.redis.exists(ledger.keys.claimed("acct1"))
    assert not ledger.redis.sismember(ledger.keys.leased, "acct1")
    assert ledger.recover() == (0, 0)

    # the old worker's token no longer opens anything
    assert ledger.begin("acct1", claim.token, ids[1], lease_ttl_s=LEASE_S).status == "lost"


def test_late_finish_sent_upgrades_an_unknown_outcome_to_sent(ledger: Ledger) -> None:
    (job_id,) = submit(ledger, 1)
    claim = claim_one(ledger)
    ledger.begin("acct1", claim.token, job_id, lease_ttl_s=LEASE_S)
    ledger.redis.delete(ledger.keys.lease("acct1"))
    assert ledger.recover() == (0, 1)
    assert state(ledger, job_id) == "dead"

    # a late failure report cannot change the verdict...
    retry = ledger.finish_retry(
        "acct1", claim.token, job_id, due_at=time.time(), error_class="transient", error="x", history={"n": 1}
    )
    assert retry.status == "stale"
    assert state(ledger, job_id) == "dead" and in_dlq(ledger, job_id)

    # ...but a late success proves the message went out
    assert ledger.finish_sent("acct1", claim.token, job_id, result(), {"outcome": "sent"}).status == "ok"
    job = ledger.get(job_id)
    assert job is not None and job.state == "sent"
    assert job.fields["new_msg_id"] == "7645748705605226305"
    assert not {"reason", "error_class", "dead_at"} & set(job.fields)
    assert not in_dlq(ledger, job_id)
    assert ledger.replay(job_id, force=True) == "not_dead"


def test_begin_with_a_wrong_token_is_lost(ledger: Ledger) -> None:
    (job_id,) = submit(ledger, 1)
    claim = claim_one(ledger)
    lost = ledger.begin("acct1", claim.token + "x", job_id, lease_ttl_s=LEASE_S)
    assert lost.status == "lost" and lost.job is None
    assert state(ledger, job_id) == "queued"
    job = ledger.get(job_id)
    assert job is not None and job.attempts == 0


def test_paused_account_blocks_begin_and_claim(ledger: Ledger, accounts: AccountStore) -> None:
    ids = submit(ledger, 2)
    claim = claim_one(ledger, batch_size=1)
    accounts.set_status("acct1", "paused", "operator")

    paused = ledger.begin("acct1", claim.token, ids[0], lease_ttl_s=LEASE_S)
    assert (paused.status, paused.why) == ("yield", "changed")  # the session ends at its next job
    assert state(ledger, ids[0]) == "queued"

    ledger.release("acct1", claim.token)
    assert queue(ledger) == ids
    assert claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=5) == []
    assert queue(ledger) == ids

    accounts.set_status("acct1", "down", "已离线")
    assert claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=5) == []

    accounts.set_status("acct1", "active")
    assert claim_one(ledger, batch_size=5).job_ids == ids


def test_cancel_works_before_sending_only(ledger: Ledger) -> None:
    queued, to_send = submit(ledger, 2)
    send_at = time.time() + 3600
    (scheduled,) = submit(ledger, 1, send_at=send_at)

    assert ledger.cancel(queued) == "queued"
    assert state(ledger, queued) == "cancelled"
    assert ledger.cancel(scheduled) == "scheduled"
    assert state(ledger, scheduled) == "cancelled"
    assert ledger.redis.zscore(ledger.keys.due, scheduled) is None
    assert ledger.tick(now=send_at + 1).promoted == 0
    assert state(ledger, scheduled) == "cancelled"

    claim = claim_one(ledger)
    skipped = ledger.begin("acct1", claim.token, queued, lease_ttl_s=LEASE_S)
    assert (skipped.status, skipped.why) == ("skip", "cancelled")
    assert ledger.begin("acct1", claim.token, to_send, lease_ttl_s=LEASE_S).status == "go"
    assert ledger.cancel(to_send) == "sending"
    assert state(ledger, to_send) == "sending"
    ledger.finish_sent("acct1", claim.token, to_send, result(), {"outcome": "sent"})
    assert ledger.cancel(to_send) == "sent"
    assert state(ledger, to_send) == "sent"
    assert ledger.cancel("no-such-job") == ""


def test_cancel_a_retrying_job_removes_it_from_the_due_set(ledger: Ledger) -> None:
    (job_id,) = submit(ledger, 1)
    claim = claim_one(ledger)
    ledger.begin("acct1", claim.token, job_id, lease_ttl_s=LEASE_S)
    ledger.finish_retry(
        "acct1", claim.token, job_id, due_at=time.time(), error_class="transient", error="x", history={}
    )
    assert ledger.cancel(job_id) == "retrying"
    assert ledger.redis.zscore(ledger.keys.due, job_id) is None
    assert ledger.tick(now=time.time() + 10).promoted == 0
    assert state(ledger, job_id) == "cancelled"


def _dead(ledger: Ledger, job_id: str, reason: str = "permanent") -> None:
    claim = claim_one(ledger)
    assert ledger.begin("acct1", claim.token, job_id, lease_ttl_s=LEASE_S).status == "go"
    ledger.finish_dead(
        "acct1", claim.token, job_id, reason=reason, error_class="permanent", error="参数错误",
        history={"n": 1, "outcome": "dead"},
    )  # fmt: skip
    ledger.release("acct1", claim.token)


def test_replay_only_dead_jobs_keeping_id_and_history(ledger: Ledger) -> None:
    (job_id,) = submit(ledger, 1)
    assert ledger.replay(job_id) == "not_dead"
    assert ledger.replay("no-such-job") == "missing"
    _dead(ledger, job_id)

    assert ledger.replay(job_id) == "ok"

    job = ledger.get(job_id)
    assert job is not None and job.id == job_id and job.state == "queued"
    assert job.fields["replays"] == "1"
    assert not {"reason", "error_class", "error", "dead_at"} & set(job.fields)
    assert not in_dlq(ledger, job_id)
    assert queue(ledger) == [job_id]
    history = ledger.history(job_id)
    assert [h.get("outcome", h.get("event")) for h in history] == ["dead", "replayed"]
    assert history[1]["from_reason"] == "permanent"
    assert ledger.replay(job_id) == "not_dead"

    # the replayed job is sent under its own id, once
    claim = claim_one(ledger)
    assert claim.job_ids == [job_id]
    assert ledger.begin("acct1", claim.token, job_id, lease_ttl_s=LEASE_S).status == "go"
    ledger.finish_sent("acct1", claim.token, job_id, result(), {"outcome": "sent"})
    assert [h.get("outcome", h.get("event")) for h in ledger.history(job_id)] == ["dead", "replayed", "sent"]
    assert ledger.replay(job_id) == "not_dead"


def test_replay_of_an_unknown_outcome_needs_force(ledger: Ledger) -> None:
    (job_id,) = submit(ledger, 1)
    claim = claim_one(ledger)
    ledger.begin("acct1", claim.token, job_id, lease_ttl_s=LEASE_S)
    ledger.redis.delete(ledger.keys.lease("acct1"))
    ledger.recover()

    assert ledger.replay(job_id) == "unknown_outcome"
    assert state(ledger, job_id) == "dead" and in_dlq(ledger, job_id)
    assert ledger.replay(job_id, force=True) == "ok"
    assert state(ledger, job_id) == "queued"
    assert queue(ledger) == [job_id]


def test_replay_of_a_dead_job_holding_vendor_ids_is_refused(ledger: Ledger) -> None:
    (job_id,) = submit(ledger, 1)
    _dead(ledger, job_id)
    ledger.redis.hset(ledger.keys.job(job_id), "new_msg_id", str(BIG_ID))  # e.g. written by an older version
    assert ledger.replay(job_id) == "already_sent"
    assert state(ledger, job_id) == "dead"


def test_no_new_batch_on_an_account_until_its_dead_session_is_recovered(ledger: Ledger) -> None:
    """A dead batch (lease expired, claimed list left) blocks new claims on its account until RECOVER has
    turned its ``sending`` job into an unknown outcome and requeued the rest: nothing is left hanging."""
    first, untouched = submit(ledger, 2)
    dead_batch = claim_one(ledger)
    assert ledger.begin("acct1", dead_batch.token, first, lease_ttl_s=LEASE_S).status == "go"
    ledger.redis.delete(ledger.keys.lease("acct1"))  # worker SIGKILLed, lease expired
    (later,) = submit(ledger, 1, account="acct1")

    assert claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=10) == []  # not before recovery
    assert ledger.recover() == (1, 1)
    assert state(ledger, first) == "dead"
    assert ledger.get(first).fields["reason"] == "unknown_outcome"  # type: ignore[union-attr]
    new_batch = claim_one(ledger)
    assert new_batch.job_ids == [untouched, later]  # the untouched job kept its place at the head


# --- campaign counters -------------------------------------------------------------------------------


def counters_match(ledger: Ledger, campaign: str, job_ids: list[str]) -> None:
    data = ledger.redis.hgetall(ledger.keys.campaign(campaign))
    counts = {k.removeprefix("n:"): int(v) for k, v in data.items() if k.startswith("n:")}
    assert set(counts) <= set(STATES), counts
    assert all(v >= 0 for v in counts.values()), counts
    assert sum(counts.values()) == len(job_ids)
    real = collections.Counter(state(ledger, i) for i in job_ids)
    assert {k: v for k, v in counts.items() if v} == dict(real)


def test_campaign_counters_follow_every_transition(ledger: Ledger) -> None:
    cid = "c1"
    template = TextMessage(text="大促 {name}")
    n = 7
    ledger.redis.hset(
        ledger.keys.campaign(cid),
        mapping={"name": "promo", "status": "active", "message": template.model_dump_json(), "n:queued": n},
    )
    ids = []
    for i in range(n):
        job_id, _, _ = ledger.submit(account="acct1", to=f"wxid_{i}", campaign=cid, variables={"name": f"n{i}"})
        ids.append(job_id)
    sent, retried, dead, cancelled, unknown, requeued, left = ids
    counters_match(ledger, cid, ids)

    claim = claim_one(ledger)
    go = ledger.begin("acct1", claim.token, sent, lease_ttl_s=LEASE_S)
    assert go.job is not None and go.job.message() == template  # the campaign's template
    assert go.job.message().render(go.job.variables) == TextMessage(text="大促 n0")
    counters_match(ledger, cid, ids)
    ledger.finish_sent("acct1", claim.token, sent, result(), {"outcome": "sent"})
    counters_match(ledger, cid, ids)

    ledger.begin("acct1", claim.token, retried, lease_ttl_s=LEASE_S)
    ledger.finish_retry(
        "acct1", claim.token, retried, due_at=time.time() + 5, error_class="transient", error="x", history={}
    )
    counters_match(ledger, cid, ids)

    ledger.begin("acct1", claim.token, dead, lease_ttl_s=LEASE_S)
    ledger.finish_dead("acct1", claim.token, dead, reason="permanent", error_class="permanent", error="x", history={})
    counters_match(ledger, cid, ids)

    assert ledger.cancel(cancelled) == "queued"
    counters_match(ledger, cid, ids)
    assert ledger.begin("acct1", claim.token, cancelled, lease_ttl_s=LEASE_S).status == "skip"
    counters_match(ledger, cid, ids)

    ledger.begin("acct1", claim.token, requeued, lease_ttl_s=LEASE_S)
    ledger.finish_requeue("acct1", claim.token, requeued, error_class="account_down", error="x", history={})
    counters_match(ledger, cid, ids)

    ledger.begin("acct1", claim.token, unknown, lease_ttl_s=LEASE_S)
    counters_match(ledger, cid, ids)
    ledger.redis.delete(ledger.keys.lease("acct1"))
    assert ledger.recover() == (1, 1)  # `left` requeued, `unknown` dead
    counters_match(ledger, cid, ids)
    ledger.finish_sent("acct1", claim.token, unknown, result(), {"outcome": "sent"})  # the late success
    counters_match(ledger, cid, ids)

    assert ledger.replay(dead) == "ok"
    counters_match(ledger, cid, ids)
    assert ledger.tick(now=time.time() + 10).promoted == 1
    counters_match(ledger, cid, ids)

    final = {i: state(ledger, i) for i in ids}
    assert final == {
        sent: "sent",
        retried: "queued",
        dead: "queued",
        cancelled: "cancelled",
        unknown: "sent",
        requeued: "queued",
        left: "queued",
    }
    data = ledger.redis.hgetall(ledger.keys.campaign(cid))
    assert (int(data["n:sent"]), int(data["n:queued"]), int(data["n:cancelled"])) == (2, 4, 1)
    assert json.loads(data["message"])["text"] == "大促 {name}"

    # every job put back in a queue by those transitions is claimable again, each exactly once
    again = claim_one(ledger)
    assert sorted(again.job_ids) == sorted([retried, dead, requeued, left])
    assert claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=50) == []
    ledger.release("acct1", again.token)
    counters_match(ledger, cid, ids)


def test_finished_jobs_expire_after_the_retention_and_replay_clears_it(ledger: Ledger) -> None:
    ledger.redis.hset(ledger.keys.config, "retention_s", "3600")  # what the dispatcher tells the scripts
    ledger = Ledger(ledger.redis, ledger.prefix, retention_s=3600)  # what a worker finishes jobs with
    sent, dead = submit(ledger, 2)
    batch = claim_one(ledger)
    for job_id in (sent, dead):
        assert ledger.begin("acct1", batch.token, job_id, lease_ttl_s=LEASE_S).status == "go"
    ledger.finish_sent("acct1", batch.token, sent, result(), {"outcome": "sent"})
    ledger.finish_dead(
        "acct1", batch.token, dead, reason="permanent", error_class="permanent", error="x", history={"outcome": "dead"}
    )
    for job_id in (sent, dead):
        assert 3500 < ledger.redis.ttl(ledger.keys.job(job_id)) <= 3600
    assert 3500 < ledger.redis.ttl(ledger.keys.history(dead)) <= 3600
    # a job sent at its first attempt keeps that entry in its own hash: nothing else to expire
    assert ledger.redis.exists(ledger.keys.history(sent)) == 0
    assert ledger.history(sent) == [{"outcome": "sent"}]
    assert ledger.replay(dead) == "ok"
    assert ledger.redis.ttl(ledger.keys.job(dead)) == -1  # back in play: kept until it finishes again


# --- races and edge cases found in review: each scenario once broke a guarantee ---------------------------


def counts_add_up(ledger: Ledger, cid: str) -> dict[str, int]:
    data = ledger.redis.hgetall(ledger.keys.campaign(cid))
    counts = {s: int(data.get(f"n:{s}", 0)) for s in STATES}
    jobs = ledger.redis.lrange(ledger.keys.campaign_jobs(cid), 0, -1)
    real = collections.Counter(state(ledger, j) for j in jobs)
    assert {k: v for k, v in counts.items() if v} == dict(real)
    assert sum(counts.values()) == int(data["total"])
    return counts


def make_campaigns(ledger: Ledger) -> Campaigns:
    store = AccountStore(ledger.redis, ledger.prefix)
    store.put(
        "acct1", AccountSpec(vendor="gewe", base_url="http://127.0.0.1:9", instance="i", limits={"per_minute": 0})
    )  # type: ignore[arg-type]
    return Campaigns(ledger, store)


def test_a_session_ending_mid_send_leaves_no_job_in_sending(ledger: Ledger) -> None:
    (job,) = submit(ledger, 1)
    batch = claim_one(ledger)
    assert ledger.begin("acct1", batch.token, job, lease_ttl_s=LEASE_S).status == "go"
    # the worker hit an unexpected error (soft time limit, a bug) and only released the batch
    ledger.release("acct1", batch.token)
    assert state(ledger, job) == "dead"
    assert ledger.get(job).fields["reason"] == "unknown_outcome"  # type: ignore[union-attr]
    assert ledger.redis.llen(ledger.keys.claimed("acct1")) == 0


def test_a_retry_of_a_cancelled_campaign_job_ends_cancelled(ledger: Ledger) -> None:
    campaigns = make_campaigns(ledger)
    created = campaigns.create(
        name="c",
        account="acct1",
        message={"kind": "text", "text": "x"},
        recipients=[{"to": "wxid_1"}, {"to": "wxid_2"}],
    )
    batch = claim_one(ledger)
    first = batch.job_ids[0]
    assert ledger.begin("acct1", batch.token, first, lease_ttl_s=LEASE_S).status == "go"
    campaigns.set_status(created.id, "cancel")  # while the first job is in flight
    ledger.finish_retry(
        "acct1", batch.token, first, due_at=time.time() - 1, error_class="transient", error="x", history={}
    )
    ledger.release("acct1", batch.token)
    ledger.tick()
    assert state(ledger, first) == "cancelled"
    counts = counts_add_up(ledger, created.id)
    assert counts["cancelled"] == 2 and campaigns.get(created.id)["finished"]


def test_replay_refuses_a_job_of_a_cancelled_campaign(ledger: Ledger) -> None:
    campaigns = make_campaigns(ledger)
    created = campaigns.create(
        name="c",
        account="acct1",
        message={"kind": "text", "text": "x"},
        recipients=[{"to": "wxid_1"}, {"to": "wxid_2"}],
    )
    batch = claim_one(ledger, batch_size=1)
    (job,) = batch.job_ids
    ledger.begin("acct1", batch.token, job, lease_ttl_s=LEASE_S)
    ledger.finish_dead("acct1", batch.token, job, reason="permanent", error_class="permanent", error="x", history={})
    campaigns.set_status(created.id, "cancel")
    assert ledger.replay(job) == "campaign_cancelled"
    assert state(ledger, job) == "dead"


def test_replay_refuses_a_job_of_a_recalled_campaign_even_a_finished_one(ledger: Ledger) -> None:
    campaigns = make_campaigns(ledger)
    created = campaigns.create(
        name="c", account="acct1", message={"kind": "text", "text": "x"}, recipients=[{"to": "wxid_1"}]
    )
    batch = claim_one(ledger, batch_size=1)
    (job,) = batch.job_ids
    ledger.begin("acct1", batch.token, job, lease_ttl_s=LEASE_S)
    ledger.finish_dead("acct1", batch.token, job, reason="permanent", error_class="permanent", error="x", history={})
    assert campaigns.get(created.id)["status"] == "finished"
    campaigns.recall(created.id, window_s=110)
    assert ledger.replay(job) == "campaign_recalled"
    assert state(ledger, job) == "dead"


def test_a_paused_scheduled_campaign_leaves_the_due_set_and_returns_on_resume(ledger: Ledger) -> None:
    campaigns = make_campaigns(ledger)
    send_at = time.time() + 0.2
    created = campaigns.create(
        name="s", account="acct1", message={"kind": "text", "text": "x"}, recipients=[{"to": "wxid_1"}], send_at=send_at
    )
    campaigns.set_status(created.id, "pause")
    time.sleep(0.3)
    campaigns.activate_due()
    assert ledger.redis.zscore(ledger.keys.due_campaigns, created.id) is None
    assert campaigns.get(created.id)["status"] == "paused"
    campaigns.set_status(created.id, "resume")
    assert ledger.redis.zscore(ledger.keys.due_campaigns, created.id) is not None
    campaigns.activate_due()
    assert campaigns.get(created.id)["status"] == "active"
    assert counts_add_up(ledger, created.id)["queued"] == 1


def test_messages_and_campaigns_have_separate_idempotency_keys(ledger: Ledger) -> None:
    campaigns = make_campaigns(ledger)
    job_id, created, _ = ledger.submit(account="acct1", to="wxid_1", idempotency_key="order-42")
    campaign = campaigns.create(
        name="c",
        account="acct1",
        message={"kind": "text", "text": "x"},
        recipients=[{"to": "wxid_2"}],
        idempotency_key="order-42",
    )
    assert created and campaign.created and campaign.total == 1 and campaign.id != job_id


def test_deleting_an_expired_dead_letter_leaves_no_stub(ledger: Ledger) -> None:
    (job,) = submit(ledger, 1)
    batch = claim_one(ledger)
    ledger.begin("acct1", batch.token, job, lease_ttl_s=LEASE_S)
    ledger.finish_dead("acct1", batch.token, job, reason="permanent", error_class="permanent", error="x", history={})
    ledger.redis.delete(ledger.keys.job(job), ledger.keys.history(job))  # expired after the retention
    letters = DeadLetters(ledger)
    assert letters.list() == [] and letters.count() == 0  # the stale index entry was pruned
    ledger.redis.zadd(ledger.keys.dlq, {job: time.time()})
    assert letters.delete(job) is True
    assert ledger.redis.exists(ledger.keys.job(job)) == 0


def test_finish_after_a_lost_lease_still_records_the_pacing(ledger: Ledger) -> None:
    (job,) = submit(ledger, 1)
    batch = claim_one(ledger)
    ledger.begin("acct1", batch.token, job, lease_ttl_s=LEASE_S)
    ledger.finish_sent("acct1", batch.token, job, result(), {"outcome": "sent"})
    ledger.redis.delete(ledger.keys.lease("acct1"))  # the lease ran out during a slow call
    ended = redis_now(ledger.redis)
    record = PaceRecord(ended=ended, fraction=0.5, slowdown=None, day="20261122", day_sends=1, sent=True, keep=30)
    late = ledger.finish_sent("acct1", batch.token, job, result(), {"outcome": "sent"}, pace=record)
    assert late.status == "stale"
    assert ledger.release("acct1", batch.token) == -1
    pace = ledger.redis.hgetall(ledger.keys.pace("acct1"))
    assert float(pace["last_end"]) == pytest.approx(late.end)  # the call happened: the next one waits for it
    assert late.end == pytest.approx(ended, abs=1e-6)  # the worker's reading of Redis's clock at the answer
    assert (pace["day"], pace["day_n"], pace["r"]) == ("20261122", "1", "0.500000")
    assert ledger.redis.lrange(ledger.keys.pace_window("acct1"), 0, -1) == [f"{late.end:.6f}"]


def test_finished_campaigns_past_the_retention_are_deleted_unfinished_kept(ledger: Ledger) -> None:
    campaigns = make_campaigns(ledger)
    done = campaigns.create(
        name="done", account="acct1", message={"kind": "text", "text": "x"}, recipients=[{"to": "wxid_1"}]
    )
    running = campaigns.create(
        name="running", account="acct1", message={"kind": "text", "text": "x"}, recipients=[{"to": "wxid_2"}]
    )
    campaigns.set_status(done.id, "cancel")  # finished: every job terminal
    assert campaigns.expire_finished(older_than_s=3600) == 0  # too young
    assert campaigns.expire_finished(older_than_s=0, now=time.time() + 1) == 1
    assert ledger.redis.exists(ledger.keys.campaign(done.id), ledger.keys.campaign_jobs(done.id)) == 0
    assert [c["id"] for c in campaigns.recent()] == [running.id]


def test_load_scripts_puts_the_send_path_scripts_on_the_server(ledger: Ledger) -> None:
    send_path = [ledger._begin, *ledger._finish.values(), ledger._part, ledger._release]
    shas = [script._script.sha for script in send_path]
    ledger.redis.script_flush()
    assert not any(ledger.redis.script_exists(*shas))
    ledger.load_scripts()
    assert all(ledger.redis.script_exists(*shas))
