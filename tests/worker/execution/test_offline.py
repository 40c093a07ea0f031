"""An ``Offline`` callback is checked with the vendor before the account is marked down
(worker/execution/offline.py), against a real Redis and the simulator's ``/login/checkOnline``."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from simulator.server import SimulatorServer
from tests.worker.execution.test_lease import sim_account
from worker.execution.offline import (
    BUSY_RECHECKS,
    FAILED_RECHECKS,
    OfflineRechecks,
    OfflineVerdict,
    check_offline_notice,
    gives_up,
)
from worker.settings import Settings
from worker.store.accounts import Account, AccountStore
from worker.store.audit import AuditLog
from worker.vendors import backend_for
from worker.vendors.base import VendorBackend

NOTICE = "GeWe Offline callback: the account was logged out (掉线)"


class CheckTimesOut(httpx.BaseTransport):
    """The online check is sent and never answered (a read timeout)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)


def check(accounts: AccountStore, client: httpx.Client, *, received: float, tries: int = 0) -> OfflineVerdict:
    def backend(account: Account) -> VendorBackend:
        return backend_for(account.vendor_account(), client)

    return check_offline_notice(
        accounts, audit(accounts), backend, Settings(key_prefix=accounts.prefix),
        account_id="a1", reason=NOTICE, received=received, tries=tries,
    )  # fmt: skip


def audit(accounts: AccountStore) -> AuditLog:
    return AuditLog(accounts.redis, accounts.prefix, 86400)


def trail(accounts: AccountStore) -> list[str]:
    entries, _ = audit(accounts).page(limit=50, key="callback")
    return [e["action"] for e in reversed(entries)]


def status(accounts: AccountStore) -> tuple[str, str]:
    account = accounts.get("a1")
    assert account is not None
    return account.status, account.status_reason


def test_a_forged_offline_does_not_stop_an_account_the_vendor_calls_online(
    sim: SimulatorServer, accounts: AccountStore
) -> None:
    sim_account(sim, accounts, "a1")
    with httpx.Client(timeout=10) as client:
        assert check(accounts, client, received=time.time()) is OfflineVerdict.REFUTED
    assert status(accounts) == ("active", "")
    assert trail(accounts) == ["callback.offline_refuted"]
    assert not accounts.redis.exists(accounts.keys.lease("a1"))  # the check's lease was given back


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("offline", NOTICE), ("token_invalid", NOTICE + "; ")],
    ids=["check says false", "token refused"],
)
def test_an_offline_the_vendor_confirms_marks_the_account_down(
    sim: SimulatorServer, sim_admin: httpx.Client, accounts: AccountStore, fault: str, reason: str
) -> None:
    instance = sim_account(sim, accounts, "a1")
    sim_admin.post("/_sim/faults", json={"kind": fault, "instance": instance}).raise_for_status()
    with httpx.Client(timeout=10) as client:
        assert check(accounts, client, received=time.time()) is OfflineVerdict.DOWN
    state, said = status(accounts)
    assert state == "down" and said.startswith(reason) and (said == NOTICE) == (fault == "offline")
    assert trail(accounts) == ["account.down"]


def test_a_notice_older_than_the_accounts_last_change_or_for_a_paused_account_does_nothing(
    sim: SimulatorServer, sim_admin: httpx.Client, accounts: AccountStore
) -> None:
    instance = sim_account(sim, accounts, "a1")
    sim_admin.post("/_sim/faults", json={"kind": "offline", "instance": instance}).raise_for_status()
    received = time.time() - 60
    accounts.set_status("a1", "active", "resumed by an operator")  # after the notice came
    with httpx.Client(timeout=10) as client:
        assert check(accounts, client, received=received) is OfflineVerdict.UNCHANGED
        accounts.set_status("a1", "paused", "paused by operator")
        assert check(accounts, client, received=time.time()) is OfflineVerdict.UNCHANGED
    assert status(accounts) == ("paused", "paused by operator") and trail(accounts) == []


def test_a_busy_account_is_checked_later_and_nothing_changes_meanwhile(
    sim: SimulatorServer, accounts: AccountStore
) -> None:
    sim_account(sim, accounts, "a1")
    accounts.redis.set(accounts.keys.lease("a1"), "session-token", px=30_000)  # a session holds it
    with httpx.Client(timeout=10) as client:
        assert check(accounts, client, received=time.time()) is OfflineVerdict.BUSY
        assert not gives_up(OfflineVerdict.BUSY, 0) and trail(accounts) == []  # another try comes
        # the last try finds it busy still: recorded, left to the sends
        assert check(accounts, client, received=time.time(), tries=BUSY_RECHECKS) is OfflineVerdict.BUSY
    assert status(accounts) == ("active", "") and trail(accounts) == ["callback.offline_unconfirmed"]
    assert accounts.redis.get(accounts.keys.lease("a1")) == "session-token"


class CheckSaysNothing(httpx.BaseTransport):
    """GeWe answers the online check with ``data: null``: neither online nor offline."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.dumps({"ret": 200, "msg": "操作成功", "data": None}).encode()
        return httpx.Response(200, headers={"Content-Type": "application/json"}, stream=httpx.ByteStream(body))


@pytest.mark.parametrize("transport", [CheckTimesOut, CheckSaysNothing], ids=["times out", "says nothing"])
def test_a_check_that_fails_is_tried_again_then_left_to_the_sends(
    sim: SimulatorServer, accounts: AccountStore, transport: type[httpx.BaseTransport]
) -> None:
    """A failed check (each one a vendor call) is made again only FAILED_RECHECKS times; an answer that is
    neither true nor false is a failed check, never a confirmation (a forged notice must not win by it)."""
    sim_account(sim, accounts, "a1")
    with httpx.Client(transport=transport(), timeout=5) as client:
        assert check(accounts, client, received=time.time()) is OfflineVerdict.UNCONFIRMED
        assert trail(accounts) == []  # another try comes
        assert check(accounts, client, received=time.time(), tries=FAILED_RECHECKS) is OfflineVerdict.UNCONFIRMED
    assert status(accounts) == ("active", "")
    assert trail(accounts) == ["callback.offline_unconfirmed"]


def test_a_notice_to_check_again_is_kept_in_redis_until_due_then_handed_over_once(accounts: AccountStore) -> None:
    """Not a Celery countdown held by a worker (stranded for an hour when that worker stops): the dispatcher
    takes each due notice from Redis and sends it again, with its tries counted."""
    rechecks = OfflineRechecks(accounts.redis, accounts.prefix)
    rechecks.later("a1", NOTICE, 1700000000.5, 1, after_s=0)
    rechecks.later("a2", NOTICE, 1700000001.0, 3, after_s=3600)
    sent: list[tuple[str, str, float, int]] = []
    assert rechecks.take_due(lambda *notice: sent.append(notice), time.time()) == 1
    assert sent == [("a1", NOTICE, 1700000000.5, 1)]
    assert rechecks.take_due(lambda *notice: sent.append(notice), time.time()) == 0  # handed over once
    assert rechecks.take_due(lambda *notice: sent.append(notice), time.time() + 3601) == 1 and sent[-1][0] == "a2"
