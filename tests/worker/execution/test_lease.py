"""One vendor call under an account's lease (worker/execution/lease.py), whoever holds it: a contact-sync
step and the resume probe retry what provably never left, and renew their lease before each retry, like a
send session does (against a real Redis and the simulator).

Each test shortens the lease while its first call fails (as if that call had taken most of the TTL): the
retry's wait then sees the lease back at its full TTL, still the holder's. Without the renewal it would
expire during a run of retries and the dispatcher could start a second call on the account."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx

from simulator.server import SimulatorServer
from worker.execution.contacts import ContactSyncRunner
from worker.execution.lease import probe_resume
from worker.settings import Settings
from worker.store.accounts import AccountSpec, AccountStore
from worker.store.contacts import ContactStore
from worker.vendors import backend_for

SHORT_MS = 3000  # the lease left when the first call fails


class FirstCallFails(httpx.BaseTransport):
    """Forwards to the simulator; the first request to ``path`` first runs ``during`` (the lease runs down),
    then is refused before a byte leaves (``refuse``) or goes through (the simulator's own fault answers)."""

    def __init__(self, path: str, during: Callable[[], None], *, refuse: bool) -> None:
        self.inner = httpx.HTTPTransport()
        self.path, self.during, self.refuse = path, during, refuse
        self.hit = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self.hit and request.url.path.endswith(self.path):
            self.hit = True
            self.during()
            if self.refuse:
                raise httpx.ConnectError("connection refused", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def sim_account(sim: SimulatorServer, accounts: AccountStore, account_id: str) -> str:
    """A fresh GeWe account on the simulator, stored as ``account_id``; its instance."""
    instance, token = f"lease-{uuid.uuid4().hex[:8]}", "tok-lease"
    with httpx.Client(base_url=sim.url, timeout=10) as admin:
        admin.post("/_sim/accounts", json={"vendor": "gewe", "instance": instance, "token": token}).raise_for_status()
    spec = {"vendor": "gewe", "base_url": sim.url + "/gewe/v2/api", "token": token, "instance": instance}
    accounts.put(account_id, AccountSpec.model_validate(spec))
    return instance


def lease_seen(accounts: AccountStore, account_id: str, seen: list[tuple[str | None, int]]) -> Callable[[float], None]:
    """A quick-retry sleep that records the lease (value, ms left) at each wait instead of sleeping."""

    def sleep(_: float) -> None:
        key = accounts.keys.lease(account_id)
        seen.append((accounts.redis.get(key), int(accounts.redis.pttl(key))))

    return sleep


def test_a_contact_step_renews_its_lease_before_a_quick_retry(sim: SimulatorServer, accounts: AccountStore) -> None:
    instance = sim_account(sim, accounts, "cs")
    contacts = ContactStore(accounts.redis, accounts.prefix)
    settings = Settings(key_prefix=accounts.prefix, lease_ttl_s=60)
    contacts.start("cs")
    token = "csync:lease-test"
    assert contacts.begin_step("cs", token, ttl_s=settings.lease_ttl_s, now=time.time()) == "1"
    lease = accounts.keys.lease("cs")
    refused = FirstCallFails("/label/list", lambda: accounts.redis.pexpire(lease, SHORT_MS), refuse=True)
    seen: list[tuple[str | None, int]] = []
    with httpx.Client(transport=refused, timeout=5) as client:
        runner = ContactSyncRunner(settings, contacts, accounts, client)
        runner.sleep = lease_seen(accounts, "cs", seen)
        assert runner.step("cs", token)["step"] == "labels"
    assert refused.hit
    ((value, left_ms),) = seen  # one quick retry, and the lease was the step's again at its full TTL
    assert value == token and left_ms > SHORT_MS + 10_000
    state = contacts.state("cs")
    assert state["phase"] == "list" and state.get("attempts") == "0"  # the retry succeeded: no long retry
    assert not accounts.redis.exists(lease)  # and the step freed the lease
    with httpx.Client(base_url=sim.url, timeout=10) as admin:
        calls = admin.get("/_sim/contact_calls", params={"instance": instance}).json()["calls"]
    assert len(calls) == 1  # the refused call never reached the vendor; the retry did, once


def test_the_resume_probe_renews_its_lease_before_a_quick_retry(
    sim: SimulatorServer, sim_admin: httpx.Client, accounts: AccountStore
) -> None:
    instance = sim_account(sim, accounts, "pr")
    accounts.set_status("pr", "down", "微信已离线")
    sim_admin.post("/_sim/faults", json={"kind": "http_503", "instance": instance, "to": "filehelper", "times": 1})
    settings = Settings(key_prefix=accounts.prefix)
    lease = accounts.keys.lease("pr")
    shortened = FirstCallFails("/message/postText", lambda: accounts.redis.pexpire(lease, SHORT_MS), refuse=False)
    seen: list[tuple[str | None, int]] = []
    account = accounts.get("pr")
    assert account is not None
    with httpx.Client(transport=shortened, timeout=5) as client:
        check = probe_resume(accounts, account, backend_for(account.vendor_account(), client), settings,
            sleep=lease_seen(accounts, "pr", seen),
        )  # fmt: skip
    assert check.ok and check.reason.startswith("resumed after a probe send to filehelper"), check
    ((value, left_ms),) = seen  # the 503 (never reached the vendor) was retried once, the lease renewed first
    assert value is not None and value.startswith("probe:") and left_ms > SHORT_MS + 10_000
    assert not accounts.redis.exists(lease)
    sends = sim_admin.get("/_sim/sends").json()["sends"]
    assert [s["to"] for s in sends if s.get("instance") == instance] == ["filehelper"]  # one probe went out
