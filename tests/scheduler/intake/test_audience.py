"""Audience resolution against stored contact books (a real Redis): label logic, order and duplicates across
accounts, exclusions, variables, and the refusals that name their field. The sync itself, the API and the
sends are covered end to end in tests/e2e/test_audiences.py."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis as redis_lib

from scheduler.intake.audience import AudienceError, AudienceIn, resolve
from simulator.server import SimulatorServer
from tests.conftest import account_for, drop_prefix
from worker.execution.contacts import ContactSyncRunner
from worker.settings import Settings
from worker.store.accounts import AccountSpec, AccountStore
from worker.store.contacts import Contact, ContactBook, ContactStore
from worker.vendors.base import HttpBackend, backend_for

LABELS = {"1": "VIP", "2": "上海", "3": "同事"}


@pytest.fixture
def store(redis_url: str) -> Iterator[ContactStore]:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    s = ContactStore(client, f"aud{uuid.uuid4().hex[:8]}")
    yield s
    drop_prefix(client, s.prefix)


def put(store: ContactStore, account: str, book: ContactBook) -> None:
    store.redis.set(store.keys.contacts(account), book.encode())


def friend(wxid: str, *labels: str, nickname: str = "", remark: str = "") -> Contact:
    return Contact(wxid, "friend", nickname or f"n-{wxid}", remark, labels)


def book(*friends: Contact, rooms: tuple[str, ...] = (), labels: dict[str, str] | None = None) -> ContactBook:
    return ContactBook(
        synced_at=1_800_000_000.0,
        labels=dict(LABELS if labels is None else labels),
        friends=list(friends),
        chatrooms=[Contact(r, "chatroom", f"群{r}") for r in rooms],
        ghs=[Contact("gh_news", "gh")],
    )


def test_labels_any_all_and_exclusions_pick_friends_and_exclude_wins(store: ContactStore) -> None:
    put(store, "a", book(
        friend("w1", "1"), friend("w2", "1", "2"), friend("w3", "1", "3"), friend("w4", "2"), friend("w5"),
        rooms=("r1@chatroom", "r2@chatroom"),
    ))  # fmt: skip
    got = resolve(store, AudienceIn(accounts=["a"], labels_any=["VIP"], exclude_labels=["同事"]), placeholders=set())
    assert [r["to"] for r in got.rows] == ["w1", "w2"] and got.excluded == 1
    both = resolve(store, AudienceIn(accounts=["a"], labels_all=["VIP", "上海"]), placeholders=set())
    assert [r["to"] for r in both.rows] == ["w2"]
    rooms = resolve(
        store, AudienceIn(accounts=["a"], chatrooms=["r2@chatroom"], exclude=["w5"]), placeholders=set()
    )  # only the groups asked for: friends are not implied beside groups
    assert [r["to"] for r in rooms.rows] == ["r2@chatroom"]
    everyone = resolve(
        store,
        AudienceIn(accounts=["a"], friends=True, chatrooms=True, exclude=["w5", "r1@chatroom"]),
        placeholders=set(),
    )
    assert [r["to"] for r in everyone.rows] == ["w1", "w2", "w3", "w4", "r2@chatroom"]  # never gh_news


def test_a_wxid_two_accounts_keep_goes_to_the_first_with_the_contacts_own_name(store: ContactStore) -> None:
    put(store, "a", book(friend("w1", "1", remark="王总"), friend("w2", "1")))
    put(store, "b", book(friend("w2", "1", remark="老李"), friend("w3", "1", nickname="小张")))
    got = resolve(store, AudienceIn(accounts=["b", "a"], labels_any=["VIP"]), placeholders={"name", "remark"})
    assert [(r["to"], r["account"]) for r in got.rows] == [("w2", "b"), ("w3", "b"), ("w1", "a")]
    assert got.duplicates == 1
    assert [r["vars"] for r in got.rows] == [
        {"name": "老李", "remark": "老李"}, {"name": "小张", "remark": ""}, {"name": "王总", "remark": "王总"},
    ]  # fmt: skip
    assert got.accounts["b"]["recipients"] == 2 and got.accounts["a"]["sync_age_s"] >= 0


@pytest.mark.parametrize(
    ("audience", "allowed", "status", "code", "field"),
    [
        ({"accounts": ["a"], "labels_any": ["nope"]}, None, 422, "invalid", "audience.labels_any[0]"),
        ({"accounts": ["a"], "labels_all": ["dup"]}, None, 409, "label_ambiguous", "audience.labels_all[0]"),
        ({"accounts": ["a", "never"]}, None, 409, "contacts_not_synced", "audience.accounts[1]"),
        ({"accounts": ["a"]}, ["b"], 422, "invalid", "audience.accounts[0]"),
        ({"accounts": ["a"], "chatrooms": ["zz@chatroom"]}, None, 422, "invalid", "audience.chatrooms[0]"),
        ({"accounts": ["a"], "exclude": ["w1"]}, None, 422, "invalid", "audience"),
    ],
)
def test_refusals_name_the_field(
    store: ContactStore, audience: dict[str, object], allowed: list[str] | None, status: int, code: str, field: str
) -> None:
    put(store, "a", book(friend("w1", "1"), labels={**LABELS, "7": "dup", "8": "dup"}))
    with pytest.raises(AudienceError) as caught:
        resolve(store, AudienceIn.model_validate(audience), placeholders=set(), allowed_accounts=allowed)
    assert (caught.value.status, caught.value.code, caught.value.field) == (status, code, field)


def test_an_account_whose_vendor_has_no_contact_calls_is_refused_before_its_missing_sync(store: ContactStore) -> None:
    put(store, "a", book(friend("w1", "1")))
    with pytest.raises(AudienceError) as caught:
        resolve(store, AudienceIn(accounts=["a", "lg"]), placeholders=set(), vendors={"a": "gewe", "lg": "gewe-legacy"})
    assert (caught.value.status, caught.value.code, caught.value.field) == (
        409, "contacts_unsupported", "audience.accounts[1]",
    )  # fmt: skip
    assert "gewe-legacy" in str(caught.value) and "contacts sync" not in str(caught.value)


def test_a_placeholder_no_contact_fills_is_refused_on_the_message(store: ContactStore) -> None:
    put(store, "a", book(friend("w1")))
    with pytest.raises(AudienceError) as caught:
        resolve(store, AudienceIn(accounts=["a"]), placeholders={"name", "code"})
    assert caught.value.field == "message" and "code" in str(caught.value)


def test_the_stored_book_is_compact_and_round_trips() -> None:
    friends = [
        friend(f"wxid_{i:08d}", "1", "3", nickname=f"好友{i}", remark="备注" if i % 3 else "") for i in range(2000)
    ]
    original = book(*friends, rooms=("1@chatroom",))
    again = ContactBook.decode(original.encode())
    assert again.friends == original.friends and again.labels == original.labels
    assert again.chatrooms[0].wxid == "1@chatroom" and again.ghs[0].wxid == "gh_news"
    assert len(original.encode()) / 2000 < 40  # bytes a friend, stored


@pytest.mark.parametrize("vendor", ["gewe", "ecloud"])
def test_a_full_address_book_is_read_from_the_simulator_and_an_unready_list_says_so(
    sim: SimulatorServer, vendor: str
) -> None:
    """10,000 friends in one list answer (past the small JSON bounds every other answer keeps), and the
    vendors' own shapes: GeWe's slow list gives way to its cache, E云 lists only after its init."""
    instance = f"big-{vendor}-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=sim.url) as admin:
        admin.post(
            "/_sim/accounts", json={"vendor": vendor, "instance": instance, "token": "tok-big"}
        ).raise_for_status()
        body = {
            "vendor": vendor,
            "instance": instance,
            "friends": 10_000,
            "chatrooms": 3,
            "list_slow_s": 2,
            "cache_delay_s": 0,
        }
        admin.post("/_sim/contacts", json=body).raise_for_status()
    with httpx.Client(timeout=10) as client:
        backend = backend_for(account_for(sim, vendor, instance=instance, token="tok-big"), client)
        assert isinstance(backend, HttpBackend)
        assert backend.contact_list(first=True, timeout_s=0.3) is None  # GeWe: timed out; E云: init
        listed = backend.contact_list(first=False, timeout_s=5)
        assert listed is not None and len(listed.friends) == 10_000 and len(listed.chatrooms) == 3
        assert all(g.startswith("gh_") for g in listed.ghs)
        details = backend.contact_details(listed.friends[:20])
        assert [d.wxid for d in details] == listed.friends[:20] and details[11].labels == ("1", "4")
        assert dict(backend.contact_labels())["2"] == "上海"


def test_a_sync_refused_by_the_vendor_fails_saying_why_without_the_token(
    store: ContactStore, sim: SimulatorServer
) -> None:
    """The dispatcher's part (take the lease) and the worker's (one call) in process: an account whose token the
    vendor refuses ends its sync ``failed`` with the vendor's reason, the token scrubbed, the lease freed."""
    secret = "tok-wrong-" + uuid.uuid4().hex
    accounts = AccountStore(store.redis, store.prefix)
    spec = {"vendor": "gewe", "base_url": sim.url + "/gewe/v2/api", "token": secret, "instance": "wx_demo_gewe"}
    accounts.put("gw", AccountSpec.model_validate(spec))
    store.start("gw")
    assert store.begin_step("gw", "csync:t1", ttl_s=5, now=time.time()) == "1"
    assert store.begin_step("gw", "csync:t2", ttl_s=5, now=time.time()) == "0"  # one step at a time
    with httpx.Client(timeout=5) as client:
        runner = ContactSyncRunner(Settings(key_prefix=store.prefix), store, accounts, client)
        runner.step("gw", "csync:t1")
    status = store.status("gw")
    assert status["status"] == "failed" and "account_down" in status["error"] and "不可用或已过期" in status["error"]
    assert secret not in json.dumps(status)
    assert not store.redis.exists(store.keys.lease("gw"))
    assert store.due(time.time() + 60) == ([], None)  # nothing more is handed out
