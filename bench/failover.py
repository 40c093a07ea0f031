"""Chaos on one machine: a Redis failover under a running campaign, counted at the vendor (issue 21).

The topology, all on loopback, on free ports, in a temporary directory:

* a primary and one replica (``--replicas``; ``redis-server``), the replica's link to the primary through a **delaying TCP
  proxy** (asyncio, in this process): every byte the primary streams to the replica arrives ``--lag-ms``
  later, so the replica is always behind, as a loaded replica across a network is; when the primary goes
  away, what had not reached the replica is dropped, as with a host that dies (the Sentinels reconnect
  the nodes directly after a switch, so the later events run on a direct link);
* three Sentinels (``redis-server --sentinel``, quorum 2, ``down-after-milliseconds`` 1000);
* the vendor simulator, ``broadcast worker``, ``broadcast scheduler`` and ``broadcast api`` with
  ``BROADCAST_REDIS_URL=sentinel://…;sentinel://…;sentinel://…`` and ``BROADCAST_REDIS_MASTER_NAME``.

A campaign of ``--accounts`` × ``--per-account`` jobs starts; once sends flow, the events run in order
(``--events``, default all three), each once a replica is in sync again:

* ``kill``: SIGKILL the primary; once the Sentinels promoted the replica, the dead server is started again
  (empty) and the Sentinels make it a replica of the new primary;
* ``stop``: SIGSTOP the primary for 3 × down-after (a hung primary), then SIGCONT: it comes back as a
  replica;
* ``failover``: ``SENTINEL FAILOVER`` (a planned switch).

Then every job must end (sent or dead). From the simulator's own records: duplicates (a recipient that
received twice), sends missing for jobs marked ``sent``, jobs that never ended, the unknown outcomes
(dead ``unknown_outcome``: at most once at the vendor each), and the pause in sending around each event
(the longest gap between two consecutive sends of the whole campaign, from 1 s before the event to the
next one). The API, which went through the same switches, must then answer the campaign's counts.

``--replica-acks 0`` turns the replica acknowledgement off, to show what it prevents (docs/benchmarks.md).
Exit code 1 when a duplicate, a missing send or an unfinished job is seen.

Run: ``.venv/bin/python -m bench.failover`` (defaults: 6 accounts × 100 jobs 0.3 s apart, all three
events, BROADCAST_REPLICA_ACKS unset) or e.g.
``--replica-acks 0 --events kill --runs 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from scheduler.devtools.embedded import free_port, redis_server_binary, terminate

MASTER = "broadcast"
DOWN_AFTER_MS = 1000
EVENTS = ("kill", "stop", "failover")
ROOT = Path(__file__).resolve().parent.parent


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if predicate():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- the replication link's delay --------------------------------------------------------------------


class DelayProxy:
    """A TCP proxy on loopback whose server-to-client direction arrives ``delay_s`` late (order kept)."""

    def __init__(self, upstream_port: int, delay_s: float) -> None:
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.run_forever()

    async def _serve(self) -> None:
        await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self._ready.set()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer, False), self._pipe(up_reader, writer, True))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delayed: bool) -> None:
        """Copy one direction; the server's bytes each ``delay_s`` (read at arrival: tests change it) late."""
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await chunks.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                chunks.put_nowait((time.monotonic() + (self.delay_s if delayed else 0.0), data))
        except OSError:
            pass
        if delayed:
            # the primary went away: what had not reached the replica yet is lost with it, as with a host
            # that dies or a link that breaks (a SIGKILLed process alone would still have its bytes delivered)
            sender.cancel()
        else:
            chunks.put_nowait((0.0, b""))
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await sender
        writer.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


# --- the servers ----------------------------------------------------------------------------------------


class Server:
    """One ``redis-server`` (data node or Sentinel) from a config file in its own directory."""

    def __init__(self, directory: Path, lines: list[str], *, sentinel: bool = False) -> None:
        self.port = free_port()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / ("sentinel.conf" if sentinel else "redis.conf")
        common = [f"port {self.port}", "bind 127.0.0.1", f'dir "{self.dir}"', "daemonize no", "loglevel notice"]
        self.conf.write_text("\n".join(common + lines) + "\n")
        self.sentinel = sentinel
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, *options: str) -> None:
        args = [redis_server_binary(), str(self.conf), *options] + (["--sentinel"] if self.sentinel else [])
        with (self.dir / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = self.client()
        wait_until(lambda: bool(client.ping()), 10, f"redis on port {self.port}", 0.05)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            if sig == signal.SIGKILL:
                self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None:
            self.signal(signal.SIGCONT)  # a stopped server cannot take a SIGTERM
            terminate(self.proc)


DATA_NODE = ['save ""', "appendonly no", "repl-diskless-sync-delay 0", "maxmemory-policy noeviction"]


class Topology:
    """A primary, a replica behind a delaying proxy, three Sentinels."""

    def __init__(self, root: Path, lag_s: float, replicas: int = 1, down_after_ms: int = DOWN_AFTER_MS) -> None:
        self.down_after_ms = down_after_ms
        self.nodes = [Server(root / f"node-{i}", DATA_NODE) for i in range(1 + replicas)]
        primary = self.nodes[0]
        self.proxies = [DelayProxy(primary.port, lag_s) for _ in range(replicas)] if lag_s > 0 else []
        for i, replica in enumerate(self.nodes[1:]):
            replica.client().replicaof("127.0.0.1", self.proxies[i].port if self.proxies else primary.port)
        wait_until(lambda: self.in_sync(primary, replicas), 20, "the replicas' first sync")
        monitor = [
            f"sentinel monitor {MASTER} 127.0.0.1 {primary.port} 2",
            f"sentinel down-after-milliseconds {MASTER} {down_after_ms}",
            f"sentinel failover-timeout {MASTER} 4000",
            f"sentinel parallel-syncs {MASTER} 1",
        ]
        self.sentinels = [Server(root / f"sentinel-{i}", monitor, sentinel=True) for i in range(3)]
        wait_until(self._sentinels_see_the_replica, 20, "the Sentinels to find the replica")

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{s.port}" for s in self.sentinels)

    def primary_port(self) -> int:
        """The primary as the Sentinels name it now."""
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                addr = sentinel.client().sentinel_get_master_addr_by_name(MASTER)
                if addr:
                    return int(addr[1])
        raise RuntimeError("no Sentinel answers")

    def node(self, port: int) -> Server:
        return next(n for n in self.nodes if n.port == port)

    @staticmethod
    def in_sync(primary: Server, replicas: int = 1) -> bool:
        info = primary.client().info("replication")
        online = sum(
            1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        )
        return info.get("role") == "master" and online >= replicas

    def _sentinels_see_the_replica(self) -> bool:
        """Every Sentinel knows a replica it could promote (up, with a priority above 0)."""
        return all(
            any(
                int(r.get("slave-priority", r.get("replica-priority", 100))) > 0 and "s_down" not in str(r.get("flags"))
                for r in s.client().sentinel_slaves(MASTER)
            )
            for s in self.sentinels
        )

    def ready(self) -> bool:
        """A primary named by the Sentinels, with a replica in sync that the Sentinels know."""
        return self.in_sync(self.node(self.primary_port())) and self._sentinels_see_the_replica()

    def switched(self, old_port: int) -> Callable[[], bool]:
        return lambda: (
            self.primary_port() != old_port
            and self.node(self.primary_port()).client().info("replication").get("role") == "master"
        )

    def event(self, name: str) -> None:
        """Run one event and return once the Sentinels name a new, writable primary."""
        old = self.primary_port()
        node = self.node(old)
        if name == "kill":
            node.signal(signal.SIGKILL)
            wait_until(self.switched(old), 30, "a new primary after SIGKILL")
            # empty: the Sentinels make it a replica of the new primary. Until it holds the data it must not be
            # promoted: on a loaded machine the new primary once missed down-after while serving the full sync,
            # and the Sentinels promoted this empty node, which wiped every job (CI, 2026-12-05)
            node.start("--replica-priority", "0")
            wait_until(lambda: self.in_sync(self.node(self.primary_port())), 60, "the restarted node in sync")
            client = node.client()
            client.config_set("replica-priority", 100)
            client.execute_command("CONFIG", "REWRITE")  # the Sentinels rewrite it too: keep 100 there
        elif name == "stop":
            node.signal(signal.SIGSTOP)
            time.sleep(3 * self.down_after_ms / 1000)
            wait_until(self.switched(old), 30, "a new primary while the old one hangs")
            node.signal(signal.SIGCONT)
        elif name == "failover":
            self.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER)
            wait_until(self.switched(old), 30, "a new primary after SENTINEL FAILOVER")
        else:
            raise ValueError(name)

    def stop(self) -> None:
        for server in [*self.sentinels, *self.nodes]:
            server.stop()
        for proxy in self.proxies:
            proxy.close()


def _stall_report(client: redis.Redis, settings: Any, workdir: Path) -> str:
    """What a stalled campaign looks like from outside: the Celery queue's length and each log's last lines
    (a CI run once saw no send for 120 s after a SIGKILL'd primary, with nothing else to go on)."""
    lines: list[str] = []
    with contextlib.suppress(redis.RedisError):
        queued = {key: client.llen(key) for key in client.scan_iter(f"{settings.celery_queue}*", count=1000)}
        lines.append(f"queued messages: {queued}")
    sentinel_log = workdir / "redis" / "sentinel-0" / "server.log"
    if sentinel_log.exists():  # which node the Sentinels made primary, and when
        switches = [line for line in sentinel_log.read_text(errors="replace").splitlines() if "+switch-master" in line]
        lines.append("--- Sentinel switches\n" + "\n".join(switches))
    for log in sorted(workdir.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-25:]
        lines.append(f"--- {log.name} (last {len(tail)} lines)\n" + "\n".join(line[:300] for line in tail))
    return "\n".join(lines)


# --- one run ----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run showed, counted at the simulator."""

    replica_acks: int
    jobs: int
    events: list[str]
    sent: int = 0
    dead_unknown: int = 0
    dead_other: int = 0
    unfinished: int = 0
    duplicates: int = 0
    #: jobs marked sent that the simulator never received
    missing: int = 0
    #: unknown outcomes the simulator received more than once (must be 0)
    unknown_resent: int = 0
    #: unknown outcomes that did reach the simulator (once)
    unknown_delivered: int = 0
    #: the API (``broadcast api`` on the same Sentinels) answered the campaign's counts after the events
    api_counts: dict[str, int] = field(default_factory=dict)
    #: the longest gap between two sends of the campaign from 1 s before each event to the next (seconds)
    pauses: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    #: when each event started and when each duplicated recipient was received (seconds after the first send)
    marks: dict[str, float] = field(default_factory=dict)
    duplicate_times: list[list[float]] = field(default_factory=list)
    #: duplicates by the event their first send followed ('before': none yet)
    duplicates_after: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.duplicates == 0 and self.missing == 0 and self.unfinished == 0 and self.unknown_resent == 0


def run_once(
    *,
    sim_url: str,
    accounts: int,
    per_account: int,
    events: list[str],
    replica_acks: int,
    lag_s: float,
    workdir: Path,
    gap_s: float = 0.3,
    replicas: int = 1,
    timeout: float = 240.0,
    down_after_ms: int = DOWN_AFTER_MS,
    start: Callable[[str, list[str], dict[str, str]], Any] | None = None,
    stop: Callable[[Any], None] | None = None,
) -> Outcome:
    """One campaign through the events; processes via ``start(name, args, env)`` (default: bench._procs)."""
    from scheduler.intake.campaigns import Campaigns
    from worker.messages import TextMessage
    from worker.runtime.connections import new_redis_client
    from worker.settings import Settings
    from worker.store.accounts import AccountSpec, AccountStore
    from worker.store.ledger import TERMINAL, Ledger

    procs = None
    if start is None or stop is None:
        from bench._procs import Procs

        procs = Procs(workdir)
        start = lambda name, args, env: procs.cli(name, args, env)  # noqa: E731
        stop = procs.stop
    topology = Topology(workdir / "redis", lag_s, replicas, down_after_ms)
    prefix = f"fo{os.getpid()}{int(time.time()) % 100000}"
    env = {
        "BROADCAST_REDIS_URL": topology.url,
        "BROADCAST_REDIS_MASTER_NAME": MASTER,
        "BROADCAST_KEY_PREFIX": prefix,
        **({"BROADCAST_REPLICA_ACKS": str(replica_acks)} if replica_acks >= 0 else {}),
        "BROADCAST_REPLICA_ACK_TIMEOUT_S": "1",
        "BROADCAST_LOG_LEVEL": "WARNING",
        # the simulator listens on loopback, which vendor calls may not reach in prod (BROADCAST_VENDOR_DENY=auto)
        "BROADCAST_VENDOR_ALLOW": "127.0.0.0/8",
        # short leases and vendor timeouts: recovery after a switch within seconds (tests/conftest.py FAST_ENV)
        "BROADCAST_LEASE_TTL_S": "4",
        "BROADCAST_LEASE_MARGIN_S": "0.5",
        "BROADCAST_VENDOR_READ_TIMEOUT_S": "2",
        "BROADCAST_VENDOR_CONNECT_TIMEOUT_S": "1",
        "BROADCAST_VENDOR_POOL_TIMEOUT_S": "0.5",
        "BROADCAST_VENDOR_DEADLINE_S": "2",
        "BROADCAST_RETRY_BASE_S": "0.2",
        "BROADCAST_RETRY_MAX_S": "1",
        "BROADCAST_WORKER_CONCURRENCY": "32",
        "BROADCAST_WORKER_PROCESSES": "1",
        "BROADCAST_BATCH_SIZE": "10",
        "BROADCAST_AUTO_PAUSE_RATIO": "0",
        "BROADCAST_AUTO_PAUSE_STREAK": "0",
    }
    settings = Settings(**{k.removeprefix("BROADCAST_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    client = new_redis_client(topology.url, settings)
    ledger = Ledger(client, prefix)
    store = AccountStore(client, prefix)
    admin = httpx.Client(base_url=sim_url, timeout=10)
    running: list[Any] = []
    began = time.monotonic()
    outcome = Outcome(replica_acks=replica_acks, jobs=accounts * per_account, events=list(events))
    instances = [f"fo-{prefix}-{i}" for i in range(accounts)]
    try:
        for i, instance in enumerate(instances):
            token = f"tok-{instance}"
            admin.post(
                "/_sim/accounts", json={"vendor": "gewe", "instance": instance, "token": token}
            ).raise_for_status()
            # each send takes 20 ms at the vendor, sends of an account `gap_s` apart: the campaign lasts long
            # enough for the events
            admin.post("/_sim/faults", json={"kind": "slow", "instance": instance, "delay_s": 0.02}).raise_for_status()
            spec = {"vendor": "gewe", "base_url": f"{sim_url}/gewe/v2/api", "token": token, "instance": instance}
            limits = {"per_minute": 100_000, "min_interval_s": gap_s, "jitter_s": 0}
            store.put(f"acct{i}", AccountSpec.model_validate({**spec, "limits": limits}))
        campaigns = Campaigns(ledger, store, settings=settings)
        recipients = [{"to": f"wxid_{prefix}_{n:05d}"} for n in range(accounts * per_account)]
        created = campaigns.create(
            name="failover", message=TextMessage(text="hello"), recipients=recipients,
            accounts=[f"acct{i}" for i in range(accounts)],
        )  # fmt: skip
        job_ids = [str(j) for j in client.lrange(ledger.keys.campaign_jobs(created.id), 0, -1)]
        running.append(start("worker", ["worker", "--without-gossip", "--without-mingle"], env))
        running.append(start("scheduler", ["scheduler"], env))
        api_port = free_port()
        api_token = f"failover-{prefix}"
        running.append(start("api", ["api", "--port", str(api_port)], {**env, "BROADCAST_API_TOKEN": api_token}))

        def sent() -> list[dict[str, Any]]:
            return [
                r for inst in instances for r in admin.get("/_sim/sends", params={"instance": inst}).json()["sends"]
            ]

        wait_until(lambda: len(sent()) >= 20, 60, "the first sends")
        marks: dict[str, float] = {}
        for name in events:
            wait_until(topology.ready, 60, "a replica in sync before the next event")
            before = len(sent())
            # a liveness wait, not a goal (the pause per switch is measured from the marks): 120 s, as a
            # loaded 2-core machine once needed over 60 s after a SIGKILL'd primary
            try:
                wait_until(lambda at=before: len(sent()) >= at + 20, 120, "sends flowing before the next event")
            except TimeoutError as stalled:
                raise TimeoutError(f"{stalled} ({name}): {_stall_report(client, settings, workdir)}") from None
            marks[name] = time.time()
            say(f"  {name}: at {len(sent())} sends of {outcome.jobs}")
            topology.event(name)
            time.sleep(1.0)

        def finished() -> bool:
            return all(j is not None and j.state in TERMINAL for j in ledger.get_many(job_ids))

        with contextlib.suppress(TimeoutError):
            wait_until(finished, timeout, "every job to end", 0.5)
        jobs = [j for j in ledger.get_many(job_ids) if j is not None]
        # the API went through the same switches: it answers from the new primary, never having exited
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as api:
            answer = api.get(f"/v1/campaigns/{created.id}", headers={"Authorization": f"Bearer {api_token}"})
            if answer.status_code == 200:
                counts = answer.json().get("counts") or {}
                outcome.api_counts = {k: int(v) for k, v in counts.items() if isinstance(v, int)}
        states = collections.Counter(j.state for j in jobs)
        if len(jobs) < len(job_ids) or set(states) - set(TERMINAL):
            say(f"  unfinished: {len(job_ids) - len(jobs)} missing, states {dict(states)}; logs in {workdir}")
        records = sent()
        outcome.seconds = round(time.monotonic() - began, 1)
    finally:
        for proc in running:
            stop(proc)
        admin.close()
        topology.stop()
    per_to = collections.Counter(r["to"] for r in records)
    outcome.duplicates = sum(n - 1 for n in per_to.values() if n > 1)
    for job in jobs:
        if job.state == "sent":
            outcome.sent += 1
            outcome.missing += per_to[job.to] == 0
        elif job.state == "dead" and job.fields.get("reason") == "unknown_outcome":
            outcome.dead_unknown += 1
            outcome.unknown_resent += per_to[job.to] > 1
            outcome.unknown_delivered += per_to[job.to] == 1
        elif job.state == "dead":
            outcome.dead_other += 1
    outcome.unfinished = outcome.jobs - outcome.sent - outcome.dead_unknown - outcome.dead_other
    times = sorted(float(r["received_at"]) for r in records)
    first = times[0] if times else 0.0
    outcome.marks = {name: round(at - first, 2) for name, at in marks.items()}
    received = collections.defaultdict(list)
    for r in records:
        received[r["to"]].append(round(float(r["received_at"]) - first, 2))
    twice = [sorted(t) for t in received.values() if len(t) > 1]
    outcome.duplicate_times = twice[:20]
    after: collections.Counter[str] = collections.Counter()
    for t in twice:
        after[([name for name, at in outcome.marks.items() if at <= t[0]] or ["before"])[-1]] += len(t) - 1
    outcome.duplicates_after = dict(after)
    starts = list(marks.values())
    for i, (name, at) in enumerate(marks.items()):
        until = starts[i + 1] if i + 1 < len(starts) else float("inf")
        window = [t for t in times if at - 1.0 <= t < until]
        gaps = [b - a for a, b in itertools.pairwise(window)]
        outcome.pauses[name] = round(max(gaps), 2) if gaps else float("nan")
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=6)
    parser.add_argument("--per-account", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between two sends of an account")
    parser.add_argument("--events", default=",".join(EVENTS), help="comma-separated, in order: kill,stop,failover")
    parser.add_argument("--replica-acks", type=int, default=-1, help="BROADCAST_REPLICA_ACKS (-1: unset, automatic)")
    parser.add_argument("--lag-ms", type=float, default=150.0, help="delay on the replication link")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    events = [e for e in args.events.split(",") if e]
    if unknown := set(events) - set(EVENTS):
        parser.error(f"unknown events: {', '.join(sorted(unknown))}")
    from simulator.server import SimulatorServer

    results = []
    with SimulatorServer(seed=21) as sim:
        for run in range(args.runs):
            say(f"run {run + 1}/{args.runs}: replica acks {args.replica_acks}, lag {args.lag_ms:g} ms, events {events}")
            with tempfile.TemporaryDirectory(prefix="broadcast-failover-") as tmp:
                outcome = run_once(
                    sim_url=sim.url, accounts=args.accounts, per_account=args.per_account, events=events,
                    replica_acks=args.replica_acks, lag_s=args.lag_ms / 1000, workdir=Path(tmp), gap_s=args.gap, replicas=args.replicas,
                )  # fmt: skip
            results.append(outcome)
            say("  " + json.dumps(asdict(outcome)))
    say("")
    say(
        "| run | jobs | sent | unknown (delivered) | other dead | unfinished | duplicates (by event) | missing | pauses (s) |"
    )
    say("|---|---|---|---|---|---|---|---|---|")
    for i, o in enumerate(results, 1):
        pauses = ", ".join(f"{k} {v}" for k, v in o.pauses.items())
        say(
            f"| {i} | {o.jobs} | {o.sent} | {o.dead_unknown} ({o.unknown_delivered}) | {o.dead_other} | "
            f"{o.unfinished} | {o.duplicates} {o.duplicates_after or ''} | {o.missing} | {pauses} |"
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in results], indent=2))
    sys.exit(0 if all(o.ok for o in results) else 1)


if __name__ == "__main__":
    main()
