"""Chaos, bounded for CI: Redis (AOF, fsync always) restarted, then killed, while workers send."""

from __future__ import annotations

import collections
import random
import time
from pathlib import Path

import pytest

from scheduler.devtools.embedded import EmbeddedRedis, free_port
from simulator.server import SimulatorServer
from tests.conftest import Stack
from tests.e2e.test_pipeline import add_fault, clear_faults, sim_sends, submit_many
from tests.procs import wait_for

pytestmark = pytest.mark.e2e  # starts `broadcast` processes


@pytest.mark.timeout(240)
def test_redis_restarts_lose_no_job_and_send_none_twice(sim: SimulatorServer, tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "redis-data"
    data.mkdir()
    server = EmbeddedRedis(appendonly=True, port=port, directory=data)
    stack = Stack(server.url, sim, tmp_path)
    instances = [f"inst-{stack.prefix}-r{i}" for i in range(2)]
    try:
        accounts = [
            stack.add_account(f"r{i}", vendor, instance=inst)
            for i, (vendor, inst) in enumerate(zip(["gewe", "ecloud"], instances, strict=True))
        ]
        for inst in instances:
            add_fault(stack, kind="slow", instance=inst, delay_s=0.03)
        job_ids = [job for account in accounts for job in submit_many(stack, account, 150)]
        worker = stack.start_worker()
        scheduler = stack.start("scheduler")
        rng = random.Random(11)

        def sent() -> int:
            return sum(len(sim_sends(stack, instance=inst)) for inst in instances)

        wait_for(lambda: sent() > 0, timeout=60, what="the first sends")  # work under way, not start-up
        sent_at_restart = []
        for crash in (False, True):
            time.sleep(rng.uniform(1.0, 2.0))
            sent_at_restart.append(sent())
            # first a clean restart (SIGTERM), then a crash (SIGKILL): appendfsync always keeps every write
            server.stop_keeping_data(crash=crash)
            time.sleep(rng.uniform(0.3, 1.0))
            server = EmbeddedRedis(appendonly=True, port=port, directory=data)
        jobs = stack.wait_terminal(job_ids, timeout=150)
        dispatcher_log, worker_log = scheduler.output(), worker.output()
    finally:
        clear_faults(stack)
        stack.stop()
        server.stop()
    records = [r for inst in instances for r in sim_sends(stack, instance=inst)]
    per_recipient = collections.Counter(r["to"] for r in records)
    assert max(per_recipient.values()) == 1, "a message was sent twice"
    states = collections.Counter(j.state for j in jobs)
    assert states["sent"] + states["dead"] == len(job_ids), states
    by_to = {r["to"]: r for r in records}
    for job in jobs:
        if job.state == "sent":
            assert job.fields["new_msg_id"] == str(by_to[job.to]["new_msg_id"])
        else:
            assert job.fields["reason"] == "unknown_outcome", job.fields
    assert states["dead"] <= 4, states  # at most the sends in flight at each restart
    # the restarts hit while work was under way: sends before and after the first, the dispatcher saw Redis go
    # away and the worker lost its broker connection (not just any line with "Connection": "Connected to" is one)
    assert 0 < sent_at_restart[0] < len(job_ids), sent_at_restart
    assert "redis unavailable" in dispatcher_log, dispatcher_log[-3000:]
    assert "consumer: Connection to broker lost" in worker_log, worker_log[-3000:]
    print(f"states={dict(states)} sent_at_restart={sent_at_restart}")
