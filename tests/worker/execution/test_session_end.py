"""A session ends in its last job's FINISH when that job was sent, or when its next job starts too far away
to wait for (one round trip fewer per session): the account is handed back exactly as a separate RELEASE
would, against a real Redis and the simulator."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis

from simulator.server import SimulatorServer
from tests.conftest import claim_ready
from tests.worker.execution.test_lease import sim_account
from worker.execution.runner import SessionRunner
from worker.messages import TextMessage
from worker.settings import Settings
from worker.store.accounts import AccountSpec, AccountStore
from worker.store.ledger import Ledger

GAP_S = 40.0  # far beyond the session's hold: each session takes one job


def _paced_account(sim: SimulatorServer, store: AccountStore) -> None:
    sim_account(sim, store, "a1")
    spec = store.get("a1")
    assert spec is not None
    limits = {"per_minute": 60, "min_interval_s": GAP_S, "jitter_s": 0, "group_min_interval_s": GAP_S}
    store.put("a1", AccountSpec.model_validate({**spec.spec.model_dump(), "limits": limits}))


@pytest.mark.parametrize(("queued", "batch"), [(1, 5), (2, 1), (3, 5)])
def test_a_session_whose_last_job_was_sent_ends_in_its_finish(
    sim: SimulatorServer,
    accounts: AccountStore,
    queued: int,
    batch: int,
) -> None:
    _paced_account(sim, accounts)
    ledger = Ledger(accounts.redis, accounts.prefix)
    ids = [ledger.submit(account="a1", to=f"wxid_r{i}", message=TextMessage(text="hi"))[0] for i in range(queued)]
    claim = claim_ready(ledger, lease_ttl_s=30, batch_size=batch)[0]
    releases: list[Any] = []
    release = ledger.release
    ledger.release = lambda *a, **k: releases.append(a) or release(*a, **k)  # type: ignore[method-assign]
    settings = Settings(key_prefix=accounts.prefix)
    with httpx.Client(timeout=10) as http:
        report = SessionRunner(settings, ledger, accounts, http).run("a1", claim.token, claim.job_ids)
    sent = ledger.get(ids[0])
    assert sent is not None and sent.state == "sent" and report.sent == 1
    keys = ledger.keys
    assert not accounts.redis.exists(keys.lease("a1"), keys.claimed("a1"))
    assert not accounts.redis.sismember(keys.leased, "a1")
    last_end = float(accounts.redis.hget(keys.pace("a1"), "last_end") or 0)
    if queued == 1:
        # nothing left: the session ended in its FINISH, the account is not waiting in `sched`
        assert report.stopped == "" and releases == []
        assert accounts.redis.zscore(keys.sched, "a1") is None
        return
    assert accounts.redis.lrange(keys.queue("a1"), 0, -1) == ids[1:]
    assert accounts.redis.zscore(keys.sched, "a1") == pytest.approx(last_end + GAP_S, abs=1e-3)
    if batch == 1:  # its one job was its last: ended in its FINISH, the next job waits its gap in `sched`
        assert report.stopped == "" and releases == []
    else:  # the next job is 40 s away: the session stops (paced), handing the rest back in the same FINISH
        assert report.stopped == "paced" and releases == []


def test_a_session_past_its_time_ends_in_the_finish_of_its_last_send(
    sim: SimulatorServer, accounts: AccountStore
) -> None:
    """BROADCAST_BATCH_MAX_S over: the next job, 2 s away (within the hold), is not waited for; the sent
    job's FINISH hands the account back with the rest, no RELEASE of its own."""
    sim_account(sim, accounts, "a1")
    spec = accounts.get("a1")
    assert spec is not None
    limits = {"per_minute": 60, "min_interval_s": 2.0, "jitter_s": 0, "group_min_interval_s": 2.0}
    accounts.put("a1", AccountSpec.model_validate({**spec.spec.model_dump(), "limits": limits}))
    ledger = Ledger(accounts.redis, accounts.prefix)
    ids = [ledger.submit(account="a1", to=f"wxid_r{i}", message=TextMessage(text="hi"))[0] for i in range(3)]
    claim = claim_ready(ledger, lease_ttl_s=30, batch_size=5)[0]
    releases: list[Any] = []
    release = ledger.release
    ledger.release = lambda *a, **k: releases.append(a) or release(*a, **k)  # type: ignore[method-assign]
    settings = Settings(key_prefix=accounts.prefix, batch_max_s=0.5, session_hold_s=5.0)
    with httpx.Client(timeout=10) as http:
        report = SessionRunner(settings, ledger, accounts, http).run("a1", claim.token, claim.job_ids)
    assert (report.sent, report.stopped, releases) == (1, "batch_time", [])
    keys = ledger.keys
    assert not accounts.redis.exists(keys.lease("a1"), keys.claimed("a1"))
    assert accounts.redis.lrange(keys.queue("a1"), 0, -1) == ids[1:]
    last_end = float(accounts.redis.hget(keys.pace("a1"), "last_end") or 0)
    assert accounts.redis.zscore(keys.sched, "a1") == pytest.approx(last_end + 2.0, abs=1e-3)


# --- a session that cannot start: its first job was begun in its first round trip, and is given back ------


def test_an_account_gone_since_the_claim_dead_letters_its_jobs_as_missing(
    sim: SimulatorServer, accounts: AccountStore
) -> None:
    _paced_account(sim, accounts)
    ledger = Ledger(accounts.redis, accounts.prefix)
    ids = [ledger.submit(account="a1", to=f"wxid_r{i}", message=TextMessage(text="hi"))[0] for i in range(2)]
    claim = claim_ready(ledger, lease_ttl_s=30, batch_size=5)[0]
    accounts.redis.delete(ledger.keys.account("a1"))
    with httpx.Client(timeout=10) as http:
        report = SessionRunner(Settings(key_prefix=accounts.prefix), ledger, accounts, http).run(
            "a1", claim.token, claim.job_ids
        )
    assert report.stopped == "account_missing" and report.dead == 2
    jobs = [ledger.get(i) for i in ids]
    assert [(j.state, j.fields.get("reason")) for j in jobs if j] == [("dead", "account_missing")] * 2
    assert not accounts.redis.exists(ledger.keys.lease("a1"))


def test_a_session_whose_backend_cannot_be_built_gives_its_first_job_back_untried(
    sim: SimulatorServer, accounts: AccountStore
) -> None:
    _paced_account(sim, accounts)
    ledger = Ledger(accounts.redis, accounts.prefix)
    job_id = ledger.submit(account="a1", to="wxid_r", message=TextMessage(text="hi"))[0]
    claim = claim_ready(ledger, lease_ttl_s=30)[0]

    def broken(*_: Any) -> Any:
        raise RuntimeError("no backend")

    runner = SessionRunner(
        Settings(key_prefix=accounts.prefix), ledger, accounts, httpx.Client(), backend_factory=broken
    )
    with pytest.raises(RuntimeError):
        runner.run("a1", claim.token, claim.job_ids)
    job = ledger.get(job_id)
    assert job is not None and job.state == "queued" and job.attempts == 0  # never `sending` left behind
    assert accounts.redis.lrange(ledger.keys.queue("a1"), 0, -1) == [job_id]
    assert not accounts.redis.exists(ledger.keys.lease("a1"))


# --- the sessions of one Celery message open in one round trip ---------------------------------------------


def _bundle(
    sim: SimulatorServer, accounts: AccountStore, n: int
) -> tuple[Ledger, list[tuple[str, str, list[str], str]]]:
    """``n`` accounts with one job each, claimed in one round as the dispatcher would (a bundle)."""
    ledger = Ledger(accounts.redis, accounts.prefix)
    for k in range(n):
        sim_account(sim, accounts, f"b{k}")
        ledger.submit(account=f"b{k}", to=f"wxid_b{k}", message=TextMessage(text="hi"))
    claims = claim_ready(ledger, lease_ttl_s=30)
    assert len(claims) == n
    return ledger, [(c.account, c.token, c.job_ids, c.groups) for c in claims]


def _spy(ledger: Ledger) -> tuple[list[int], list[str]]:
    """Record the opening round trips: how many sessions each opened, and the lone ones by account."""
    together: list[int] = []
    alone: list[str] = []
    joint, single = ledger.open_sessions, ledger.open_session
    ledger.open_sessions = lambda openings, **kw: together.append(len(openings)) or joint(openings, **kw)  # type: ignore[method-assign]
    ledger.open_session = lambda account, *a, **kw: alone.append(account) or single(account, *a, **kw)  # type: ignore[method-assign]
    return together, alone


def test_a_bundles_sessions_open_in_one_round_trip_and_each_sends_once(
    sim: SimulatorServer, accounts: AccountStore
) -> None:
    ledger, sessions = _bundle(sim, accounts, 5)
    together, alone = _spy(ledger)
    with httpx.Client(timeout=10) as http:
        reports = SessionRunner(Settings(key_prefix=accounts.prefix), ledger, accounts, http).run_many(sessions)
    assert [r.sent for r in reports] == [1] * 5 and all(r.stopped == "" for r in reports)
    assert (together, alone) == ([5], [])
    for account, *_ in sessions:
        assert not accounts.redis.exists(ledger.keys.lease(account))


def test_only_sessions_that_have_a_thread_at_once_begin_in_the_joint_round_trip(
    sim: SimulatorServer, accounts: AccountStore
) -> None:
    """A first job marked ``sending`` must not wait for a busy thread while its lease runs out: with two
    session threads, the bundle's first session (the task's own thread) and two more open together; the
    others open on their own once a thread takes them."""
    ledger, sessions = _bundle(sim, accounts, 5)
    together, alone = _spy(ledger)
    settings = Settings(key_prefix=accounts.prefix, worker_concurrency=2)
    with httpx.Client(timeout=10) as http:
        reports = SessionRunner(settings, ledger, accounts, http).run_many(sessions)
    assert [r.sent for r in reports] == [1] * 5
    # a lone opening is a joint one of one session
    assert together == [3, 1, 1] and sorted(alone) == sorted(s[0] for s in sessions[3:])


def test_a_joint_round_trip_lost_after_it_ran_leaves_each_session_to_read_alone_and_send_once(
    sim: SimulatorServer, sim_admin: httpx.Client, accounts: AccountStore
) -> None:
    """The answer of the joint round trip is lost (a dropped connection) after Redis ran every BEGIN: each
    session reads again with its own call id, its BEGIN answers as it did, and each job goes out once."""
    ledger, sessions = _bundle(sim, accounts, 3)
    joint = ledger.open_sessions

    def lost(openings: Any, **kw: Any) -> Any:
        got = joint(openings, **kw)
        if len(openings) == 1:  # a session reading alone
            return got
        raise redis.ConnectionError("connection lost while reading the answer")

    ledger.open_sessions = lost  # type: ignore[method-assign]
    with httpx.Client(timeout=10) as http:
        reports = SessionRunner(Settings(key_prefix=accounts.prefix), ledger, accounts, http).run_many(sessions)
    assert [r.sent for r in reports] == [1] * 3
    sent = [s["to"] for s in sim_admin.get("/_sim/sends").json()["sends"] if str(s["to"]).startswith("wxid_b")]
    assert sorted(sent) == ["wxid_b0", "wxid_b1", "wxid_b2"]
