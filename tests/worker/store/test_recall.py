"""Recall in the store, against a real Redis: which sent jobs get a revoke job, which are decided at once, and
that each job's revoke is asked for and counted exactly once (no worker: the scripts driven directly)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis as redis_lib

from scheduler.intake.campaigns import Campaigns, recall_progress
from tests.conftest import claim_ready
from worker.messages import TextMessage
from worker.store.accounts import AccountSpec, AccountStore
from worker.store.ledger import Ledger, RecallAsked, RecallOutcome
from worker.vendors.base import SendResult

LEASE_S = 30.0


@pytest.fixture
def ledger(redis_url: str) -> Iterator[Ledger]:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    yield Ledger(client, f"rc{uuid.uuid4().hex[:8]}")
    client.close()


def send_all(ledger: Ledger, account: str, vendor: str = "gewe", *, create_time: int | None = None) -> list[str]:
    """Claim and finish every queued job of ``account`` as sent (ids as the vendor would answer)."""
    sent = []
    for claim in ledger.claim(lease_ttl_s=LEASE_S, candidates=[(account, 100, 0.0, 0.0)]):  # this account only
        for n, job_id in enumerate(claim.job_ids):
            begin = ledger.begin(claim.account, claim.token, job_id, lease_ttl_s=LEASE_S)
            assert begin.job is not None
            result = SendResult(
                vendor=vendor,
                to=begin.job.to,
                endpoint="postText",
                msg_id=1000 + n,
                new_msg_id=2**62 + n,
                create_time=int(time.time()) if create_time is None else create_time,
            )
            assert ledger.finish_sent(claim.account, claim.token, job_id, result, {"outcome": "sent"}).status == "ok"
            sent.append(job_id)
        ledger.release(claim.account, claim.token)
    return sent


def high_queue(ledger: Ledger, account: str) -> list[str]:
    return list(ledger.redis.lrange(ledger.keys.queue_high(account), 0, -1))


def fields(ledger: Ledger, job_id: str) -> dict[str, str]:
    job = ledger.get(job_id)
    assert job is not None
    return job.fields


def test_a_sent_job_inside_the_window_gets_one_revoke_job_ahead_of_the_accounts_sends(ledger: Ledger) -> None:
    (sent,) = [ledger.submit(account="a1", to="wxid_x", message=TextMessage(text="oops")).id]
    assert send_all(ledger, "a1") == [sent]
    later = ledger.submit(account="a1", to="wxid_y", message=TextMessage(text="next")).id

    assert ledger.request_revokes([sent], window_s=110, unsupported=["gewe-legacy"]) == RecallAsked(1, 0, 0, 0)
    assert ledger.request_revokes([sent], window_s=110, unsupported=[]) == RecallAsked(0, 0, 0, 1)  # once
    revoke_id = f"r{sent}"
    assert high_queue(ledger, "a1") == [revoke_id]
    revoke = ledger.get(revoke_id)
    assert revoke is not None and revoke.revoke_of == sent and revoke.state == "queued" and revoke.to == "wxid_x"
    assert fields(ledger, sent)["recall"] == RecallOutcome.PENDING
    assert ledger.cancel(revoke_id) == "revoke"  # a recall is final: its revoke cannot be cancelled
    assert fields(ledger, revoke_id)["state"] == "queued"

    (claim,) = claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=10)
    assert claim.job_ids == [revoke_id, later]  # the revoke first, then the account's send
    begin = ledger.begin("a1", claim.token, revoke_id, lease_ttl_s=LEASE_S)
    assert begin.job is not None and begin.job.revoke_of == sent
    finished = ledger.finish_recall(
        "a1", claim.token, revoke_id, outcome=RecallOutcome.RECALLED, error="", history={"outcome": "recalled"}
    )
    assert finished.status == "ok"
    target = fields(ledger, sent)
    assert target["recall"] == "recalled" and target["revoked_at"] and target["state"] == "sent"
    assert ledger.history(sent)[-1]["event"] == "revoked"
    assert fields(ledger, revoke_id)["state"] == "sent"
    assert not ledger.redis.zscore(ledger.keys.dlq, revoke_id)


@pytest.mark.parametrize(
    ("vendor", "created_ago", "expected"),
    [("gewe-legacy", 0, "unsupported"), ("gewe", 300, "too_late"), ("gewe", 0, "pending")],
)
def test_the_outcome_decided_at_the_request(ledger: Ledger, vendor: str, created_ago: int, expected: str) -> None:
    job = ledger.submit(account="a1", to="wxid_x", message=TextMessage(text="oops")).id
    send_all(ledger, "a1", vendor, create_time=int(time.time()) - created_ago)
    asked = ledger.request_revokes([job], window_s=110, unsupported=["gewe-legacy"])
    assert asked._asdict()[expected] == 1
    assert fields(ledger, job)["recall"] == expected
    assert high_queue(ledger, "a1") == ([f"r{job}"] if expected == "pending" else [])
    if expected != "pending":
        assert ledger.history(job)[-1] == {
            "event": "not_revoked",
            "outcome": expected,
            "at": pytest.approx(time.time(), abs=5),
            "error": fields(ledger, job)["recall_error"],
        }


def test_without_a_create_time_the_window_counts_from_sent_at(ledger: Ledger) -> None:
    job = ledger.submit(account="a1", to="wxid_x", message=TextMessage(text="oops")).id
    send_all(ledger, "a1", create_time=0)  # a vendor that gave no createTime
    ledger.redis.hset(ledger.keys.job(job), "sent_at", f"{time.time() - 50:.6f}")
    assert ledger.request_revokes([job], window_s=40, unsupported=[]).too_late == 1
    other = ledger.submit(account="a1", to="wxid_y", message=TextMessage(text="oops")).id
    send_all(ledger, "a1", create_time=0)
    assert ledger.request_revokes([other], window_s=40, unsupported=[]).pending == 1


def test_unsent_jobs_are_not_revoked(ledger: Ledger) -> None:
    job = ledger.submit(account="a1", to="wxid_x", message=TextMessage(text="oops")).id
    assert ledger.request_revokes([job, "jmissing"], window_s=110, unsupported=[]) == RecallAsked(0, 0, 0, 2)
    assert "recall" not in fields(ledger, job)


def test_a_revoke_whose_worker_died_is_failed_never_dead_lettered_and_a_late_success_corrects_it(
    ledger: Ledger,
) -> None:
    job = ledger.submit(account="a1", to="wxid_x", message=TextMessage(text="oops")).id
    send_all(ledger, "a1")
    ledger.request_revokes([job], window_s=110, unsupported=[])
    (claim,) = claim_ready(ledger, lease_ttl_s=0.2, batch_size=10)
    assert ledger.begin("a1", claim.token, f"r{job}", lease_ttl_s=0.2).job is not None
    time.sleep(0.3)
    assert ledger.recover() == (0, 1)
    error = fields(ledger, job)["recall_error"]
    assert fields(ledger, job)["recall"] == "failed" and "died" in error
    assert "may have been sent" not in error and "the revoke may have been done" in error  # about the revoke
    assert not ledger.redis.zscore(ledger.keys.dlq, f"r{job}")
    assert ledger.replay(f"r{job}", force=True) == "revoke"  # never repeated
    late = ledger.finish_recall(
        "a1", claim.token, f"r{job}", outcome=RecallOutcome.RECALLED, error="", history={"outcome": "recalled"}
    )
    assert late.status == "ok" and fields(ledger, job)["recall"] == "recalled"


def test_a_campaign_recall_cancels_counts_each_outcome_once_and_catches_a_send_in_flight(ledger: Ledger) -> None:
    accounts = AccountStore(ledger.redis, ledger.prefix)
    for name, vendor in (("gw", "gewe"), ("lg", "gewe-legacy")):
        accounts.put(
            name,
            AccountSpec.model_validate({"vendor": vendor, "base_url": "http://127.0.0.1:9", "instance": f"i-{name}"}),
        )
    campaigns = Campaigns(ledger, accounts, max_recipients=100)
    recipients = [{"to": f"wxid_{i}", "account": "gw" if i < 4 else "lg"} for i in range(6)]
    recipients += [{"to": f"wxid_q{i}", "account": "gw"} for i in range(3)]
    cid = campaigns.create(name="c", message={"kind": "text", "text": "hi"}, recipients=recipients).id
    claims = {c.account: c for c in claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=5)}
    gw, lg = claims["gw"], claims["lg"]
    done = []
    for claim, vendor in ((gw, "gewe"), (lg, "gewe-legacy")):
        for n, job_id in enumerate(claim.job_ids[:4] if claim is gw else claim.job_ids):
            begin = ledger.begin(claim.account, claim.token, job_id, lease_ttl_s=LEASE_S)
            assert begin.job is not None
            old = 300 if n == 0 else 0  # the first one went out long ago: too late
            result = SendResult(
                vendor=vendor,
                to=begin.job.to,
                endpoint="postText",
                msg_id=n + 1,
                new_msg_id=2**62 + n,
                create_time=int(time.time()) - old,
            )
            ledger.finish_sent(claim.account, claim.token, job_id, result, {"outcome": "sent"})
            done.append(job_id)
    in_flight = gw.job_ids[4]
    assert ledger.begin("gw", gw.token, in_flight, lease_ttl_s=LEASE_S).job is not None

    recalled = campaigns.recall(cid, window_s=110)
    assert recalled["status"] == "cancelled" and recalled["counts"]["cancelled"] == 2
    assert recalled["recall"] == {
        "requested": 6,
        "recalled": 0,
        "too_late": 1,
        "unsupported": 2,
        "failed": 0,
        "pending": 3,
        "window_s": 110.0,
        "requested_at": pytest.approx(time.time(), abs=5),
    }
    assert ledger.begin("gw", gw.token, gw.job_ids[0], lease_ttl_s=LEASE_S).status == "yield"  # the session stops
    # the send in flight finishes afterwards: its revoke is asked for then
    result = SendResult(
        vendor="gewe", to="wxid_q0", endpoint="postText", msg_id=9, new_msg_id=2**62 + 9, create_time=int(time.time())
    )
    ledger.finish_sent("gw", gw.token, in_flight, result, {"outcome": "sent"})
    assert fields(ledger, in_flight)["recall"] == "pending"
    again = campaigns.recall(cid, window_s=1)  # idempotent: nothing asked twice, the first window holds
    assert again["recall"]["requested"] == 7 and again["recall"]["pending"] == 4 and again["recall"]["window_s"] == 110
    assert len(high_queue(ledger, "gw")) == 4 and high_queue(ledger, "lg") == []


def test_recall_progress_is_none_until_a_recall_was_asked() -> None:
    assert recall_progress({"status": "active"}) is None
    progress = recall_progress(
        {"recall_requested_at": "5", "recall_window": "30", "rc:requested": "5", "rc:recalled": "2", "rc:failed": "1"}
    )
    assert progress == {
        "requested": 5,
        "recalled": 2,
        "too_late": 0,
        "unsupported": 0,
        "failed": 1,
        "pending": 2,
        "window_s": 30.0,
        "requested_at": 5.0,
    }
