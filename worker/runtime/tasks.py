"""Celery tasks: thin wrappers that hand ids to :class:`worker.execution.runner.SessionRunner`."""

from __future__ import annotations

import threading
from typing import Any

from worker.execution.contacts import ContactSyncRunner
from worker.execution.offline import OfflineRechecks, check_offline_notice, checks_again
from worker.execution.runner import SessionRunner
from worker.runtime.celery_app import app
from worker.runtime.connections import redis_client, vendor_http_clients
from worker.settings import get_settings
from worker.store.accounts import Account, AccountStore
from worker.store.audit import AuditLog
from worker.store.contacts import ContactStore
from worker.store.ledger import Ledger
from worker.store.replication import ReplicaAcks
from worker.vendors.base import VendorBackend

_runner: SessionRunner | None = None
_runner_lock = threading.Lock()


def runner() -> SessionRunner:
    """The process's session runner, built on first use (after a fork), shared by the pool's threads."""
    global _runner
    with _runner_lock:
        if _runner is None:
            settings = get_settings()
            client = redis_client(settings.redis_url, settings)
            _runner = SessionRunner(
                settings,
                Ledger(
                    client,
                    settings.key_prefix,
                    retention_s=settings.retention_days * 86400,
                    acks=ReplicaAcks(client, settings.replica_acks, settings.replica_ack_timeout_s),
                ),
                AccountStore(client, settings.key_prefix, secret_keys=settings.secret_keys()),
                vendor_http_clients(settings, max_connections=settings.worker_concurrency),
            )
        return _runner


_syncer: ContactSyncRunner | None = None


def syncer() -> ContactSyncRunner:
    """The process's contact-sync runner, sharing the session runner's Redis and vendor clients."""
    global _syncer
    sessions = runner()
    with _runner_lock:
        if _syncer is None:
            client = sessions.ledger.redis
            _syncer = ContactSyncRunner(
                sessions.settings,
                ContactStore(client, sessions.settings.key_prefix),
                sessions.accounts,
                sessions.http[0],
            )
        return _syncer


@app.task(name="broadcast.contacts_step", acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def contacts_step(account: str, lease: str) -> dict[str, Any]:
    """One step of an account's contact sync (one vendor call) under the lease the dispatcher took for it."""
    return syncer().step(str(account), str(lease))


@app.task(name="broadcast.schedule_fired")  # type: ignore[untyped-decorator]
def schedule_fired(schedule_id: str, fire_at: float, result: dict[str, Any]) -> dict[str, Any]:
    """Marks a recurring schedule's firing in Flower; the dispatcher already stored what it sent."""
    return {"schedule": schedule_id, "fire_at": fire_at, **result}


@app.task(name="broadcast.send_sessions", acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def send_sessions(*sessions: list[Any], info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the sessions the dispatcher claimed in one round, each an account's jobs under its lease
    (each argument ``[account, lease, job_ids, groups]``: flat, so Flower shows every id), side by side in
    this process; acknowledged when all ended.
    One message for many sessions: Celery's own work per message (events, ack) is shared by them all.
    ``info`` is for operators (Flower): accounts, jobs, kinds, campaigns."""
    reports = runner().run_many([(str(a), str(t), [str(j) for j in ids], str(g)) for a, t, ids, g in sessions])
    totals: dict[str, Any] = {"sessions": len(reports)}
    for key in ("sent", "retrying", "dead", "requeued", "skipped"):
        totals[key] = sum(int(r.summary()[key]) for r in reports)
    totals["stopped"] = sorted({r.stopped for r in reports if r.stopped})
    return totals


@app.task(name="broadcast.send_batch", acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def send_batch(
    account: str, lease: str, job_ids: list[str], info: dict[str, Any] | None = None, groups: str = ""
) -> dict[str, Any]:
    """One session (messages published before sessions were bundled): an account's jobs, one at a time,
    paced. ``groups`` marks the jobs whose recipient is a group ('1'), whose pacing gap is the group one."""
    return runner().run(account, lease, job_ids, groups).summary()


@app.task(name="broadcast.check_offline", acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def check_offline(account: str, reason: str, received: float, tries: int = 0) -> dict[str, Any]:
    """An ``Offline`` callback checked with the vendor before the account is marked down
    (worker/execution/offline.py); a busy account or a failed check is checked again later, from Redis."""
    sessions = runner()
    settings = sessions.settings

    def backend(of: Account) -> VendorBackend:
        return sessions.backend_factory(of.vendor_account(), sessions.http[0])

    client = sessions.ledger.redis
    audit = AuditLog(client, settings.key_prefix, settings.audit_retention_days * 86400)
    verdict = check_offline_notice(
        sessions.accounts, audit, backend, settings,
        account_id=str(account), reason=str(reason), received=float(received), tries=int(tries),
    )  # fmt: skip
    again = checks_again(verdict, int(tries))
    if again:
        OfflineRechecks(client, settings.key_prefix).later(str(account), str(reason), float(received), int(tries) + 1)
    return {"account": account, "verdict": str(verdict), "tries": int(tries), "again": again}
