"""Recipient hygiene in the store (issue 19), against a real Redis, no worker: begin.lua skips suppressed
recipients and holds the recipient cap atomically; the callback processor turns opt-outs into one
suppression and at most one reply however often a delivery repeats; the parser never raises."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib

from scheduler.intake.callbacks import CallbackProcessor, Kind, parse
from scheduler.intake.campaigns import Campaigns
from scheduler.intake.producer import Producer
from tests.conftest import claim_ready
from worker.settings import Settings
from worker.store.accounts import AccountSpec, AccountStore
from worker.store.ledger import BeginStatus, Ledger
from worker.store.suppressions import Suppressions
from worker.vendors.base import SendResult

LEASE_S = 30.0
CAP = (1, 24 * 3600.0)


@pytest.fixture
def ledger(redis_url: str) -> Iterator[Ledger]:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    ledger = Ledger(client, f"h{uuid.uuid4().hex[:8]}")
    spec = {"vendor": "gewe", "base_url": "http://127.0.0.1:9", "instance": "app1", "limits": {"per_minute": 0}}
    AccountStore(client, ledger.prefix).put("acct1", AccountSpec.model_validate(spec))
    yield ledger
    client.close()


def campaign(ledger: Ledger, recipients: list[str], **kw: Any) -> str:
    campaigns = Campaigns(ledger, AccountStore(ledger.redis, ledger.prefix), settings=Settings())
    message = {"kind": "text", "text": "hi"}
    return campaigns.create(
        name="c", account="acct1", message=message, recipients=[{"to": t} for t in recipients], **kw
    ).id


def run_all(ledger: Ledger, cap: tuple[int, float] | None = None, outcome: str = "sent") -> dict[str, str]:
    """Claim and begin every ready job; finish the ones that go as ``outcome``. Returns begin's answers."""
    answers: dict[str, str] = {}
    while claims := claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=100):
        for claim in claims:
            for job in claim.job_ids:
                begin = ledger.begin("acct1", claim.token, job, lease_ttl_s=LEASE_S, recipient_cap=cap)
                answers[job] = begin.why or begin.status.value
                if begin.status is BeginStatus.GO and outcome == "sent":
                    sent = SendResult(vendor="gewe", to="x", endpoint="postText", msg_id=1, new_msg_id=2, create_time=1)
                    ledger.finish_sent("acct1", claim.token, job, sent, {})
                elif begin.status is BeginStatus.GO:
                    ledger.finish_dead("acct1", claim.token, job, reason="permanent", error_class="permanent",
                                       error="对方不是你的好友", history={})  # fmt: skip
            ledger.release("acct1", claim.token)
    return answers


def test_a_suppressed_recipient_is_skipped_at_send_time_and_counts_add_up(ledger: Ledger) -> None:
    supp = Suppressions(ledger.redis, ledger.prefix)
    cid = campaign(ledger, ["wxid_a", "wxid_b", "wxid_c"])
    # added after the campaign was created: the check is at the moment of sending
    supp.add("acct1", "wxid_a", "opted_out", by="test")
    supp.add(None, "wxid_b", "manual", by="test")  # every account
    run_all(ledger)
    view = Campaigns(ledger, AccountStore(ledger.redis, ledger.prefix)).get(cid)
    assert view["counts"]["skipped"] == 2 and view["counts"]["sent"] == 1
    assert sum(view["counts"].values()) == view["total"] == 3 and view["status"] == "finished"
    jobs = {j.to: j for j in ledger.get_many(ledger.redis.lrange(ledger.keys.campaign_jobs(cid), 0, -1)) if j}
    assert jobs["wxid_a"].public()["status"] == "skipped" and jobs["wxid_a"].public()["skip_reason"] == "suppressed"
    assert jobs["wxid_c"].state == "sent"


def test_a_single_message_may_ignore_the_suppression_and_says_so(ledger: Ledger) -> None:
    Suppressions(ledger.redis, ledger.prefix).add("acct1", "wxid_a", "opted_out", by="test")
    producer = Producer(ledger, AccountStore(ledger.redis, ledger.prefix))
    plain = producer.submit_message(account="acct1", to="wxid_a", message={"kind": "text", "text": "x"})
    forced = producer.submit_message(
        account="acct1", to="wxid_a", message={"kind": "text", "text": "y"}, ignore_suppression="ops-alice"
    )
    answers = run_all(ledger)
    assert answers[plain.id] == "suppressed" and answers[forced.id] == "go"
    forced_job = ledger.get(forced.id)
    assert forced_job is not None and forced_job.public()["ignore_suppression"] is True
    assert forced_job.public()["ignore_suppression_by"] == "ops-alice"


def test_the_recipient_cap_lets_one_campaign_through_and_skips_the_other(ledger: Ledger) -> None:
    first, second = campaign(ledger, ["wxid_a", "wxid_b"]), campaign(ledger, ["wxid_a"])
    answers = run_all(ledger, cap=CAP)
    assert sorted(answers.values()) == ["frequency_cap", "go", "go"]
    store = Campaigns(ledger, AccountStore(ledger.redis, ledger.prefix))
    skipped = store.get(first)["counts"]["skipped"] + store.get(second)["counts"]["skipped"]
    assert skipped == 1
    # a test send or single message is not capped, whatever the campaigns did
    producer = Producer(ledger, AccountStore(ledger.redis, ledger.prefix))
    single = producer.submit_message(account="acct1", to="wxid_a", message={"kind": "text", "text": "x"})
    assert run_all(ledger, cap=CAP)[single.id] == "go"


def test_a_delivery_that_was_not_sent_gives_its_place_under_the_cap_back(ledger: Ledger) -> None:
    campaign(ledger, ["wxid_a"])
    assert list(run_all(ledger, cap=CAP, outcome="dead").values()) == ["go"]
    assert ledger.redis.zcard(ledger.keys.recipient_sends("acct1", "wxid_a")) == 0
    campaign(ledger, ["wxid_a"])
    assert list(run_all(ledger, cap=CAP).values()) == ["go"]


def test_on_cap_wait_reschedules_to_when_the_window_allows(ledger: Ledger) -> None:
    campaign(ledger, ["wxid_a"])
    run_all(ledger, cap=(1, 600.0))
    cid = campaign(ledger, ["wxid_a"], on_cap="wait")
    before = time.time()
    (answer,) = run_all(ledger, cap=(1, 600.0)).values()
    assert answer == "frequency_cap_wait"
    (job_id,) = ledger.redis.lrange(ledger.keys.campaign_jobs(cid), 0, -1)
    job = ledger.get(job_id)
    assert job is not None and job.state == "scheduled"
    due = ledger.redis.zscore(ledger.keys.due, job_id)
    assert due is not None and before + 590 < due <= time.time() + 600


def gewe_text(sender: str, text: str, msg_id: int = 77) -> bytes:
    data = {"MsgType": 1, "FromUserName": {"string": sender}, "ToUserName": {"string": "wxid_me"},
            "Content": {"string": text}, "NewMsgId": msg_id}  # fmt: skip
    return json.dumps({"TypeName": "AddMsg", "Appid": "app1", "Wxid": "wxid_me", "Data": data}).encode()


def test_the_same_opt_out_five_times_is_one_suppression_and_one_reply(ledger: Ledger) -> None:
    accounts = AccountStore(ledger.redis, ledger.prefix)
    settings = Settings(key_prefix=ledger.prefix, optout_reply="已退订 / unsubscribed")
    processor = CallbackProcessor(settings, ledger.redis, accounts, Producer(ledger, accounts))
    kinds = [processor.handle("acct1", gewe_text("wxid_fan", " 退订 ")) for _ in range(5)]
    assert kinds == [Kind.OPTED_OUT] + [Kind.DUPLICATE] * 4
    # a second opt-out with a new message id: suppressed already, so no second reply
    assert processor.handle("acct1", gewe_text("wxid_fan", "TD", msg_id=78)) is Kind.OPTED_OUT
    entry = Suppressions(ledger.redis, ledger.prefix).get("acct1", "wxid_fan")
    assert entry is not None and entry.reason == "opted_out" and entry.by == "callback"
    queued = [j for j in ledger.get_many(ledger.redis.lrange(ledger.keys.queue("acct1"), 0, -1)) if j]
    assert [(j.to, j.fields.get("nosupp")) for j in queued] == [("wxid_fan", "1")]
    assert (
        processor.handle("acct1", gewe_text("wxid_other", "退订一下吧", msg_id=79)) is Kind.TEXT
    )  # not the whole text


def test_an_ecloud_private_text_opts_out_and_its_own_messages_do_not(ledger: Ledger) -> None:
    accounts = AccountStore(ledger.redis, ledger.prefix)
    processor = CallbackProcessor(
        Settings(key_prefix=ledger.prefix), ledger.redis, accounts, Producer(ledger, accounts)
    )

    def ecloud(sender: str, text: str, *, own: bool = False, msg_id: int = 5) -> bytes:
        data = {"fromUser": sender, "toUser": "wxid_me", "content": text, "newMsgId": msg_id, "self": own}
        return json.dumps({"wcId": "wxid_me", "messageType": "60001", "data": data}).encode()

    assert processor.handle("acct1", ecloud("wxid_me", "退订", own=True)) is Kind.IGNORED  # our own message
    assert processor.handle("acct1", ecloud("wxid_e", "Unsubscribe")) is Kind.OPTED_OUT  # case does not matter
    assert processor.handle("acct1", ecloud("wxid_e", "Unsubscribe")) is Kind.DUPLICATE
    group = {"wcId": "wxid_me", "messageType": "80001", "data": {"fromUser": "wxid_g", "content": "退订"}}
    assert processor.handle("acct1", json.dumps(group).encode()) is Kind.IGNORED  # a group message
    supp = Suppressions(ledger.redis, ledger.prefix)
    assert supp.get("acct1", "wxid_e") is not None and supp.get("acct1", "wxid_me") is None
    assert ledger.redis.hget(ledger.keys.stat("callbacks"), "opted_out") == "1"


def test_removed_contacts_and_offline_notices(ledger: Ledger) -> None:
    accounts = AccountStore(ledger.redis, ledger.prefix)
    processor = CallbackProcessor(
        Settings(key_prefix=ledger.prefix), ledger.redis, accounts, Producer(ledger, accounts)
    )
    removed = {
        "TypeName": "DelContacts",
        "Appid": "app1",
        "Wxid": "wxid_me",
        "Data": {"UserName": {"string": "wxid_x"}},
    }
    assert processor.handle("acct1", json.dumps(removed).encode()) is Kind.CONTACT_REMOVED
    entry = Suppressions(ledger.redis, ledger.prefix).get("acct1", "wxid_x")
    assert entry is not None and entry.reason == "contact_removed"
    assert processor.handle("acct1", b'{"TypeName": "Offline", "Appid": "app1", "Wxid": "wxid_me"}') is Kind.OFFLINE
    account = accounts.get("acct1")
    assert account is not None and account.status == "down" and "Offline" in account.status_reason
    assert processor.handle("acct1", b"{not json") is Kind.MALFORMED
    assert processor.handle("acct1", b'{"hello": 1}') is Kind.UNKNOWN
    assert len(ledger.redis.lrange(ledger.keys.callback_odd, 0, -1)) == 2


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(8 if depth < 6 else 5)
    if pick == 0:
        return rng.randrange(-(2**70), 2**70)
    if pick == 1:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(12)))
    if pick == 2:
        return rng.choice([None, True, False, 1.5, "退订", "AddMsg", "60001"])
    if pick in (3, 4):
        return rng.choice(["TypeName", "Data", "MsgType", "FromUserName", "messageType", "data"])
    if pick == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["TypeName", "Appid", "Wxid", "Data", "MsgType", "FromUserName", "Content", "NewMsgId", "string",
            "messageType", "data", "fromUser", "content", "newMsgId", "self", "UserName"]  # fmt: skip
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def test_the_parser_never_raises_on_random_or_hostile_bodies() -> None:
    rng = random.Random(19)
    bodies = [json.dumps(_random_json(rng)).encode() for _ in range(3000)]
    bodies += [b"[" * 100_000, b'{"a":' * 5000, b"\xff\xfe", b"", b"null", b'"x"', b"1e999999"]
    bodies += [bytes(rng.randrange(256) for _ in range(rng.randrange(64))) for _ in range(300)]
    for body in bodies:
        assert isinstance(parse(body).kind, Kind)
    assert parse(b"[" * 100_000).kind is Kind.MALFORMED


def test_suppressions_page_through_every_scope(ledger: Ledger) -> None:
    supp = Suppressions(ledger.redis, ledger.prefix)
    supp.add_many([("acct1", f"wxid_{i:03d}", "manual", "") for i in range(25)], by="test")
    supp.add_many([(None, f"wxid_all{i}", "opted_out", "") for i in range(5)], by="test")
    seen: list[tuple[str | None, str]] = []
    cursor = ""
    while True:
        page, cursor = supp.page(cursor=cursor, limit=7)
        seen += [(e.account, e.to) for e in page]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 30
    assert {e.to for e in supp.all(reason="opted_out")} == {f"wxid_all{i}" for i in range(5)}
