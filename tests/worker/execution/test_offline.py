"""An ``Offline`` callback is checked with the vendor before the account is marked down
(worker/execution/offline.py), against a real Redis and the simulator's ``/login/checkOnline``."""

from __future__ import annotations

import time

import httpx
import pytest

from simulator.server import SimulatorServer
from tests.worker.execution.test_lease import sim_account
from worker.execution.offline import OfflineVerdict, check_offline_notice
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


def check(accounts: AccountStore, client: httpx.Client, *, received: float, last_try: bool = True) -> OfflineVerdict:
    def backend(account: Account) -> VendorBackend:
        return backend_for(account.vendor_account(), client)

    return check_offline_notice(
        accounts, audit(accounts), backend, Settings(key_prefix=accounts.prefix),
        account_id="a1", reason=NOTICE, received=received, last_try=last_try,
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
    assert status(accounts) == ("active", "") and trail(accounts) == []
    assert accounts.redis.get(accounts.keys.lease("a1")) == "session-token"


def test_a_check_that_fails_is_tried_again_then_left_to_the_sends(sim: SimulatorServer, accounts: AccountStore) -> None:
    sim_account(sim, accounts, "a1")
    with httpx.Client(transport=CheckTimesOut(), timeout=5) as client:
        assert check(accounts, client, received=time.time(), last_try=False) is OfflineVerdict.UNCONFIRMED
        assert trail(accounts) == []  # another try comes
        assert check(accounts, client, received=time.time(), last_try=True) is OfflineVerdict.UNCONFIRMED
    assert status(accounts) == ("active", "")
    assert trail(accounts) == ["callback.offline_unconfirmed"]
