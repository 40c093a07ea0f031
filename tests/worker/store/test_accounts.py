"""Accounts in a real Redis: CRUD, token handling, status, and the TOML accounts file."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from cryptography.fernet import Fernet
from pydantic import SecretStr, ValidationError

from tests.conftest import claim_ready
from worker.errors import ConfigError
from worker.store.accounts import AccountChangedError, AccountSpec, AccountStore, Limits, TokenRequiredError

TOKEN = "SEKRIT-acct-token-5c1e77"


@pytest.fixture
def store(redis_url: str) -> Iterator[AccountStore]:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    yield AccountStore(client, f"u{uuid.uuid4().hex[:8]}")
    client.close()


def spec(**kw: object) -> AccountSpec:
    fields: dict[str, object] = {
        "vendor": "gewe",
        "base_url": "http://api.geweapi.com/gewe/v2/api/",
        "token": TOKEN,
        "instance": "wx_app_1",
    }
    fields.update(kw)
    return AccountSpec.model_validate(fields)


def test_put_then_get_round_trips_every_field(store: AccountStore) -> None:
    created = store.put(
        "shop-gewe",
        spec(limits={"per_minute": 12, "daily_cap": 500, "quiet_hours": {"start": "22:00", "end": "08:00"}},
             options={"cgi_timeout": "20"}),
    )  # fmt: skip
    got = store.get("shop-gewe")

    assert got == created
    assert got is not None
    assert got.id == "shop-gewe" and got.status == "active" and got.status_changed > 0
    assert got.spec.vendor == "gewe"
    assert got.spec.base_url == "http://api.geweapi.com/gewe/v2/api"  # trailing slash stripped
    assert got.spec.token.get_secret_value() == TOKEN
    assert got.spec.instance == "wx_app_1"
    assert got.spec.limits.per_minute == 12 and got.spec.limits.daily_cap == 500
    assert got.spec.limits.quiet_hours is not None and got.spec.limits.quiet_hours.start == "22:00"
    assert got.spec.options == {"cgi_timeout": "20"}
    va = got.vendor_account()
    assert (va.vendor, va.instance, va.token.get_secret_value()) == ("gewe", "wx_app_1", TOKEN)
    assert store.get("nobody") is None


def test_all_lists_accounts_sorted_by_id(store: AccountStore) -> None:
    assert store.all() == []
    for account_id in ("zeta", "alpha", "mid@x"):
        store.put(account_id, spec(instance=f"inst-{account_id}"))
    accounts = store.all()
    assert [a.id for a in accounts] == ["alpha", "mid@x", "zeta"]
    assert [a.spec.instance for a in accounts] == ["inst-alpha", "inst-mid@x", "inst-zeta"]


def test_update_without_a_token_keeps_the_old_one_and_the_status(store: AccountStore) -> None:
    store.put("a1", spec())
    store.set_status("a1", "paused", "operator")

    updated = store.put("a1", spec(token="", instance="wx_app_2", limits={"per_minute": 5}))

    assert updated.spec.token.get_secret_value() == TOKEN
    assert updated.spec.instance == "wx_app_2" and updated.spec.limits.per_minute == 5
    assert (updated.status, updated.status_reason) == ("paused", "operator")

    replaced = store.put("a1", spec(token="new-token-123"))
    assert replaced.spec.token.get_secret_value() == "new-token-123"


def test_public_view_and_reprs_never_contain_the_token(store: AccountStore) -> None:
    account = store.put("a1", spec())
    public = account.public()

    assert TOKEN not in json.dumps(public)
    assert "token" not in public
    assert public["token_set"] is True
    assert public["id"] == "a1" and public["instance"] == "wx_app_1" and public["status"] == "active"
    assert public["limits"] == Limits().model_dump()
    assert TOKEN not in repr(account) and TOKEN not in str(account)
    assert TOKEN not in repr(account.vendor_account())

    no_token = store.put("a2", spec(vendor="ohwxapi", token=""))
    assert no_token.public()["token_set"] is False


def test_set_status_back_to_active_marks_the_account_ready(store: AccountStore) -> None:
    store.put("a1", spec())
    store.set_status("a1", "down", "微信已离线")
    down = store.get("a1")
    assert down is not None and (down.status, down.status_reason) == ("down", "微信已离线")
    assert store.redis.zscore(store.keys.sched, "a1") is None

    store.set_status("a1", "active")
    active = store.get("a1")
    assert active is not None and (active.status, active.status_reason) == ("active", "")
    assert store.redis.zscore(store.keys.sched, "a1") == 0  # the dispatcher looks at it at once


@pytest.mark.parametrize("bad_id", ["", "has space", "slash/no", "x" * 65, "semi;colon", "tab\tid"])
def test_invalid_account_id_is_refused_and_nothing_is_stored(store: AccountStore, bad_id: str) -> None:
    with pytest.raises(ConfigError, match="account id"):
        store.put(bad_id, spec())
    assert store.redis.scard(store.keys.accounts) == 0
    assert store.all() == []


@pytest.mark.parametrize("good_id", ["a", "shop.gewe-01", "ops@team_2", "x" * 64])
def test_valid_account_ids_are_accepted(store: AccountStore, good_id: str) -> None:
    assert store.put(good_id, spec()).id == good_id


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_file_creates_the_accounts(store: AccountStore, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
[[accounts]]
id = "shop-gewe"
vendor = "gewe"
base_url = "http://api.geweapi.com/gewe/v2/api"
token = "{TOKEN}"
instance = "wx_abc"
limits = {{ per_minute = 30, daily_cap = 1000 }}

[[accounts]]
id = "shop-ecloud"
vendor = "ecloud"
base_url = "https://ecloud.example.com/"
token = "auth-value"
instance = "w-123"
options = {{ ecloud_app_endpoint = "sendApp" }}
""",
    )

    assert store.load_file(path) == ["shop-gewe", "shop-ecloud"]

    gewe = store.get("shop-gewe")
    ecloud = store.get("shop-ecloud")
    assert gewe is not None and ecloud is not None
    assert gewe.spec.token.get_secret_value() == TOKEN
    assert (gewe.spec.limits.per_minute, gewe.spec.limits.daily_cap) == (30, 1000)
    assert ecloud.spec.vendor == "ecloud" and ecloud.spec.base_url == "https://ecloud.example.com"
    assert ecloud.spec.options == {"ecloud_app_endpoint": "sendApp"}
    assert [a.id for a in store.all()] == ["shop-ecloud", "shop-gewe"]

    # loading again updates in place (idempotent)
    assert store.load_file(path) == ["shop-gewe", "shop-ecloud"]
    assert len(store.all()) == 2


def test_load_file_without_accounts_is_empty(store: AccountStore, tmp_path: Path) -> None:
    assert store.load_file(write(tmp_path, "# nothing here\n")) == []


@pytest.mark.parametrize(
    ("entry", "mentions"),
    [
        ('vendor = "wechaty"\nbase_url = "http://x.example"\ninstance = "i"', "vendor"),
        ('vendor = "gewe"\nbase_url = "ftp://x.example"\ninstance = "i"', "base_url"),
        ('vendor = "gewe"\nbase_url = "http://x.example"', "instance"),
        ('vendor = "gewe"\nbase_url = "http://x.example"\ninstance = "i"\ncolour = "red"', "colour"),
        ('vendor = "gewe"\nbase_url = "http://x.example"\ninstance = "i"\nlimits = { per_minute = -1 }', "per_minute"),
    ],
)
def test_a_bad_entry_raises_config_error_naming_its_index(
    store: AccountStore, tmp_path: Path, entry: str, mentions: str
) -> None:
    good = '[[accounts]]\nid = "ok1"\nvendor = "gewe"\nbase_url = "http://x.example"\ninstance = "i"\n'
    path = write(tmp_path, f'{good}\n[[accounts]]\nid = "broken"\n{entry}\n')
    with pytest.raises(ConfigError) as info:
        store.load_file(path)
    message = str(info.value)
    assert "accounts[1]" in message and "broken" in message and mentions in message
    assert str(path) in message


@pytest.mark.parametrize("id_line", ['id = "has space"', ""])
def test_a_bad_account_id_in_the_file_names_its_index(store: AccountStore, tmp_path: Path, id_line: str) -> None:
    good = '[[accounts]]\nid = "ok1"\nvendor = "gewe"\nbase_url = "http://x.example"\ninstance = "i"\n'
    bad = f'[[accounts]]\n{id_line}\nvendor = "gewe"\nbase_url = "http://x.example"\ninstance = "i"\n'
    path = write(tmp_path, f"{good}\n{bad}")
    with pytest.raises(ConfigError) as info:
        store.load_file(path)
    assert "accounts[1]" in str(info.value)


def test_unparseable_or_missing_file_is_a_config_error(store: AccountStore, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="accounts file"):
        store.load_file(write(tmp_path, "[[accounts]\nid = "))
    with pytest.raises(ConfigError, match="accounts file"):
        store.load_file(tmp_path / "missing.toml")


def test_secretstr_in_spec_is_kept_secret_in_model_dumps() -> None:
    s = spec()
    assert isinstance(s.token, SecretStr)
    assert TOKEN not in s.model_dump_json() and TOKEN not in repr(s)


def test_a_resume_probe_holds_the_accounts_lease_and_counts_for_pacing(store: AccountStore) -> None:
    from worker.messages import TextMessage
    from worker.store.ledger import Ledger

    store.put("a1", spec())
    ledger = Ledger(store.redis, store.prefix)
    with store.probing("a1", ttl_s=30) as probe:
        # a second probe (a concurrent resume) is refused, and no session can be claimed meanwhile
        with pytest.raises(ConfigError, match="sending right now"), store.probing("a1", ttl_s=30):
            pass
        ledger.submit(account="a1", to="wxid_x", message=TextMessage(text="hi"))
        assert claim_ready(ledger, lease_ttl_s=30, batch_size=5) == []
        probe.made_a_call()
    pace = store.redis.hgetall(store.keys.pace("a1"))
    assert float(pace["last_end"]) > 0  # the probe's call counts: the next send waits its gap after it
    assert store.redis.exists(store.keys.lease("a1")) == 0
    # and a session in flight keeps a probe out
    store.set_status("a1", "active")
    (claim,) = claim_ready(ledger, lease_ttl_s=30, batch_size=5)
    with pytest.raises(ConfigError), store.probing("a1", ttl_s=30):
        pass
    ledger.release("a1", claim.token)


def test_a_changed_account_is_read_afresh_though_specs_are_kept_per_process(store: AccountStore) -> None:
    """The spec cache is keyed by the stored values: a new token, limits or address is what the next
    read returns, in this process and in one that never saw the old values."""
    store.put("cached", spec(limits={"per_minute": 10}))
    first = store.get("cached")
    assert first is not None and first.spec.limits.per_minute == 10
    assert store.get("cached") is not None

    store.put("cached", spec(token="a-new-token-0123456789", limits={"per_minute": 3}, base_url="http://b.example/api"))
    again = store.get("cached")
    assert again is not None
    assert again.spec.token.get_secret_value() == "a-new-token-0123456789"
    assert again.spec.limits.per_minute == 3 and again.spec.base_url == "http://b.example/api"
    fresh = AccountStore(store.redis, store.prefix).get("cached")
    assert fresh is not None and fresh.spec == again.spec


def test_a_change_merged_onto_a_stale_read_is_refused_and_stores_nothing(store: AccountStore) -> None:
    """A PATCH merges onto what it read; if a token rotation landed meanwhile, writing the merge would
    bring the old address and token back: it is refused instead (the API merges again)."""
    store.put("rot", spec(base_url="http://old.example/api", token="old-token-0123456789"))
    _, version = store.versioned("rot")
    store.put("rot", spec(base_url="http://new.example/api", token="new-token-0123456789"))

    stale = spec(base_url="http://old.example/api", token="old-token-0123456789", limits={"per_minute": 7})
    with pytest.raises(AccountChangedError):
        store.put("rot", stale, based_on=version)

    now = store.get("rot")
    assert now is not None
    assert now.spec.base_url == "http://new.example/api"
    assert now.spec.token.get_secret_value() == "new-token-0123456789"
    assert now.spec.limits.per_minute != 7
    _, fresh = store.versioned("rot")
    assert store.put("rot", stale.model_copy(update={"base_url": "http://new.example/api"}), based_on=fresh)


def test_a_resume_does_not_undo_a_status_changed_after_its_check_began(store: AccountStore) -> None:
    store.put("paws", spec())
    store.set_status("paws", "down", "offline")
    read = store.get("paws")
    assert read is not None
    time.sleep(0.01)  # status_changed has millisecond resolution
    store.set_status("paws", "paused", "paused by operator")  # lands while the resume's check runs

    assert store.set_status("paws", "active", "probe ok", unchanged_since=read.status_changed) is False
    after = store.get("paws")
    assert after is not None and after.status == "paused"
    assert store.set_status("paws", "active", "probe ok", unchanged_since=after.status_changed) is True
    again = store.get("paws")
    assert again is not None and again.status == "active"


@pytest.mark.parametrize(("token", "says"), [("t" * 5000, "4,096 characters"), ("tok en", "printable ASCII")])
def test_a_token_that_cannot_go_in_a_header_is_refused_for_its_reason(token: str, says: str) -> None:
    spec = {"vendor": "gewe", "base_url": "http://127.0.0.1:9", "instance": "i", "token": token}
    with pytest.raises(ValidationError, match=says):
        AccountSpec.model_validate(spec)


def test_an_edit_from_a_process_that_cannot_open_the_token_keeps_it(store: AccountStore) -> None:
    """An API restarted with the wrong BROADCAST_SECRET_KEY reads the token as "": an edit of the limits must
    keep the sealed token as stored (fix the keys, the account works again), and a move to another address
    still needs the token again."""
    new_key = Fernet.generate_key().decode()
    sealing = AccountStore(store.redis, store.prefix, secret_keys=[new_key])
    sealing.put("a1", spec(token="tok-real"))
    wrong = AccountStore(store.redis, store.prefix, secret_keys=[Fernet.generate_key().decode()])
    opened = wrong.get("a1")
    assert opened is not None and opened.token_unreadable
    limits = Limits.model_validate({**opened.spec.limits.model_dump(), "daily_cap": 100})
    wrong.put("a1", opened.spec.model_copy(update={"limits": limits}))
    again = AccountStore(store.redis, store.prefix, secret_keys=[new_key]).get("a1")
    assert again is not None and again.spec.token.get_secret_value() == "tok-real"
    assert again.spec.limits.daily_cap == 100
    with pytest.raises(TokenRequiredError):
        wrong.put("a1", opened.spec.model_copy(update={"base_url": "http://127.0.0.1:10/elsewhere"}))


@pytest.mark.parametrize("zone", ["localtime", "Factory", "posixrules", "posix/Asia/Shanghai", "Mars/Olympus"])
def test_a_timezone_must_be_a_place_that_means_the_same_on_every_host(zone: str) -> None:
    from scheduler.dispatch.schedules import ScheduleSpec

    with pytest.raises(ValidationError, match="timezone"):
        Limits.model_validate({"timezone": zone})
    with pytest.raises(ValidationError, match="timezone"):
        ScheduleSpec.model_validate({"name": "s", "cron": "0 9 * * *", "timezone": zone,
                                     "message": {"kind": "text", "text": "hi"}})  # fmt: skip
    assert Limits.model_validate({"timezone": "Asia/Shanghai"}).timezone == "Asia/Shanghai"
