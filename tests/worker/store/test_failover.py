"""Failover, the store's part (issue 21): connection forms, every send-path script run twice after a lost
reply, scripts reloaded on a restarted server (NOSCRIPT), and the replica acknowledgement (WAIT) on a real
primary and replica. The whole failover with Sentinels is tests/e2e/test_failover.py."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_lib

from bench.failover import DelayProxy
from scheduler.devtools.embedded import EmbeddedRedis, free_port
from simulator.server import SimulatorServer
from tests.conftest import VENDOR_PREFIX, claim_ready
from tests.procs import wait_for
from worker.execution.runner import SessionRunner, SessionStop
from worker.messages import TextMessage
from worker.runtime.connections import celery_broker, new_redis_client, parse_redis_url
from worker.settings import Settings
from worker.store.accounts import AccountSpec, AccountStore
from worker.store.ledger import BeginStatus, Ledger, PaceRecord
from worker.store.replication import Acks, ReplicaAcks, online_replicas
from worker.store.suppressions import SuppressionReason, Suppressions
from worker.vendors.base import SendResult, backend_for

LEASE_S = 30.0


@pytest.fixture
def ledger(redis_url: str) -> Ledger:
    """A ledger of its own prefix on the session's Redis."""
    return Ledger(redis_lib.Redis.from_url(redis_url, decode_responses=True), f"f{uuid.uuid4().hex[:8]}")


def one_job(ledger: Ledger, account: str = "a1") -> str:
    job_id, created, _ = ledger.submit(account=account, to="wxid_x", message=TextMessage(text="hi"))
    assert created
    return job_id


# --- connection forms ---------------------------------------------------------------------------------


def test_sentinel_urls_in_kombus_convention_are_parsed_with_the_primarys_credentials() -> None:
    target = parse_redis_url("sentinel://app:s3cret@h1:26379/2;sentinel://h2:26380;sentinel://h3")
    assert target.sentinels == (("h1", 26379), ("h2", 26380), ("h3", 26379))
    assert (target.username, target.password, target.db) == ("app", "s3cret", 2)
    assert not parse_redis_url("rediss://u:p@cache.example:6380/0").is_sentinel
    with pytest.raises(ValueError, match="sentinel://host:port"):
        parse_redis_url("sentinel://h1:26379;redis://h2:6379")


def test_sentinel_without_a_master_name_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="BROADCAST_REDIS_MASTER_NAME"):
        Settings(redis_url="sentinel://h1:26379;sentinel://h2:26379")


def test_the_broker_uses_kombus_sentinel_transport_with_the_master_name_and_retries_forever() -> None:
    settings = Settings(
        redis_url="sentinel://h1:26379;sentinel://h2:26379",
        redis_master_name="broadcast",
        redis_sentinel_password="sentinel-pass",  # type: ignore[arg-type]
    )
    conf = celery_broker(settings)
    assert conf["broker_transport"] == "worker.runtime.broker:SentinelTransport"
    options = conf["broker_transport_options"]
    assert options["master_name"] == "broadcast"
    assert options["sentinel_kwargs"]["password"] == "sentinel-pass"
    assert conf["broker_connection_max_retries"] is None and conf["broker_channel_error_retry"] is True
    tls = celery_broker(Settings(redis_url="rediss://u:p@cache:6380/0", redis_ca_file=Path("/etc/ca.pem")))
    assert tls["broker_use_ssl"]["ssl_ca_certs"] == "/etc/ca.pem"


# --- every send-path script, run twice (a retry after a lost reply) -------------------------------------


def test_submit_run_twice_stores_and_queues_one_job(ledger: Ledger) -> None:
    kwargs = {"account": "a1", "to": "wxid_x", "message": TextMessage(text="hi"), "job_id": "jdouble"}
    first = ledger.submit(**kwargs)  # type: ignore[arg-type]
    again = ledger.submit(**kwargs)  # type: ignore[arg-type]
    assert first.id == again.id == "jdouble" and again.created
    assert ledger.redis.llen(ledger.keys.queue("a1")) == 1


def test_begin_run_twice_with_its_call_id_answers_the_same_and_counts_one_attempt(ledger: Ledger) -> None:
    job_id = one_job(ledger)
    claim = claim_ready(ledger, lease_ttl_s=LEASE_S)[0]
    first = ledger.begin("a1", claim.token, job_id, lease_ttl_s=LEASE_S, call="c1")
    again = ledger.begin("a1", claim.token, job_id, lease_ttl_s=LEASE_S, call="c1")
    assert first.status is again.status is BeginStatus.GO
    assert again.job is not None and again.job.attempts == 1
    job = ledger.get(job_id)
    assert job is not None and job.state == "sending"
    # a different call finding it `sending` is a session that died mid-call: unknown outcome, never resent
    other = ledger.begin("a1", claim.token, job_id, lease_ttl_s=LEASE_S, call="c2")
    assert other.status is BeginStatus.SKIP and other.why == "unknown_outcome"


def test_a_begin_replay_is_not_checked_again_against_suppressions(ledger: Ledger) -> None:
    job_id = one_job(ledger)
    claim = claim_ready(ledger, lease_ttl_s=LEASE_S)[0]
    assert ledger.begin("a1", claim.token, job_id, lease_ttl_s=LEASE_S, call="c1").status is BeginStatus.GO
    Suppressions(ledger.redis, ledger.prefix).add("a1", "wxid_x", SuppressionReason.MANUAL, by="test")
    # the first run passed the checks and the vendor may be called on its answer: the replay says the same
    again = ledger.begin("a1", claim.token, job_id, lease_ttl_s=LEASE_S, call="c1")
    assert again.status is BeginStatus.GO
    job = ledger.get(job_id)
    assert job is not None and job.state == "sending"


def test_finish_run_twice_records_the_send_once(ledger: Ledger) -> None:
    job_id = one_job(ledger)
    claim = claim_ready(ledger, lease_ttl_s=LEASE_S)[0]
    begin = ledger.begin("a1", claim.token, job_id, lease_ttl_s=LEASE_S, call="c1")
    assert begin.job is not None and begin.job.fields["call"] == "c1"
    result = SendResult(vendor="gewe", endpoint="/x", to="wxid_x", msg_type=1, new_msg_id=42, msg_id=7, create_time=1)
    pace = PaceRecord(ended=time.time(), fraction=0.5, slowdown=None, day="2026-01-01", day_sends=1, sent=True, keep=5)
    entry = {"n": 1, "started": time.time(), "call": "c1", "outcome": "sent"}
    first = ledger.finish_sent("a1", claim.token, job_id, result, entry, pace=pace)
    again = ledger.finish_sent("a1", claim.token, job_id, result, entry, pace=pace)
    assert first.status == again.status == "ok"
    assert [h["outcome"] for h in ledger.history(job_id)] == ["sent"]
    assert ledger.redis.llen(ledger.keys.pace_window("a1")) == 1
    assert ledger.redis.hget(ledger.keys.pace("a1"), "day_n") == "1"
    job = ledger.get(job_id)
    assert job is not None and job.state == "sent" and job.fields["new_msg_id"] == "42"


def test_a_finish_that_ends_the_session_run_twice_releases_once(ledger: Ledger) -> None:
    ids = [one_job(ledger) for _ in range(3)]
    claim = claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=2)[0]
    assert claim.job_ids == ids[:2]
    assert ledger.begin("a1", claim.token, ids[0], lease_ttl_s=LEASE_S, call="c1").status is BeginStatus.GO
    result = SendResult(vendor="gewe", endpoint="/x", to="wxid_x", msg_type=1, new_msg_id=42, msg_id=7, create_time=1)
    pace = PaceRecord(ended=time.time(), fraction=0.5, slowdown=None, day="2026-01-01", day_sends=1, sent=True, keep=5)
    entry = {"n": 1, "started": time.time(), "call": "c1", "outcome": "sent"}
    next_at = time.time() + 30
    first = ledger.finish_sent("a1", claim.token, ids[0], result, entry, pace=pace, release_at=next_at)
    assert first.status == "ok" and first.released == 1  # ids[1], claimed but not begun, went back
    assert not ledger.redis.exists(ledger.keys.lease("a1"), ledger.keys.claimed("a1"))
    assert ledger.redis.zscore(ledger.keys.sched, "a1") == pytest.approx(next_at, abs=1e-6)
    again = ledger.finish_sent("a1", claim.token, ids[0], result, entry, pace=pace, release_at=next_at + 60)
    assert again.status == "ok" and again.released == -1  # the lease is gone: nothing is released twice
    assert ledger.redis.zscore(ledger.keys.sched, "a1") == pytest.approx(next_at, abs=1e-6)
    assert ledger.redis.lrange(ledger.keys.queue("a1"), 0, -1) == ids[1:]
    job = ledger.get(ids[0])
    assert job is not None and job.state == "sent" and [h["outcome"] for h in ledger.history(ids[0])] == ["sent"]


def test_a_finish_waiting_for_replicas_leaves_the_session_to_its_own_release(ledger: Ledger) -> None:
    job_id = one_job(ledger)
    waiting = Ledger(ledger.redis, ledger.prefix, acks=ReplicaAcks(ledger.redis, 1, 0.05))  # no replica answers
    claim = claim_ready(waiting, lease_ttl_s=LEASE_S)[0]
    assert waiting.begin("a1", claim.token, job_id, lease_ttl_s=LEASE_S, call="c1").status is BeginStatus.GO
    result = SendResult(vendor="gewe", endpoint="/x", to="wxid_x", msg_type=1, new_msg_id=42, msg_id=7, create_time=1)
    pace = PaceRecord(ended=time.time(), fraction=0.5, slowdown=None, day="2026-01-01", day_sends=1, sent=True, keep=5)
    entry = {"n": 1, "started": time.time(), "call": "c1", "outcome": "sent"}
    done = waiting.finish_sent("a1", claim.token, job_id, result, entry, pace=pace, release_at=time.time())
    # the outcome is not acknowledged: the session must decide its wait (REPLICA_LAG) before letting go
    assert done.status == "ok" and not done.confirmed and done.released is None
    assert ledger.redis.get(ledger.keys.lease("a1")) == claim.token


def test_a_retry_outcome_run_twice_schedules_the_job_once(ledger: Ledger) -> None:
    job_id = one_job(ledger)
    claim = claim_ready(ledger, lease_ttl_s=LEASE_S)[0]
    ledger.begin("a1", claim.token, job_id, lease_ttl_s=LEASE_S, call="c1")
    entry = {"n": 1, "started": time.time(), "call": "c1", "outcome": "retry"}
    for _ in range(2):
        ledger.finish_retry(
            "a1", claim.token, job_id, due_at=time.time() + 60, error_class="transient", error="x", history=entry
        )
    job = ledger.get(job_id)
    assert job is not None and job.state == "retrying" and job.fields["n_transient"] == "1"
    assert len(ledger.history(job_id)) == 1


def test_release_and_touch_run_twice_change_nothing_more(ledger: Ledger) -> None:
    ids = [one_job(ledger) for _ in range(3)]
    claim = claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=3)[0]
    assert ledger.touch("a1", claim.token, lease_ttl_s=LEASE_S) and ledger.touch("a1", claim.token, lease_ttl_s=LEASE_S)
    assert ledger.release("a1", claim.token) == 3
    assert ledger.release("a1", claim.token) == -1  # the lease is gone: nothing is put back twice
    assert ledger.redis.lrange(ledger.keys.queue("a1"), 0, -1) == ids


def test_claim_run_twice_hands_the_account_out_once(ledger: Ledger) -> None:
    ids = [one_job(ledger) for _ in range(2)]
    ledger.tick()
    args = [ledger.prefix, "tok1", int(LEASE_S * 1000), f"{time.time():.6f}", "a1", 5, "0", "0"]
    first = ledger._claim(args=args)
    again = ledger._claim(args=args)  # the same command, resent after its reply was lost
    assert first[0] == "a1" and first[6:] == ids
    assert again == []  # the account is leased: its jobs stay with the first claim (back when its lease ends)
    assert ledger.redis.lrange(ledger.keys.claimed("a1"), 0, -1) == ids


# --- scripts survive a new server (NOSCRIPT) and replica acknowledgements -------------------------------


def test_scripts_are_reloaded_on_a_restarted_server(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedRedis(port=port, directory=tmp_path)
    try:
        client = redis_lib.Redis(port=port, decode_responses=True)
        ledger = Ledger(client, "ns")
        one_job(ledger)
        server.stop_keeping_data()
        server = EmbeddedRedis(port=port, directory=tmp_path)  # empty, no scripts loaded
        job_id = one_job(ledger)  # plain call: redis-py's Script reloads on NOSCRIPT
        claim = claim_ready(ledger, lease_ttl_s=LEASE_S)[0]
        client.script_flush()
        # the acknowledged path (script and WAIT in one round trip) reloads too; no replica here: not confirmed
        ledger.acks = ReplicaAcks(client, 1, 0.05)
        begin = ledger.begin("a1", claim.token, job_id, lease_ttl_s=LEASE_S, call="c1")
        assert begin.status is BeginStatus.GO and not begin.confirmed
        assert client.hget(ledger.keys.job(job_id), "state") == "sending"
    finally:
        server.stop()


@pytest.fixture
def replicated() -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis]]:
    """A primary and its replica (private servers, no Sentinel)."""
    primary, replica = EmbeddedRedis(), EmbeddedRedis()
    try:
        client = redis_lib.Redis(port=primary.port, decode_responses=True)
        client.config_set("repl-diskless-sync-delay", 0)  # the first sync at once, not after 5 s
        redis_lib.Redis(port=replica.port).replicaof("127.0.0.1", primary.port)
        wait_for(lambda: online_replicas(client.info("replication")) == 1, timeout=10, what="the replica")
        yield primary, replica
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
        replica.stop()
        primary.stop()


def test_replicas_unknown_because_the_server_was_away_are_asked_again_at_the_next_write(
    replicated: tuple[EmbeddedRedis, EmbeddedRedis],
) -> None:
    """A worker that could not read the replicas (its first look found the server away) must not go on for
    the refresh interval without their wait once the server is back."""
    primary, _ = replicated
    away = ReplicaAcks(redis_lib.Redis(port=free_port(), socket_connect_timeout=0.2), None, 0.3)
    assert away.current().replicas == 0  # nothing known: no wait can be asked of a server that is away
    away.client = redis_lib.Redis(port=primary.port, decode_responses=True)  # the server is back
    assert away.current().replicas == 1  # asked again, not the unknown answer kept for 5 s


def test_begin_waits_for_the_replica_and_says_when_it_did_not_answer(
    replicated: tuple[EmbeddedRedis, EmbeddedRedis],
) -> None:
    primary, replica = replicated
    client = redis_lib.Redis(port=primary.port, decode_responses=True)
    acks = ReplicaAcks(client, None, 0.3)
    assert acks.current() == Acks(replicas=1, timeout_ms=300, aof_local=None)  # 7.0 has no WAITAOF
    assert ReplicaAcks(client, 0, 0.3).current().replicas == 0  # BROADCAST_REPLICA_ACKS=0 wins
    ledger = Ledger(client, "ns", acks=ReplicaAcks(client, None, 10.0))  # generous: a loaded machine is slow
    ids = [one_job(ledger) for _ in range(2)]
    claim = claim_ready(ledger, lease_ttl_s=LEASE_S, batch_size=2)[0]
    first = ledger.begin("a1", claim.token, ids[0], lease_ttl_s=LEASE_S, call="c1")
    assert first.status is BeginStatus.GO and first.confirmed
    assert redis_lib.Redis(port=replica.port).hget(ledger.keys.job(ids[0]), "state") == b"sending"
    os.kill(replica.proc.pid, signal.SIGSTOP)  # the replica stops acknowledging
    ledger.acks = acks
    second = ledger.begin("a1", claim.token, ids[1], lease_ttl_s=LEASE_S, call="c2")
    assert second.status is BeginStatus.GO and not second.confirmed


def _sim_account(sim: SimulatorServer, client: redis_lib.Redis) -> str:
    """A fresh simulator instance as account a1 of prefix ns; returns the instance."""
    instance = f"inst-fo-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=sim.url) as admin:
        admin.post(
            "/_sim/accounts", json={"vendor": "gewe", "instance": instance, "token": "tok-fo"}
        ).raise_for_status()
    spec = {"vendor": "gewe", "base_url": sim.url + VENDOR_PREFIX["gewe"], "token": "tok-fo", "instance": instance}
    AccountStore(client, "ns").put("a1", AccountSpec.model_validate({**spec, "limits": {"per_minute": 0}}))
    return instance


def _sim_sends(sim: SimulatorServer, instance: str) -> list[dict[str, object]]:
    with httpx.Client(base_url=sim.url) as admin:
        sends: list[dict[str, object]] = admin.get("/_sim/sends", params={"instance": instance}).json()["sends"]
        return sends


def test_an_outcome_a_failover_loses_becomes_an_unknown_outcome_never_a_resend(sim: SimulatorServer) -> None:
    """The replica's link delays (bench/failover.py's proxy); during the vendor call it starts lagging 30 s, so
    FINISH is not acknowledged: the session stops. The primary dies with FINISH still on the way, the
    replica is promoted: it holds the job `sending`, and recovery makes it an unknown outcome."""
    primary, replica = EmbeddedRedis(), EmbeddedRedis()
    proxy = DelayProxy(primary.port, 0.0)
    try:
        client = redis_lib.Redis(port=primary.port, decode_responses=True)
        client.config_set("repl-diskless-sync-delay", 0)
        redis_lib.Redis(port=replica.port).replicaof("127.0.0.1", proxy.port)
        wait_for(lambda: online_replicas(client.info("replication")) == 1, timeout=10, what="the replica")
        fast = {"lease_ttl_s": 3, "lease_margin_s": 0.5, "vendor_read_timeout_s": 1.5, "vendor_deadline_s": 1.5}
        settings = Settings(vendor_allow="127.0.0.0/8", vendor_connect_timeout_s=1, vendor_pool_timeout_s=0.5, **fast)
        ledger = Ledger(client, "ns", acks=ReplicaAcks(client, 1, 1.0))
        instance = _sim_account(sim, client)
        ids = [one_job(ledger) for _ in range(2)]
        claim = claim_ready(ledger, lease_ttl_s=3, batch_size=2)[0]

        def backend(account: Any, http: httpx.Client) -> Any:
            real = backend_for(account, http)

            class LinkLagsDuringTheCall:
                def send(self, to: str, message: Any) -> SendResult:
                    result = real.send(to, message)  # the real call, to the simulator
                    proxy.delay_s = 30.0  # what the primary writes from now on reaches the replica too late
                    return result

            return LinkLagsDuringTheCall()

        with httpx.Client() as http:
            runner = SessionRunner(settings, ledger, AccountStore(client, "ns"), http, backend_factory=backend)
            report = runner.run("a1", claim.token, claim.job_ids)
        assert report.stopped == SessionStop.REPLICA_LAG and report.sent == 1
        assert len(_sim_sends(sim, instance)) == 1  # nothing more is started on an unconfirmed outcome
        primary.proc.kill()  # FINISH (and the release) die with it, still in the link
        promoted = redis_lib.Redis(port=replica.port, decode_responses=True)
        promoted.replicaof("NO", "ONE")
        after = Ledger(promoted, "ns")
        job = after.get(ids[0])
        assert job is not None and job.state == "sending"  # the promoted replica never got the outcome
        lease = after.keys.lease("a1")
        wait_for(lambda: not promoted.exists(lease), timeout=10, what="the session's lease to expire there")
        assert after.recover() == (1, 1)  # the untouched job back in its queue, the sent one unknown
        lost, untouched = after.get(ids[0]), after.get(ids[1])
        assert lost is not None and lost.state == "dead" and lost.fields["reason"] == "unknown_outcome"
        assert untouched is not None and untouched.state == "queued"
        assert promoted.lrange(after.keys.queue("a1"), 0, -1) == [ids[1]]  # the sent one is never queued again
    finally:
        proxy.close()
        replica.stop()
        primary.stop()


def test_an_unacknowledged_begin_never_reaches_the_vendor(
    replicated: tuple[EmbeddedRedis, EmbeddedRedis], sim: SimulatorServer
) -> None:
    primary, replica = replicated
    client = redis_lib.Redis(port=primary.port, decode_responses=True)
    settings = Settings(replica_ack_timeout_s=0.3, vendor_allow="127.0.0.0/8")  # the simulator is on loopback
    ledger = Ledger(client, "ns", acks=ReplicaAcks(client, 1, 0.3))
    instance = _sim_account(sim, client)
    job_id = one_job(ledger)
    claim = claim_ready(ledger, lease_ttl_s=LEASE_S)[0]
    os.kill(replica.proc.pid, signal.SIGSTOP)
    with httpx.Client() as http:
        report = SessionRunner(settings, ledger, AccountStore(client, "ns"), http).run("a1", claim.token, claim.job_ids)
    assert report.stopped == SessionStop.REPLICA_LAG and report.requeued == 1 and report.sent == 0
    assert _sim_sends(sim, instance) == []
    job = ledger.get(job_id)
    assert job is not None and job.state == "queued" and job.attempts == 0
    assert ledger.history(job_id)[-1]["error_class"] == "replica_lag"


@pytest.mark.parametrize(
    "url",
    [
        "sentinel://:Zq9PassW0rdLeak@:26379;sentinel://127.0.0.1:1",  # no host in the part with the password
        "sentinel://u:Zq9PassW0rdLeak@h1:26379;redis://h2:6379",  # a later part of another scheme
        "sentinel://u:Zq9Pass;W0rdLeak@h1:26379",  # a ';' in the password splits it across parts
        "sentinel://u:Zq9PassW0rdLeak@h1:notaport",
        "sentinel://u:Zq9PassW0rdLeak@h1:26379/notadb",
        "sentinel://u:Zq9PassW0rdLeak@[h1:26379",
        "redis://u:Zq9PassW0rdLeak@h1:notaport/0",
        "rediss://u:Zq9Pass%40W0rdLeak@[h1:6379/0",
        "unknown://u:Zq9PassW0rdLeak@h1:6379/0",
    ],
)
def test_a_malformed_redis_url_is_refused_without_showing_its_password(url: str) -> None:
    """Attack finding F1: the error of a bad URL quoted the part that carried the primary's password."""
    with pytest.raises(ValueError) as caught:
        new_redis_client(url, Settings(redis_url="redis://127.0.0.1:1/0"))
    text = str(caught.value)
    assert "BROADCAST_REDIS_URL" in text
    for piece in ("Zq9Pass", "W0rdLeak", "Zq9Pass@W0rdLeak"):
        assert piece not in text, text
