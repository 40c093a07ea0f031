"""``broadcast worker`` as users start it: several processes, each a threads pool announcing its capacity."""

from __future__ import annotations

import collections
import hashlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from scheduler.devtools.devstack import _how_it_ended
from scheduler.intake.producer import Producer
from simulator.server import SimulatorServer
from tests.conftest import Stack
from tests.e2e.test_pipeline import sim_sends
from tests.procs import Proc, wait_for
from worker.store.scripts import source

pytestmark = pytest.mark.e2e  # starts `broadcast` processes


def worker_processes(supervisor: int) -> list[int]:
    """The pids of the worker processes ``broadcast worker`` (pid ``supervisor``) started, in start order."""
    return sorted(int(p) for p in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split())


def two_worker_processes(worker: Proc, *, ready: bool = False) -> list[int]:
    """Wait until ``broadcast worker`` runs two worker processes (and, with ``ready``, both said so); their pids."""
    children: list[int] = []

    def two() -> bool:
        children[:] = worker_processes(worker.proc.pid)
        return len(children) == 2 and (not ready or worker.log_path.read_text().count(" ready.") == 2)

    wait_for(two, timeout=60, what="two worker processes" + (" ready" if ready else ""))
    return children


def test_default_worker_runs_one_process_per_core_and_stops_them_all_on_sigterm(
    redis_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    stack = Stack(redis_url, sim, tmp_path, BROADCAST_WORKER_PROCESSES="2", BROADCAST_WORKER_CONCURRENCY="16")
    try:
        accounts = [stack.add_account(f"mp{i}", "gewe", instance=f"inst-{stack.prefix}-{i}") for i in range(6)]
        producer = Producer(stack.ledger, stack.accounts)
        text = {"kind": "text", "text": "hi"}
        jobs = [
            producer.submit_message(account=a, to=f"wxid_{a}_{n}", message=text).id for a in accounts for n in range(5)
        ]
        # scripts loaded by other tests are forgotten: what is loaded below is the workers' warm-up
        send_path = [hashlib.sha1(source(name).text.encode()).hexdigest() for name in ("begin", "finish_sent")]
        stack.redis.script_flush()
        worker = stack.start("worker")  # no -P/-c/-n: the defaults a user gets
        workers_key = stack.ledger.keys.workers

        def announced() -> dict[str, str]:
            live = stack.redis.zrange(workers_key, 0, -1)
            caps = stack.redis.hmget(stack.ledger.keys.worker_cap, live) if live else []
            return dict(zip(live, caps, strict=True))

        wait_for(lambda: len(announced()) == 2, timeout=60, what="two worker processes")
        nodes = announced()
        # named apart from any other supervisor's on the host (attack round 7: two shared broadcast1@host)
        pid = worker.proc.pid
        assert sorted(name.split("@")[0] for name in nodes) == [f"broadcast1-{pid}", f"broadcast2-{pid}"]
        assert set(nodes.values()) == {"16"}  # each announces its own threads pool
        # each runs on one core of those the command may use, dealt out in turn (BROADCAST_WORKER_PIN_CPUS)
        children = worker_processes(worker.proc.pid)
        cpus = sorted(os.sched_getaffinity(0))
        assert [os.sched_getaffinity(child) for child in children] == [{cpus[0]}, {cpus[1 % len(cpus)]}]
        assert f"2 processes on cores {cpus[0]}, {cpus[1 % len(cpus)]}" in worker.log_path.read_text()  # said at start
        # ready workers have loaded the send path's scripts before their first session (none has run)
        wait_for(lambda: all(stack.redis.script_exists(*send_path)), timeout=30, what="the warm-up's SCRIPT LOAD")

        stack.start("scheduler")
        done = stack.wait_terminal(jobs, timeout=60)
        assert collections.Counter(j.state for j in done) == {"sent": len(jobs)}
        per_recipient = collections.Counter(
            r["to"] for a in accounts for r in sim_sends(stack, instance=f"inst-{stack.prefix}-{a[2:]}")
        )
        assert len(per_recipient) == len(jobs) and set(per_recipient.values()) == {1}

        # SIGTERM to the command alone (as `docker stop` sends it): every process shuts down warm
        worker.proc.send_signal(signal.SIGTERM)
        try:
            code = worker.proc.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker processes did not stop on SIGTERM") from None
        assert code == 0
        assert announced() == {}  # each withdrew its capacity as it stopped
    finally:
        stack.stop()


def test_when_one_worker_process_dies_the_command_stops_the_others_and_fails(
    redis_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    stack = Stack(redis_url, sim, tmp_path, BROADCAST_WORKER_PROCESSES="2", BROADCAST_WORKER_CONCURRENCY="4")
    try:
        worker = stack.start("worker")
        children = two_worker_processes(worker)
        os.kill(children[0], signal.SIGTERM)  # one is stopped alone (by hand, a crash would be SIGKILL): it exits 0
        # the command does not limp on at half capacity: it stops the other and exits non-zero, so a
        # supervisor (Docker's restart policy, systemd) starts the whole again
        assert worker.proc.wait(60) != 0
        assert not Path(f"/proc/{children[1]}").exists() or "zombie" in Path(f"/proc/{children[1]}/status").read_text()
        assert f"process 1 (pid {children[0]}) " in worker.output() and "; stopping the others" in worker.output()
    finally:
        stack.stop()


def test_a_worker_process_killed_by_a_signal_is_named_and_the_command_exits_128_plus_it(
    redis_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """The newcomer's dev stack said "worker: exit 9" for a process killed by SIGKILL: the command now says
    which process a signal killed and exits as a shell reports it (137), which `broadcast dev` reads back."""
    stack = Stack(redis_url, sim, tmp_path, BROADCAST_WORKER_PROCESSES="2", BROADCAST_WORKER_CONCURRENCY="4")
    try:
        worker = stack.start("worker")
        children = two_worker_processes(worker)
        os.kill(children[1], signal.SIGKILL)
        assert worker.proc.wait(60) == 128 + signal.SIGKILL
        assert f"process 2 (pid {children[1]}) was killed by SIGKILL; stopping the others" in worker.output()
        assert "被 SIGKILL 终止" in worker.output()
        assert _how_it_ended(worker.proc.returncode) == "killed by SIGKILL (a worker process)"
    finally:
        stack.stop()


def test_a_worker_whose_consumer_stopped_taking_messages_starts_itself_again(
    redis_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """Celery's Redis consumer can stop for good after a few broker drops in a row (a failover): here it is
    told to stop consuming (remote control), as if it had; messages wait, slots are free, nothing runs."""
    from celery import Celery

    stack = Stack(redis_url, sim, tmp_path, BROADCAST_CONSUMER_STALL_S="3")
    control = Celery("control", broker=redis_url)
    try:
        account = stack.add_account("cw", "gewe", instance=f"inst-{stack.prefix}")
        worker = stack.start_worker()
        workers_key = stack.ledger.keys.workers
        wait_for(lambda: stack.redis.zcard(workers_key) == 1, timeout=60, what="the worker's capacity")
        queue = f"{stack.prefix}.send"
        hostname = stack.redis.zrange(workers_key, 0, -1)[0]
        answers: list[Any] = []

        # its capacity entry can come before its remote-control consumer listens (a broadcast then gets no
        # reply), and one ask may wait too little on a busy machine: asked again until it answers
        def cancelled() -> bool:
            answers[:] = control.control.cancel_consumer(queue, destination=[hostname], reply=True, timeout=5)
            return bool(answers)

        wait_for(cancelled, timeout=60, what="the worker to answer the remote control")
        assert "ok" in next(iter(answers[0].values())), answers  # it consumes nothing from now on
        pid = worker.proc.pid

        producer = Producer(stack.ledger, stack.accounts)
        jobs = [producer.submit_message(account=account, to=f"wxid_cw_{n}", message={"kind": "text", "text": "hi"}).id
                for n in range(3)]  # fmt: skip
        stack.start("scheduler")
        done = stack.wait_terminal(jobs, timeout=120)
        assert collections.Counter(j.state for j in done) == {"sent": 3}
        assert "the consumer took no message for 3 s" in worker.output()  # said why, then started again
        assert worker.proc.poll() is None and worker.proc.pid == pid  # the same process, a fresh image
        sends = collections.Counter(r["to"] for r in sim_sends(stack, instance=f"inst-{stack.prefix}"))
        assert sends == {f"wxid_cw_{n}": 1 for n in range(3)}
    finally:
        control.close()
        stack.stop()


def test_a_hang_up_sent_to_the_group_stops_every_worker_process_none_restarts_orphaned(
    redis_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """Attack round 7: a closed terminal's SIGHUP reached the supervisor (which died of it) and each worker
    process, which Celery restarted in place, then ran on with no parent, pinned to its core."""
    stack = Stack(redis_url, sim, tmp_path, BROADCAST_WORKER_PROCESSES="2", BROADCAST_WORKER_CONCURRENCY="4")
    try:
        worker = stack.start("worker")
        children = two_worker_processes(worker, ready=True)
        os.killpg(worker.proc.pid, signal.SIGHUP)
        assert worker.proc.wait(60) == 0  # asked to stop: a clean warm shutdown
        for child in children:
            wait_for(lambda c=child: not Path(f"/proc/{c}").exists(), timeout=30, what=f"worker process {child} gone")
        assert "Restarting celery worker" not in worker.log_path.read_text()
    finally:
        stack.stop()
