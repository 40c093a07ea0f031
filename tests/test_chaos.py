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
from tests.test_pipeline_e2e import add_fault, clear_faults, sim_sends, submit_many


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
        stack.start_worker()
        stack.start("scheduler")
        rng = random.Random(11)
        for crash in (False, True):
            time.sleep(rng.uniform(1.5, 2.5))
            # first a clean restart (SIGTERM), then a crash (SIGKILL): appendfsync always keeps every write
            server.stop_keeping_data(crash=crash)
            time.sleep(rng.uniform(0.3, 1.0))
            server = EmbeddedRedis(appendonly=True, port=port, directory=data)
        jobs = stack.wait_terminal(job_ids, timeout=150)
        logs = stack.logs()
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
    # the restarts hit while work was under way: the dispatcher saw Redis go away
    assert "redis unavailable" in logs or "Connection" in logs, logs[-3000:]
    print(f"states={dict(states)}")
