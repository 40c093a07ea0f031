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

from scheduler.intake import callbacks
from scheduler.intake.callbacks import OFFLINE_CHECKS_PER_H, CallbackInbox, CallbackProcessor, Kind, parse
from scheduler.intake.campaigns import Campaigns
from scheduler.intake.producer import Producer
from tests.conftest import claim_ready
from worker.settings import Settings
from worker.store.accounts import AccountSpec, AccountStore, Limits
from worker.store.audit import AuditLog
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
    spec = {**spec, "vendor": "ecloud", "instance": "wid1"}
    AccountStore(client, ledger.prefix).put("ec1", AccountSpec.model_validate(spec))
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


@pytest.mark.parametrize("cap", [{"max": 1, "window_h": 24}, None])
def test_a_sessions_first_begin_applies_the_accounts_own_recipient_cap(ledger: Ledger, cap: Any) -> None:
    # the first BEGIN rides on the session's first read, before the worker knows the account's limits: the
    # script reads the cap from the stored account, as the worker passes it to every later BEGIN
    accounts = AccountStore(ledger.redis, ledger.prefix)
    stored = accounts.get("acct1")
    assert stored is not None
    limits = Limits.model_validate({**stored.spec.limits.model_dump(), "recipient_cap": cap})
    accounts.put("acct1", stored.spec.model_copy(update={"limits": limits}))
    campaign(ledger, ["wxid_a"]), campaign(ledger, ["wxid_a"])
    answers = []
    while claims := claim_ready(ledger, lease_ttl_s=LEASE_S):
        for claim in claims:
            opened = ledger.open_session(
                "acct1", claim.token, claim.job_ids[0], lease_ttl_s=LEASE_S, call="c", templates={}
            )
            assert opened.first is not None and opened.account["instance"] == "app1"
            answers.append(opened.first.why or opened.first.status.value)
            if opened.first.status is BeginStatus.GO:
                sent = SendResult(vendor="gewe", to="x", endpoint="postText", msg_id=1, new_msg_id=2, create_time=1)
                ledger.finish_sent("acct1", claim.token, claim.job_ids[0], sent, {})
            ledger.release("acct1", claim.token)
    assert answers == (["go", "frequency_cap"] if cap else ["go", "go"])


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
    processor = CallbackProcessor(settings, ledger.redis, accounts, Producer(ledger, accounts), check_offline=None)
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


def ecloud(sender: str, text: str, *, own: Any = False, msg_id: int = 5, w_id: str = "wid1") -> bytes:
    data = {"wId": w_id, "fromUser": sender, "toUser": "wxid_me", "content": text, "newMsgId": msg_id, "self": own}
    return json.dumps({"wcId": "wxid_me", "messageType": "60001", "data": data}).encode()


def test_an_ecloud_private_text_opts_out_and_its_own_messages_do_not(ledger: Ledger) -> None:
    accounts = AccountStore(ledger.redis, ledger.prefix)
    processor = CallbackProcessor(
        Settings(key_prefix=ledger.prefix), ledger.redis, accounts, Producer(ledger, accounts), check_offline=None
    )

    assert processor.handle("ec1", ecloud("wxid_me", "退订", own=True)) is Kind.IGNORED  # our own message
    assert processor.handle("ec1", ecloud("wxid_e", "Unsubscribe")) is Kind.OPTED_OUT  # case does not matter
    assert processor.handle("ec1", ecloud("wxid_e", "Unsubscribe")) is Kind.DUPLICATE
    group = {
        "wcId": "wxid_me",
        "messageType": "80001",
        "data": {"wId": "wid1", "fromUser": "wxid_g", "content": "退订"},
    }
    assert processor.handle("ec1", json.dumps(group).encode()) is Kind.IGNORED  # a group message
    supp = Suppressions(ledger.redis, ledger.prefix)
    assert supp.get("ec1", "wxid_e") is not None and supp.get("ec1", "wxid_me") is None
    assert ledger.redis.hget(ledger.keys.stat("callbacks"), "opted_out") == "1"


def test_removed_contacts_and_offline_notices(ledger: Ledger) -> None:
    accounts = AccountStore(ledger.redis, ledger.prefix)
    processor = CallbackProcessor(
        Settings(key_prefix=ledger.prefix), ledger.redis, accounts, Producer(ledger, accounts), check_offline=None
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
    # what the callbacks changed is in the audit trail, under the key "callback"; a repeat changes nothing
    # a later removal (it says when: not a duplicate) of a contact already suppressed: nothing new to do
    again = json.dumps({**removed, "Data": {**removed["Data"], "CreateTime": int(time.time())}}).encode()
    assert processor.handle("acct1", again) is Kind.CONTACT_REMOVED
    trail, _ = AuditLog(ledger.redis, ledger.prefix, 86400).page(limit=10)
    assert [(e["key"], e["action"], e["target"]) for e in reversed(trail)] == [
        ("callback", "suppression.add_contact_removed", "suppression:acct1/wxid_x"),
        ("callback", "account.down", "account:acct1"),
    ]


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


# --- from the attack on issue 19 (findings F2-F8, F3's inbox bound) -----------------------------------------


def processor_for(ledger: Ledger, **settings: Any) -> CallbackProcessor:
    accounts = AccountStore(ledger.redis, ledger.prefix)
    return CallbackProcessor(
        Settings(key_prefix=ledger.prefix, **settings),
        ledger.redis,
        accounts,
        Producer(ledger, accounts),
        check_offline=None,
    )


def gewe(kind: str, appid: str = "app1", **rest: Any) -> bytes:
    return json.dumps({"TypeName": kind, "Appid": appid, "Wxid": "wxid_me", **rest}).encode()


def test_a_callback_acts_only_on_the_instance_and_vendor_of_its_account(ledger: Ledger) -> None:
    processor = processor_for(ledger)
    accounts, supp = processor.accounts, Suppressions(ledger.redis, ledger.prefix)
    assert processor.handle("acct1", gewe("Offline", appid="whatever")) is Kind.MISMATCH
    assert processor.handle("acct1", gewe_text("wxid_f", "退订").replace(b'"app1"', b'"other"')) is Kind.MISMATCH
    assert processor.handle("acct1", gewe("Offline", appid="\ud800")) is Kind.MISMATCH  # F8: no crash
    assert processor.handle("acct1", ecloud("wxid_f", "退订", w_id="app1")) is Kind.MISMATCH  # E云 shape, GeWe account
    assert processor.handle("ec1", gewe_text("wxid_f", "退订").replace(b'"app1"', b'"wid1"')) is Kind.MISMATCH
    assert processor.handle("ec1", ecloud("wxid_f", "退订", w_id="wid2")) is Kind.MISMATCH
    account = accounts.get("acct1")
    assert account is not None and account.status == "active"
    assert supp.get("acct1", "wxid_f") is None and supp.get("ec1", "wxid_f") is None
    odd = [json.loads(e) for e in ledger.redis.lrange(ledger.keys.callback_odd, 0, -1)]
    assert [e["kind"] for e in odd] == ["mismatch"] * 6
    assert ledger.redis.hget(ledger.keys.stat("callbacks"), "mismatch") == "6"


def test_an_ecloud_body_without_a_wid_is_taken_on_the_urls_key_and_a_gewe_body_never_is(ledger: Ledger) -> None:
    """vendors.md documents E云 callbacks as ``{wcId, account, messageType, data}`` only: a body without
    ``data.wId`` acts on the account whose key it came with; a GeWe body must always name its Appid."""
    processor = processor_for(ledger)
    no_wid = json.loads(ecloud("wxid_nw", "退订", msg_id=91))
    del no_wid["data"]["wId"]
    assert processor.handle("ec1", json.dumps(no_wid).encode()) is Kind.OPTED_OUT
    assert Suppressions(ledger.redis, ledger.prefix).get("ec1", "wxid_nw") is not None
    no_appid = json.loads(gewe_text("wxid_na", "退订", msg_id=92))
    del no_appid["Appid"]
    assert processor.handle("acct1", json.dumps(no_appid).encode()) in (Kind.MISMATCH, Kind.UNKNOWN)


@pytest.mark.parametrize(
    "text",
    [
        "ＴＤ",
        "ｕｎｓｕｂｓｃｒｉｂｅ",
        "退订。",
        "退订!",
        "“退订”",
        "退\u200b订",
        "退订\u200b",
        "\ufeff退订",
        " td \n",
        "\ud800退订",
        "退订～",
        "退订~",
        "退订🙏",
        "退订\u034f",
        "退订\ufe0f",
        "\u3164退订",
        "\uffa0退订",
        "\u2800退订",
        "退訂",
        "取消訂閱",
    ],
)
def test_opt_out_keywords_match_their_unicode_variants(ledger: Ledger, text: str) -> None:
    assert processor_for(ledger).handle("acct1", gewe_text("wxid_v", text)) is Kind.OPTED_OUT


def test_only_what_changed_something_is_remembered_and_a_long_id_by_its_digest(ledger: Ledger) -> None:
    """A callback flood must not fill Redis with dedupe keys: plain texts and no-op opt-outs leave none, and a
    vendor id as long as the body is kept as a digest."""
    processor = processor_for(ledger)

    def seen_keys() -> list[str]:
        return list(ledger.redis.scan_iter(match=f"{ledger.prefix}:*seen*", count=1000))

    for n in range(50):
        assert processor.handle("acct1", gewe_text("wxid_chatty", f"hello {n}", msg_id=1000 + n)) is Kind.TEXT
    assert seen_keys() == []
    long_id = "9" * 60_000
    data = {"MsgType": 1, "FromUserName": {"string": "wxid_long"}, "ToUserName": {"string": "wxid_me"},
            "Content": {"string": "退订"}, "NewMsgId": long_id}  # fmt: skip
    body = json.dumps({"TypeName": "AddMsg", "Appid": "app1", "Wxid": "wxid_me", "Data": data}).encode()
    assert processor.handle("acct1", body) is Kind.OPTED_OUT
    assert processor.handle("acct1", body) is Kind.DUPLICATE  # still known again
    (key,) = seen_keys()
    assert len(key) < 200 and long_id not in key
    # an opt-out from someone suppressed already changes nothing: counted, not remembered
    assert processor.handle("acct1", gewe_text("wxid_long", "TD", msg_id=5)) is Kind.OPTED_OUT
    assert len(seen_keys()) == 1


def test_a_sentence_that_contains_a_keyword_is_not_an_opt_out(ledger: Ledger) -> None:
    processor = processor_for(ledger)
    assert processor.handle("acct1", gewe_text("wxid_v", "我不想退订。", msg_id=1)) is Kind.TEXT
    assert processor.handle("acct1", gewe_text("wxid_v", "TD-1", msg_id=2)) is Kind.TEXT


def test_offline_and_removed_contacts_are_deduplicated_and_an_offline_older_than_a_resume_is_ignored(
    ledger: Ledger,
) -> None:
    processor = processor_for(ledger)
    accounts = processor.accounts

    def status() -> str:
        account = accounts.get("acct1")
        assert account is not None
        return account.status

    offline = gewe("Offline")
    assert processor.handle("acct1", offline) is Kind.OFFLINE and status() == "down"
    accounts.set_status("acct1", "active")  # an admin resumes it
    assert processor.handle("acct1", offline) is Kind.DUPLICATE and status() == "active"  # a replay
    removed = gewe("DelContacts", Data={"UserName": {"string": "wxid_x"}})
    assert processor.handle("acct1", removed) is Kind.CONTACT_REMOVED
    assert processor.handle("acct1", removed) is Kind.DUPLICATE
    before = time.time() - 3600
    old = gewe("Offline", Data={"CreateTime": int(before)})  # said an hour before the resume
    assert processor.handle("acct1", old) is Kind.STALE and status() == "active"
    late = gewe("Offline", Data={"CreateTime": int(time.time()) + 5})
    assert processor.handle("acct1", late, received=before) is Kind.STALE  # stored before the resume
    assert status() == "active"
    later = gewe("Offline", Data={"CreateTime": int(time.time()) + 6})
    assert processor.handle("acct1", later, received=time.time() + 1) is Kind.OFFLINE and status() == "down"


def written_otherwise(doc: dict[str, Any]) -> list[bytes]:
    """The same event as other bytes: other spacing, keys in another order (nested too), fields added at
    the top and in ``Data``, and the fields nothing acts on (``Wxid``, ``DeleteContactScen``) changed."""

    def reordered(value: Any) -> Any:
        return {k: reordered(v) for k, v in reversed(value.items())} if isinstance(value, dict) else value

    data = doc.get("Data", {})
    variants = [
        {**doc, "Replay": True},
        {**doc, "Data": {**data, "Seq": 2}},
        {**doc, "Wxid": "wxid_someone_else"},
        {**doc, "Data": {**data, "DeleteContactScen": 7}},
    ]
    return [
        json.dumps(doc, indent=4).encode(),
        b" \n\t" + json.dumps(doc, separators=(",", ":")).encode() + b"\n",
        json.dumps(reordered(doc)).encode(),
        *(json.dumps(v).encode() for v in variants),
    ]


def callback_audit(ledger: Ledger) -> list[str]:
    trail, _ = AuditLog(ledger.redis, ledger.prefix, 86400).page(limit=100, key="callback")
    return [e["action"] for e in reversed(trail)]


def said_at(where: str, at: int) -> dict[str, Any]:
    """``CreateTime`` where GeWe may put it ("Data" or the top, in ms), none for ""."""
    return {"Data": {"CreateTime": at}} if where == "Data" else {"CreateTime": at * 1000} if where else {}


@pytest.mark.parametrize("where", ["", "Data", "top"], ids=["no CreateTime (as GeWe shows it)", "Data", "top ms"])
def test_an_offline_sent_again_as_other_bytes_acts_once(ledger: Ledger, where: str) -> None:
    """A replay must not mark down again an account an operator resumed, however it is written."""
    processor = processor_for(ledger)
    accounts = processor.accounts
    at = int(time.time()) + 5  # after the account was created (older would be stale)
    doc = {"TypeName": "Offline", "Appid": "app1", "Wxid": "wxid_me", **said_at(where, at)}
    assert processor.handle("acct1", json.dumps(doc).encode()) is Kind.OFFLINE
    bodies = written_otherwise(doc)
    if where:  # the same moment in the other unit
        bodies.append(json.dumps({**doc, **said_at("top" if where == "Data" else "Data", at)}).encode())
    for body in bodies:
        accounts.set_status("acct1", "active")  # an operator resumes it
        assert processor.handle("acct1", body, received=time.time() + 1) is Kind.DUPLICATE, body
        account = accounts.get("acct1")
        assert account is not None and account.status == "active", body
    assert callback_audit(ledger) == ["account.down"]
    stats = ledger.redis.hgetall(ledger.keys.stat("callbacks"))
    assert stats.get("offline") == "1" and stats.get("duplicate") == str(len(bodies))


def test_offline_events_that_say_different_times_each_act(ledger: Ledger) -> None:
    """A real later logout says a later CreateTime: it acts although the account was down before."""
    processor = processor_for(ledger)
    accounts = processor.accounts
    first = gewe("Offline", **said_at("Data", int(time.time()) + 1))  # after the account was created
    assert processor.handle("acct1", first) is Kind.OFFLINE
    accounts.set_status("acct1", "active")  # an operator resumes it; it is logged out again, later
    second = gewe("Offline", **said_at("top", int(time.time()) + 5))
    assert processor.handle("acct1", second, received=time.time() + 1) is Kind.OFFLINE
    account = accounts.get("acct1")
    assert account is not None and account.status == "down"
    assert callback_audit(ledger) == ["account.down", "account.down"]


@pytest.mark.parametrize(
    "when", [{}, {"Data": {"CreateTime": 1_705_043_418}}], ids=["no CreateTime (as GeWe shows it)", "CreateTime"]
)
def test_a_removed_contact_sent_again_as_other_bytes_acts_once(ledger: Ledger, when: dict[str, Any]) -> None:
    """A replay must not suppress again a contact an operator let back in, however it is written."""
    processor = processor_for(ledger)
    supp = Suppressions(ledger.redis, ledger.prefix)
    data = {"UserName": {"string": "wxid_gone"}, "DeleteContactScen": 0, **when.get("Data", {})}
    doc = {"TypeName": "DelContacts", "Appid": "app1", "Wxid": "wxid_me", "Data": data}
    assert processor.handle("acct1", json.dumps(doc).encode()) is Kind.CONTACT_REMOVED
    bodies = written_otherwise(doc)
    for body in bodies:
        supp.remove("acct1", "wxid_gone")  # an operator lets the contact back in
        assert processor.handle("acct1", body) is Kind.DUPLICATE, body
        assert supp.get("acct1", "wxid_gone") is None, body
    assert callback_audit(ledger) == ["suppression.add_contact_removed"]
    stats = ledger.redis.hgetall(ledger.keys.stat("callbacks"))
    assert stats.get("contact_removed") == "1" and stats.get("duplicate") == str(len(bodies))


def test_removals_that_say_different_times_or_name_another_contact_each_act(ledger: Ledger) -> None:
    processor = processor_for(ledger)
    supp = Suppressions(ledger.redis, ledger.prefix)

    def removed(who: str, at: int) -> bytes:
        return gewe("DelContacts", Data={"UserName": {"string": who}, "CreateTime": at})

    now = int(time.time())
    assert processor.handle("acct1", removed("wxid_gone", now)) is Kind.CONTACT_REMOVED
    assert supp.remove("acct1", "wxid_gone")  # let back in; removed again, later
    assert processor.handle("acct1", removed("wxid_gone", now + 60)) is Kind.CONTACT_REMOVED
    assert processor.handle("acct1", removed("wxid_other", now + 60)) is Kind.CONTACT_REMOVED
    assert supp.get("acct1", "wxid_gone") is not None and supp.get("acct1", "wxid_other") is not None
    assert callback_audit(ledger) == ["suppression.add_contact_removed"] * 3


def queued_replies(ledger: Ledger, account: str) -> list[str]:
    return [j.to for j in ledger.get_many(ledger.redis.lrange(ledger.keys.queue(account), 0, -1)) if j]


def test_opt_out_replies_go_to_people_only_and_are_bounded_per_hour(ledger: Ledger) -> None:
    processor = processor_for(ledger, optout_reply="已退订", optout_reply_per_h=2)
    for n, who in enumerate(["filehelper", "weixin", "gh_abc123", "app1", "x@openim"], start=1):
        assert processor.handle("acct1", gewe_text(who, "退订", msg_id=n)) is Kind.OPTED_OUT
    assert queued_replies(ledger, "acct1") == []  # system ids, official accounts, the account itself: no reply
    for n, who in enumerate(["wxid_p1", "wxid_p2", "wxid_p3"], start=100):
        assert processor.handle("acct1", gewe_text(who, "退订", msg_id=n)) is Kind.OPTED_OUT
    assert sorted(queued_replies(ledger, "acct1")) == ["wxid_p1", "wxid_p2"]  # the third is over the bound
    assert ledger.redis.hget(ledger.keys.stat("callbacks"), "reply_capped") == "1"
    assert Suppressions(ledger.redis, ledger.prefix).get("acct1", "wxid_p3") is not None  # still suppressed


def test_ecloud_group_senders_and_string_self_flags_are_not_opt_outs(ledger: Ledger) -> None:
    processor = processor_for(ledger)
    assert processor.handle("ec1", ecloud("123@chatroom", "退订", msg_id=1)) is Kind.IGNORED
    assert processor.handle("ec1", ecloud("wxid_e", "退订", own="true", msg_id=2)) is Kind.IGNORED
    supp = Suppressions(ledger.redis, ledger.prefix)
    assert supp.get("ec1", "123@chatroom") is None and supp.get("ec1", "wxid_e") is None


def test_the_inbox_is_bounded_in_bytes_and_its_count_returns_to_zero(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(callbacks, "INBOX_BYTES", 3000)
    inbox = CallbackInbox(ledger.redis, ledger.prefix)
    bodies = [gewe_text("wxid_b", "hello " + "x" * 900, msg_id=n) for n in range(3)]
    for body in bodies:
        assert not inbox.full()
        inbox.store("acct1", body)
    assert inbox.full() and int(ledger.redis.get(ledger.keys.callback_inbox_bytes) or 0) == sum(map(len, bodies))
    processor = processor_for(ledger)
    while processor.drain():
        pass
    assert not inbox.full() and ledger.redis.get(ledger.keys.callback_inbox_bytes) == "0"


def test_a_body_that_is_not_utf8_counts_as_what_is_stored(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each byte that is not UTF-8 is stored as U+FFFD (three bytes): the inbox's bound counts that."""
    monkeypatch.setattr(callbacks, "INBOX_BYTES", 5000)
    inbox = CallbackInbox(ledger.redis, ledger.prefix)
    inbox.store("acct1", b"\xff" * 1000)
    assert int(ledger.redis.get(ledger.keys.callback_inbox_bytes) or 0) == 3000
    inbox.store("acct1", b"\xff" * 1000)
    assert inbox.full()
    processor = processor_for(ledger)
    while processor.drain():
        pass
    assert ledger.redis.get(ledger.keys.callback_inbox_bytes) == "0"


def test_one_moment_written_in_any_unit_or_as_digits_is_one_event(ledger: Ledger) -> None:
    processor = processor_for(ledger)
    at = int(time.time()) + 5
    assert processor.handle("acct1", gewe("Offline", Data={"CreateTime": at})) is Kind.OFFLINE
    for written in (at * 1_000_000, str(at), str(at * 1000)):  # microseconds, a string of digits
        processor.accounts.set_status("acct1", "active")
        again = gewe("Offline", CreateTime=written)
        assert processor.handle("acct1", again, received=time.time() + 1) is Kind.DUPLICATE, written


@pytest.mark.parametrize("when", ["9" * 400, "NaN", "Infinity", "-Infinity", "-5", "1e400"])
def test_a_time_that_is_no_time_is_read_as_none_and_never_raises(ledger: Ledger, when: str) -> None:
    body = b'{"TypeName": "Offline", "Appid": "app1", "Wxid": "wxid_me", "CreateTime": ' + when.encode() + b"}"
    event = parse(body)
    assert event.kind in (Kind.OFFLINE, Kind.MALFORMED)  # the parser may refuse NaN; it never raises
    if event.kind is Kind.OFFLINE:
        assert event.at == 0.0
    assert processor_for(ledger).handle("acct1", body) in (Kind.OFFLINE, Kind.MALFORMED)


def test_two_accounts_on_one_instance_each_act_once_on_an_event(ledger: Ledger) -> None:
    accounts = AccountStore(ledger.redis, ledger.prefix)
    first = accounts.get("acct1")
    assert first is not None
    accounts.put("acct2", first.spec)  # the same vendor instance (Appid app1)
    processor, supp = processor_for(ledger), Suppressions(ledger.redis, ledger.prefix)
    removed = gewe("DelContacts", Data={"UserName": {"string": "wxid_shared"}})
    assert processor.handle("acct1", removed) is Kind.CONTACT_REMOVED
    assert processor.handle("acct2", removed) is Kind.CONTACT_REMOVED  # not the first account's duplicate
    assert supp.get("acct1", "wxid_shared") is not None and supp.get("acct2", "wxid_shared") is not None
    assert processor.handle("acct1", removed) is processor.handle("acct2", removed) is Kind.DUPLICATE


def test_an_inbox_that_lost_its_group_is_read_again(ledger: Ledger) -> None:
    inbox, processor = CallbackInbox(ledger.redis, ledger.prefix), processor_for(ledger)
    inbox.store("acct1", gewe_text("wxid_a", "hello", msg_id=1))
    assert processor.drain() == 1
    ledger.redis.delete(ledger.keys.callback_inbox)  # e.g. a Redis that came back empty
    inbox.store("acct1", gewe_text("wxid_b", "退订", msg_id=2))
    assert processor.drain() == 1  # was NOGROUP for ever, until the dispatcher restarted
    assert Suppressions(ledger.redis, ledger.prefix).get("acct1", "wxid_b") is not None


def checked_processor(ledger: Ledger) -> tuple[CallbackProcessor, list[tuple[str, str, float]]]:
    """A processor that hands Offline notices to a checker, as the dispatcher's does; what it was handed."""
    accounts = AccountStore(ledger.redis, ledger.prefix)
    asked: list[tuple[str, str, float]] = []
    processor = CallbackProcessor(
        Settings(key_prefix=ledger.prefix), ledger.redis, accounts, Producer(ledger, accounts),
        check_offline=lambda *notice: asked.append(notice),
    )  # fmt: skip
    return processor, asked


def test_an_offline_goes_to_the_vendor_check_and_the_account_is_left_as_it_is(ledger: Ledger) -> None:
    """With a checker (the dispatcher's: a worker task), a fresh ``Offline`` is handed over, not applied;
    the same notice again is handed over again (the vendor's check decides each: a refuted forgery must not
    make a real notice without a time a duplicate); a paused account's notice is not checked at all."""
    processor, asked = checked_processor(ledger)
    accounts = processor.accounts
    at = time.time() + 1
    offline = gewe("Offline", Data={"CreateTime": int(at)})
    assert processor.handle("acct1", offline, received=at) is Kind.OFFLINE
    assert processor.handle("acct1", gewe("Offline"), received=at) is Kind.OFFLINE  # no time: as GeWe sends it
    assert processor.handle("acct1", gewe("Offline"), received=at) is Kind.OFFLINE  # again: checked again
    account = accounts.get("acct1")
    assert account is not None and account.status == "active"
    assert asked == [("acct1", "GeWe Offline callback: the account was logged out (掉线)", at)] * 3
    assert callback_audit(ledger) == []  # the worker records what the vendor said
    accounts.set_status("acct1", "paused", "paused by operator")
    later = gewe("Offline", Data={"CreateTime": int(at) + 5})
    assert processor.handle("acct1", later, received=at + 5) is Kind.OFFLINE and len(asked) == 3


def test_offline_notices_past_the_hourly_checks_ask_the_vendor_nothing(ledger: Ledger) -> None:
    """Forged notices that each say a new time would each cost a vendor check the account's pacing counts:
    past OFFLINE_CHECKS_PER_H an hour they do nothing (counted ``offline_over_cap``)."""
    processor, asked = checked_processor(ledger)
    now = int(time.time()) + 1
    kinds = [
        processor.handle("acct1", gewe("Offline", Data={"CreateTime": now + i}), received=now + i)
        for i in range(OFFLINE_CHECKS_PER_H + 3)
    ]
    assert kinds == [Kind.OFFLINE] * OFFLINE_CHECKS_PER_H + [Kind.OFFLINE_OVER_CAP] * 3
    assert len(asked) == OFFLINE_CHECKS_PER_H
    assert ledger.redis.hget(ledger.keys.stat("callbacks"), "offline_over_cap") == "3"
