"""After a secret-key rotation done in one step, a worker whose keys cannot open an account's stored token
must not send with an empty token: the account goes down naming BROADCAST_SECRET_KEY, the jobs stay queued."""

from __future__ import annotations

import uuid

import httpx
import redis as redis_lib
from cryptography.fernet import Fernet

from simulator.server import SimulatorServer
from tests.conftest import VENDOR_PREFIX, claim_ready, drop_prefix
from worker.execution.runner import SessionRunner, SessionStop
from worker.messages import TextMessage
from worker.settings import Settings
from worker.store.accounts import AccountSpec, AccountStore
from worker.store.audit import AuditLog
from worker.store.ledger import Ledger


def test_a_token_no_key_opens_sends_nothing_and_downs_the_account(redis_url: str, sim: SimulatorServer) -> None:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"tok{uuid.uuid4().hex[:8]}"
    instance = f"inst-tok-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=sim.url) as admin:
        admin.post("/_sim/accounts", json={"vendor": "gewe", "instance": instance, "token": "tok"}).raise_for_status()
    spec = {"vendor": "gewe", "base_url": sim.url + VENDOR_PREFIX["gewe"], "token": "tok", "instance": instance}
    AccountStore(client, prefix, secret_keys=[Fernet.generate_key().decode()]).put(
        "a1", AccountSpec.model_validate({**spec, "limits": {"per_minute": 0}})
    )
    ledger = Ledger(client, prefix)
    job_id, _, _ = ledger.submit(account="a1", to="wxid_x", message=TextMessage(text="hi"))
    claim = claim_ready(ledger, lease_ttl_s=30)[0]
    rotated = AccountStore(client, prefix, secret_keys=[Fernet.generate_key().decode()])  # the old key is gone
    with httpx.Client() as http:
        report = SessionRunner(Settings(vendor_allow="127.0.0.0/8"), ledger, rotated, http).run(
            "a1", claim.token, claim.job_ids
        )
    assert report.stopped == SessionStop.ACCOUNT_DOWN and report.sent == 0
    job = ledger.get(job_id)
    assert job is not None and job.state == "queued" and job.attempts == 0
    account = rotated.get("a1")
    assert account is not None and account.status == "down" and "BROADCAST_SECRET_KEY" in account.status_reason
    # on the record like an operator's change, under the worker's name
    (entry,) = AuditLog(client, prefix, 3600).page(limit=10)[0]
    assert (entry["key"], entry["role"], entry["action"], entry["target"]) == (
        "worker", "worker", "account.down", "account:a1",
    )  # fmt: skip
    drop_prefix(client, prefix)


def test_an_account_without_a_token_still_sends(redis_url: str, sim: SimulatorServer) -> None:
    """No token is not an unreadable one: an ohwxapi gateway may need none (its demo account has none)."""
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"tok{uuid.uuid4().hex[:8]}"
    instance = f"wxid_tok_{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=sim.url) as admin:
        admin.post("/_sim/accounts", json={"vendor": "ohwxapi", "instance": instance, "token": ""}).raise_for_status()
    spec = {"vendor": "ohwxapi", "base_url": sim.url + VENDOR_PREFIX["ohwxapi"], "instance": instance}
    keys = [Fernet.generate_key().decode()]
    accounts = AccountStore(client, prefix, secret_keys=keys)
    accounts.put("a2", AccountSpec.model_validate({**spec, "limits": {"per_minute": 0}}))
    ledger = Ledger(client, prefix)
    job_id, _, _ = ledger.submit(account="a2", to="wxid_y", message=TextMessage(text="hi"))
    claim = claim_ready(ledger, lease_ttl_s=30)[0]
    with httpx.Client() as http:
        report = SessionRunner(Settings(vendor_allow="127.0.0.0/8"), ledger, accounts, http).run(
            "a2", claim.token, claim.job_ids
        )
    assert report.sent == 1 and report.stopped == ""
    job = ledger.get(job_id)
    assert job is not None and job.state == "sent"
    drop_prefix(client, prefix)
