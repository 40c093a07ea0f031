"""A sequence's fences (``part.lua``) against a real Redis, driven directly: no worker, no vendor."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis as redis_lib

from tests.conftest import claim_ready
from worker.messages import parse_message
from worker.store.ledger import Claim, Ledger, PaceRecord, sent_parts

LEASE_S = 30.0
SEQUENCE = parse_message(
    {"kind": "sequence", "parts": [{"kind": "text", "text": "a"}, {"kind": "image", "url": "https://c/p.jpg"}]}
)


@pytest.fixture
def ledger(redis_url: str) -> Iterator[Ledger]:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    yield Ledger(client, f"q{uuid.uuid4().hex[:8]}")
    client.close()


def started(ledger: Ledger, account: str, to: str = "wxid_same") -> tuple[Claim, str]:
    """A sequence job of ``account`` claimed and begun (``sending``)."""
    job_id, _, _ = ledger.submit(account=account, to=to, message=SEQUENCE)
    (claim,) = [c for c in claim_ready(ledger, lease_ttl_s=LEASE_S) if c.account == account]
    assert ledger.begin(account, claim.token, job_id, lease_ttl_s=LEASE_S).status.value == "go"
    return claim, job_id


def pace(ended: float) -> PaceRecord:
    return PaceRecord(ended=ended, fraction=0.5, slowdown=None, day="20261204", day_sends=1, sent=True, keep=0)


def test_parts_are_fenced_recorded_and_never_interleaved(ledger: Ledger) -> None:
    a, job_a = started(ledger, "acct_a")
    b, job_b = started(ledger, "acct_b")  # another account, the same group chat
    assert ledger.part_begin("acct_a", a.token, job_a, 0, of=2, not_before=0, lease_ttl_s=LEASE_S).status == "go"
    # the recipient is held by the first sequence: the second waits its turn (no vendor call)
    busy = ledger.part_begin("acct_b", b.token, job_b, 0, of=2, not_before=0, lease_ttl_s=LEASE_S)
    assert busy == ("busy", job_a)
    # a part may not start before its pacing moment (Redis TIME)
    early = ledger.part_begin("acct_a", a.token, job_a, 1, of=2, not_before=time.time() + 5, lease_ttl_s=LEASE_S)
    assert early.status == "early" and 4 < float(early.detail) <= 5
    record = {"status": "sent", "kind": "text", "endpoint": "postText", "new_msg_id": "7645748705605226305"}
    ids = {"vendor": "gewe", "new_msg_id": "7645748705605226305", "create_time": "1764800000"}
    end = ledger.part_end("acct_a", a.token, job_a, 0, record, advance=True, pace=pace(time.time()), ids=ids,
                          lease_ttl_s=LEASE_S)  # fmt: skip
    assert end.status == "ok"
    job = ledger.get(job_a)
    assert job is not None and job.fields["part"] == "1" and job.fields["new_msg_id"] == "7645748705605226305"
    assert [(i, r.new_msg_id) for i, r in sent_parts(job)] == [(0, 7645748705605226305)]  # exact 64-bit id
    assert json.loads(job.fields["parts"])[0]["endpoint"] == "postText"
    assert ledger.redis.hget(ledger.keys.pace("acct_a"), "last_end")  # the part's call counts for pacing
    # the first sequence ends: the recipient is free for the second
    ledger.part_unlock("acct_a", a.token, job_a)
    assert ledger.part_begin("acct_b", b.token, job_b, 0, of=2, not_before=0, lease_ttl_s=LEASE_S).status == "go"


def test_a_lost_lease_stops_the_next_part_and_a_crashed_holder_holds_nothing(ledger: Ledger) -> None:
    a, job_a = started(ledger, "acct_a")
    assert ledger.part_begin("acct_a", a.token, job_a, 0, of=2, not_before=0, lease_ttl_s=LEASE_S).status == "go"
    ledger.redis.delete(ledger.keys.lease("acct_a"))  # the lease expired: recovery takes the job
    assert ledger.part_begin("acct_a", a.token, job_a, 1, of=2, not_before=0, lease_ttl_s=LEASE_S).status == "lost"
    ledger.redis.hset(ledger.keys.job(job_a), "state", "dead")  # what RECOVER makes of it
    b, job_b = started(ledger, "acct_b")
    # the crashed sequence's lock is still there, but its job is no longer sending: it holds nothing
    assert ledger.redis.get(ledger.keys.seq_lock("wxid_same")) == job_a
    assert ledger.part_begin("acct_b", b.token, job_b, 0, of=2, not_before=0, lease_ttl_s=LEASE_S).status == "go"
    view = ledger.get(job_a)
    assert view is not None and [p["status"] for p in view.public()["parts"]] == ["dead", "skipped"]
