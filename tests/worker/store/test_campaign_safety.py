"""Campaign safety in the store, against a real Redis, no worker: drafts stay staged until started, test
sends are ordinary messages outside the campaign's counts, and the auto-pause thresholds of finish_*.lua."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib

from scheduler.intake.campaigns import AutoPause, Campaigns, CampaignStateError, UntestedCampaignError
from tests.conftest import claim_ready
from worker.errors import MessageError
from worker.messages import TextMessage
from worker.settings import Settings
from worker.store.accounts import AccountSpec, AccountStore
from worker.store.audit import AuditLog
from worker.store.ledger import BeginStatus, Ledger, PaceRecord
from worker.vendors.base import SendResult

LEASE_S = 30.0
NOT_FRIEND = "发送消息失败：对方不是你的好友"


@pytest.fixture
def ledger(redis_url: str) -> Iterator[Ledger]:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    yield Ledger(client, f"s{uuid.uuid4().hex[:8]}")
    client.close()


def campaigns_for(ledger: Ledger, **settings: Any) -> Campaigns:
    store = AccountStore(ledger.redis, ledger.prefix)
    spec = {"vendor": "gewe", "base_url": "http://127.0.0.1:9", "instance": "i", "limits": {"per_minute": 0}}
    store.put("acct1", AccountSpec.model_validate(spec))
    return Campaigns(ledger, store, settings=Settings(**settings))


def create(campaigns: Campaigns, n: int, **kw: Any) -> str:
    return campaigns.create(
        name="c",
        account="acct1",
        message={"kind": "text", "text": "{name} 你好"},
        recipients=[{"to": f"wxid_{i:03d}", "vars": {"name": f"n{i}"}} for i in range(n)],
        **kw,
    ).id


def sent_result(to: str) -> SendResult:
    return SendResult(vendor="gewe", to=to, endpoint="postText", msg_id=1, new_msg_id=2, create_time=1700000000)


def step(ledger: Ledger, outcome: str, error: str = NOT_FRIEND) -> str:
    """One dispatcher round of one job: claim, begin, finish as ``outcome`` (sent | dead), release."""
    (claim,) = claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=1)
    (job,) = claim.job_ids
    assert ledger.begin("acct1", claim.token, job, lease_ttl_s=LEASE_S).status is BeginStatus.GO
    if outcome == "sent":
        ledger.finish_sent("acct1", claim.token, job, sent_result(job), {})
    else:
        ledger.finish_dead(
            "acct1", claim.token, job, reason="permanent", error_class="permanent", error=error, history={}
        )
    ledger.release("acct1", claim.token)
    return job


# --- drafts -----------------------------------------------------------------------------------------------


def test_a_draft_is_stored_whole_but_never_claimed_until_started(ledger: Ledger) -> None:
    campaigns = campaigns_for(ledger)
    cid = create(campaigns, 3, draft=True)
    view = campaigns.get(cid)
    assert view["status"] == "draft" and view["counts"]["scheduled"] == 3 and not view["finished"]
    assert campaigns.activate_due(now=time.time() + 86400) == 0  # not due, whatever the time
    assert claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=10) == []
    with pytest.raises(CampaignStateError):
        campaigns.set_status(cid, "pause")  # nothing to pause: it was never released
    started = campaigns.start(cid)
    assert started["status"] == "active" and started["counts"]["queued"] == 3
    (claim,) = claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=10)
    assert len(claim.job_ids) == 3
    with pytest.raises(CampaignStateError, match="only a draft"):
        campaigns.start(cid)


def test_a_draft_with_a_future_send_at_is_scheduled_when_started(ledger: Ledger) -> None:
    campaigns = campaigns_for(ledger)
    send_at = time.time() + 3600
    cid = create(campaigns, 2, draft=True, send_at=send_at)
    assert campaigns.get(cid)["status"] == "draft"
    assert ledger.redis.zscore(ledger.keys.due_campaigns, cid) is None
    assert campaigns.start(cid)["status"] == "scheduled"
    assert ledger.redis.zscore(ledger.keys.due_campaigns, cid) == pytest.approx(send_at, abs=0.01)
    assert claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=10) == []


def test_a_draft_can_be_cancelled(ledger: Ledger) -> None:
    campaigns = campaigns_for(ledger)
    cid = create(campaigns, 2, draft=True)
    view = campaigns.set_status(cid, "cancel")
    assert view["status"] == "cancelled" and view["counts"]["cancelled"] == 2
    with pytest.raises(CampaignStateError):
        campaigns.start(cid)


def test_a_test_send_is_a_marked_message_outside_the_campaign_counts(ledger: Ledger) -> None:
    campaigns = campaigns_for(ledger, require_test_above=1)
    cid = create(campaigns, 2, draft=True)
    with pytest.raises(UntestedCampaignError):
        campaigns.start(cid)
    answer = campaigns.send_test(cid, ["wxid_ops", "wxid_boss", "wxid_ops"])
    assert answer["vars"] == {"name": "n0"}  # the first recipient's
    assert [t["to"] for t in answer["tests"]] == ["wxid_ops", "wxid_boss"]
    jobs = [ledger.get(t["id"]) for t in answer["tests"]]
    assert all(j is not None and j.fields["test_of"] == cid and not j.campaign for j in jobs)
    with pytest.raises(UntestedCampaignError):  # asked, not yet out
        campaigns.start(cid)
    (claim,) = claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=10)
    assert sorted(claim.job_ids) == sorted(t["id"] for t in answer["tests"])  # only the tests: the draft waits
    first = claim.job_ids[0]
    begun = ledger.begin("acct1", claim.token, first, lease_ttl_s=LEASE_S)
    assert begun.job is not None and begun.job.message().render(begun.job.variables).text == "n0 你好"  # type: ignore[union-attr]
    ledger.finish_sent("acct1", claim.token, first, sent_result("wxid_ops"), {})
    ledger.release("acct1", claim.token)
    view = campaigns.get(cid)
    assert view["tests"]["count"] == 1 and view["tests"]["sent"] == 1 and view["tests"]["last_at"]
    assert {t["status"] for t in view["tests"]["jobs"]} == {"sent", "queued"}
    assert view["counts"]["scheduled"] == 2 and view["counts"]["sent"] == 0  # the tests are not the campaign's
    assert campaigns.start(cid)["status"] == "active"


def test_a_test_send_refuses_bad_input_naming_the_field(ledger: Ledger) -> None:
    campaigns = campaigns_for(ledger)
    cid = create(campaigns, 1, draft=True)
    for to, field in (([], "to"), ([f"wxid_{i}" for i in range(11)], "to"), (["ok_1", "bad id"], "to[1]")):
        with pytest.raises(MessageError) as caught:
            campaigns.send_test(cid, to)
        assert caught.value.field == field
    with pytest.raises(MessageError) as caught:
        campaigns.send_test(cid, ["wxid_ops"], variables={"other": "x"})
    assert caught.value.field == "vars"
    with pytest.raises(MessageError) as caught:
        campaigns.send_test(cid, ["wxid_ops"], account="nobody")
    assert caught.value.field == "account"
    assert campaigns.get(cid)["tests"]["count"] == 0


# --- auto-pause ---------------------------------------------------------------------------------------------


def test_a_share_of_failures_in_the_window_pauses_the_campaign_with_the_vendor_texts(ledger: Ledger) -> None:
    campaigns = campaigns_for(ledger)
    cid = create(campaigns, 30, auto_pause={"ratio": 0.5, "window": 8, "min_attempts": 6, "streak": 0})
    for outcome, error in [("sent", ""), ("dead", NOT_FRIEND), ("dead", "消息发送失败"), ("sent", ""), ("sent", "")]:
        step(ledger, outcome, error)
    assert campaigns.get(cid)["status"] == "active"  # 2 of 5: under half, and fewer than 6 outcomes anyway
    step(ledger, "dead", NOT_FRIEND)  # 3 of the last 6 failed
    view = campaigns.get(cid)
    assert view["status"] == "paused"
    assert (
        view["pause_reason"]
        == "error threshold — 3 of the last 6 failed: 发送消息失败：对方不是你的好友 ×2, 消息发送失败 ×1"
    )
    assert claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=10) == []  # nothing more goes out
    # on the record like an operator's pause, under the worker's name
    entries, _ = AuditLog(ledger.redis, ledger.prefix, 3600).page(limit=10)
    assert [(e["key"], e["role"], e["action"], e["target"]) for e in entries] == [
        ("worker", "worker", "campaign.auto_pause", f"campaign:{cid}")
    ]


def test_failures_below_the_minimum_attempts_do_not_pause(ledger: Ledger) -> None:
    campaigns = campaigns_for(ledger)
    cid = create(campaigns, 11, auto_pause={"ratio": 0.2, "window": 50, "min_attempts": 10, "streak": 0})
    for _ in range(9):
        step(ledger, "dead")
    assert campaigns.get(cid)["status"] == "active"
    step(ledger, "dead")
    assert campaigns.get(cid)["pause_reason"].startswith("error threshold — 10 of the last 10 failed")


def test_failures_in_a_row_pause_and_the_session_in_flight_is_told(ledger: Ledger) -> None:
    campaigns = campaigns_for(ledger)
    cid = create(campaigns, 10, auto_pause={"ratio": None, "streak": 3})
    step(ledger, "dead")
    step(ledger, "dead")
    step(ledger, "sent")  # the run starts over
    step(ledger, "dead")
    step(ledger, "dead")
    assert campaigns.get(cid)["status"] == "active"
    (claim,) = claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=2)
    first, second = claim.job_ids
    ledger.begin("acct1", claim.token, first, lease_ttl_s=LEASE_S)
    ledger.finish_dead("acct1", claim.token, first, reason="unknown_outcome", error_class="ambiguous",
                       error="请求超时", history={})  # fmt: skip
    view = campaigns.get(cid)
    assert view["status"] == "paused"
    assert view["pause_reason"] == f"error threshold — 3 in a row failed: {NOT_FRIEND} ×2, 请求超时 ×1"
    # the session holding the account ends at its next job, as after an operator's pause
    assert ledger.begin("acct1", claim.token, second, lease_ttl_s=LEASE_S).status is BeginStatus.YIELD


def test_the_last_delivery_does_not_pause_a_finished_campaign(ledger: Ledger) -> None:
    campaigns = campaigns_for(ledger)
    cid = create(campaigns, 3, auto_pause={"streak": 3})
    for _ in range(3):
        step(ledger, "dead")
    assert ledger.redis.hget(ledger.keys.campaign(cid), "status") == "active"  # a replay of its dead letters goes out
    assert campaigns.get(cid)["pause_reason"] is None


def test_resume_clears_the_window_and_the_reason(ledger: Ledger) -> None:
    campaigns = campaigns_for(ledger)
    cid = create(campaigns, 10, auto_pause={"streak": 2, "ratio": 0})
    step(ledger, "dead")
    step(ledger, "dead")
    assert campaigns.get(cid)["status"] == "paused"
    view = campaigns.set_status(cid, "resume")
    assert view["status"] == "active" and view["pause_reason"] is None
    assert ledger.redis.exists(ledger.keys.campaign_outcomes(cid)) == 0
    step(ledger, "dead")  # one failure after the resume: the run counts from zero
    assert campaigns.get(cid)["status"] == "active"
    step(ledger, "dead")
    assert campaigns.get(cid)["status"] == "paused"


def test_auto_pause_switched_off_never_pauses(ledger: Ledger) -> None:
    campaigns = campaigns_for(ledger, auto_pause_streak=2, auto_pause_ratio=0.1, auto_pause_min_attempts=1)
    off = create(campaigns, 4, auto_pause={"ratio": None, "streak": 0})
    for _ in range(4):
        step(ledger, "dead")
    assert campaigns.get(off)["status"] == "finished"
    assert campaigns.get(off)["auto_pause"] == {"ratio": 0, "window": 50, "min_attempts": 1, "streak": 0}


def test_the_settings_are_the_default_thresholds(ledger: Ledger) -> None:
    campaigns = campaigns_for(ledger, auto_pause_streak=2, auto_pause_ratio=0)
    cid = create(campaigns, 4)
    assert campaigns.get(cid)["auto_pause"] == {"ratio": 0, "window": 50, "min_attempts": 10, "streak": 2}
    step(ledger, "dead")
    step(ledger, "dead")
    assert campaigns.get(cid)["status"] == "paused"


def test_a_long_vendor_text_is_cut_on_a_character_boundary(ledger: Ledger) -> None:
    campaigns = campaigns_for(ledger)
    cid = create(campaigns, 2, auto_pause={"streak": 1})
    step(ledger, "dead", "x" + "好" * 100)  # 301 bytes: the cut falls inside a character
    reason = campaigns.get(cid)["pause_reason"]
    assert reason.endswith(" ×1") and "好" * 39 in reason and "\ufffd" not in reason


def test_auto_pause_fields_are_checked() -> None:
    defaults = AutoPause(0.2, 50, 10, 10)
    assert defaults.override({"ratio": 0.5, "streak": None}) == AutoPause(0.5, 50, 10, 0)
    for bad, field in (({"ratio": 2}, "auto_pause.ratio"), ({"window": 1.5}, "auto_pause.window"),
                       ({"streak": True}, "auto_pause.streak"), ({"typo": 1}, "auto_pause.typo")):  # fmt: skip
        with pytest.raises(MessageError) as caught:
            defaults.override(bad)
        assert caught.value.field == field


# --- account auto-pause ------------------------------------------------------------------------------------


def test_finish_counts_throttling_answers_in_a_row(ledger: Ledger) -> None:
    campaigns = campaigns_for(ledger)
    create(campaigns, 6)

    def call(throttled: bool) -> int:
        (claim,) = claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=1)
        (job,) = claim.job_ids
        ledger.begin("acct1", claim.token, job, lease_ttl_s=LEASE_S)
        pace = PaceRecord(time.time(), 0.5, 2.0 if throttled else None, "20260101", 1, not throttled, 0)
        finished = ledger.finish_retry("acct1", claim.token, job, due_at=time.time() + 3600,
                                       error_class="throttled" if throttled else "transient", error="发送频率过快",
                                       history={}, pace=pace)  # fmt: skip
        ledger.release("acct1", claim.token)
        return finished.throttles

    assert [call(True), call(True), call(False), call(True)] == [1, 2, 0, 1]
    AccountStore(ledger.redis, ledger.prefix).set_status("acct1", "active")  # a resume starts a new run
    assert call(True) == 1


# --- a key revoked while what it submitted was being written (attack rounds 5 and 6) ------------------------


def test_a_campaign_committed_after_its_key_was_revoked_is_paused_and_flagged(ledger: Ledger) -> None:
    """The revocation scans the campaigns stored so far; one still being written commits after it. Its
    commit checks the key is still the one that asked (opkey:{name} holds its digest), so it is paused and
    flagged like the others, also when a new key was given the same name meanwhile; the live key, and the
    bootstrap token (no stored key), commit as asked."""
    campaigns = campaigns_for(ledger)

    def create(by: str, key: str, **kw: Any) -> Any:
        return campaigns.create(
            name="c", account="acct1", message={"kind": "text", "text": "x"}, recipients=[{"to": f"wxid_{by}{key}"}],
            created_by=by, creator_key=key, **kw,
        )  # fmt: skip

    gone = create("leaked", "d-old")
    assert gone.status == "paused"
    view = campaigns.get(gone.id)
    assert (view["status"], view["owner_revoked"], view["created_by"]) == ("paused", True, "leaked")
    assert claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=10) == []  # nothing of it goes out
    draft = create("leaked", "d-old", draft=True)
    assert (campaigns.get(draft.id)["status"], campaigns.get(draft.id)["owner_revoked"]) == ("draft", True)
    ledger.redis.hset(ledger.keys.operator_key("leaked"), mapping={"role": "operator", "digest": "d-new"})
    renamed = create("leaked", "d-old")  # revoked, and a new key named alike since: not adopted
    assert (renamed.status, campaigns.get(renamed.id)["owner_revoked"]) == ("paused", True)
    for by, key in (("leaked", "d-new"), ("bootstrap", "")):
        kept = create(by, key)
        assert (kept.status, campaigns.get(kept.id)["owner_revoked"]) == ("active", False)


def test_a_message_submitted_after_its_key_was_revoked_is_stored_cancelled(ledger: Ledger) -> None:
    job_id, created, state = ledger.submit(
        account="acct1", to="wxid_1", message=TextMessage(text="x"), created_by="leaked", creator_key="d-old"
    )
    assert (created, state) == (True, "cancelled")
    stored = ledger.get(job_id)
    assert stored is not None and (stored.state, stored.fields["created_by"]) == ("cancelled", "leaked")
    assert claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=10) == []
    ledger.redis.hset(ledger.keys.operator_key("alive"), mapping={"role": "operator", "digest": "d-alive"})
    alive, _, state = ledger.submit(
        account="acct1", to="wxid_2", message=TextMessage(text="x"), created_by="alive", creator_key="d-alive"
    )
    later, _, later_state = ledger.submit(
        account="acct1", to="wxid_3", message=TextMessage(text="x"), created_by="alive", creator_key="d-alive",
        send_at=time.time() + 90 * 86400,
    )  # fmt: skip
    assert (state, later_state) == ("queued", "scheduled")
    # listed by when they are due: a send_at past the retention stays listed (attack round 6)
    ledger.redis.hset(ledger.keys.config, "retention_s", "1")
    time.sleep(1.1)
    ledger.submit(
        account="acct1", to="wxid_4", message=TextMessage(text="x"), created_by="alive", creator_key="d-alive"
    )
    # its revocation later cancels every one not sent yet: queued, or waiting for a send_at months ahead
    cancelled = ledger.cancel_unsent_by("alive")
    assert {alive, later} <= set(cancelled) and len(cancelled) == 3
    for job in (alive, later):
        found = ledger.get(job)
        assert found is not None and found.state == "cancelled"


def test_a_message_in_flight_when_its_key_was_revoked_is_cancelled_at_its_next_attempt_not_sent(
    ledger: Ledger,
) -> None:
    """The revocation cancels what waits; a message being sent at that moment cannot be cancelled, and when
    that attempt fails it is due again. Its next BEGIN sees its key is gone (or is another key of the same
    name) and cancels it: nothing the revoked key submitted goes out after the revocation. A live key's
    message, and one of the bootstrap token (no stored key), are retried and sent as before."""
    operators = ledger.keys.operator_key
    ledger.redis.hset(operators("ops"), mapping={"role": "operator", "digest": "d-ops"})
    ledger.redis.hset(operators("kept"), mapping={"role": "operator", "digest": "d-kept"})
    ledger.redis.hset(operators("renamed"), mapping={"role": "operator", "digest": "d-old"})
    submitted = {
        by: ledger.submit(account="acct1", to=f"wxid_{by}", message=TextMessage(text="x"), created_by=by, creator_key=key)[0]
        for by, key in (("ops", "d-ops"), ("kept", "d-kept"), ("renamed", "d-old"), ("bootstrap", ""))
    }  # fmt: skip
    # every one is being sent; each attempt fails and is due again at once
    (claim,) = claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=10)
    assert sorted(claim.job_ids) == sorted(submitted.values())
    for job in claim.job_ids:
        assert ledger.begin("acct1", claim.token, job, lease_ttl_s=LEASE_S).status is BeginStatus.GO
    # meanwhile: "ops" is revoked (nothing of it was waiting), "renamed" revoked and a new key given its name
    assert ledger.cancel_unsent_by("ops") == [] and ledger.cancel_unsent_by("renamed") == []
    ledger.redis.delete(operators("ops"))
    ledger.redis.hset(operators("renamed"), mapping={"role": "operator", "digest": "d-new"})
    for job in claim.job_ids:
        ledger.finish_retry("acct1", claim.token, job, due_at=time.time() - 1, error_class="transient",
                            error="服务繁忙", history={})  # fmt: skip
    ledger.release("acct1", claim.token)
    ledger.tick()  # the due jobs go back to the account's queue
    (again,) = claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=10)
    answers = {by: ledger.begin("acct1", again.token, submitted[by], lease_ttl_s=LEASE_S) for by in submitted}
    assert {by: (a.status.value, a.why or None) for by, a in answers.items()} == {
        "ops": ("skip", "owner_revoked"),
        "renamed": ("skip", "owner_revoked"),
        "kept": ("go", None),
        "bootstrap": ("go", None),
    }
    for by in ("ops", "renamed"):
        job = ledger.get(submitted[by])
        assert job is not None
        assert (job.public()["status"], job.public()["reason"], job.attempts) == ("cancelled", "owner_revoked", 1)


def test_a_dead_message_of_a_revoked_key_is_an_admins_to_replay_and_then_the_admins(ledger: Ledger) -> None:
    """As a revoked key's campaign is an admin's to resume: an operator's replay of its dead message answers
    owner_revoked and changes nothing; an admin's replay makes it the admin's, so it is sent, not cancelled
    when it begins."""
    ledger.redis.hset(ledger.keys.operator_key("gone"), mapping={"role": "operator", "digest": "d-gone"})
    job_id = ledger.submit(
        account="acct1", to="wxid_x", message=TextMessage(text="x"), created_by="gone", creator_key="d-gone"
    )[0]
    (claim,) = claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=10)
    assert ledger.begin("acct1", claim.token, job_id, lease_ttl_s=LEASE_S).status is BeginStatus.GO
    ledger.finish_dead("acct1", claim.token, job_id, reason="permanent", error_class="permanent",
                       error="对方不是你的好友", history={})  # fmt: skip
    ledger.release("acct1", claim.token)
    ledger.redis.delete(ledger.keys.operator_key("gone"))
    assert ledger.replay(job_id, by="ops", by_key="d-ops", admin=False) == "owner_revoked"
    job = ledger.get(job_id)
    assert job is not None and (job.state, job.fields["created_by"]) == ("dead", "gone")
    ledger.redis.hset(ledger.keys.operator_key("ada"), mapping={"role": "admin", "digest": "d-ada"})
    assert ledger.replay(job_id, by="ada", by_key="d-ada", admin=True) == "ok"
    (again,) = claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=10)
    assert ledger.begin("acct1", again.token, job_id, lease_ttl_s=LEASE_S).status is BeginStatus.GO
    job = ledger.get(job_id)
    assert job is not None and (job.state, job.fields["created_by"]) == ("sending", "ada")
