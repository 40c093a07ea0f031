"""End-to-end throughput: wechat-broadcast vs a plain Celery task vs a raw aiohttp loop, one run.

Everything runs on this machine against the bundled simulator (GeWe ``postText``), pacing off:

* **broadcast** — N jobs submitted through the producer, dispatched by ``broadcast scheduler``, sent by
  ``broadcast worker`` with its defaults (one process per core, a threads pool each), with its ledger
  bookkeeping (state machine, ids, history).
* **plain Celery (peer)** — N ``plain.post_text`` tasks on a prefork ``-c 2`` worker, no bookkeeping.
* **raw aiohttp (ceiling)** — N POSTs from one asyncio loop at concurrency 32.

Run: ``.venv/bin/python -m bench.throughput --jobs 5000`` (prints jobs/s, p50/p99 latency and ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from scheduler.devtools.embedded import EmbeddedRedis, free_port
from scheduler.intake.producer import Producer
from worker.messages import TextMessage
from worker.store.accounts import AccountSpec, AccountStore
from worker.store.keys import Keys
from worker.store.ledger import TERMINAL, Ledger

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def sim_count(sim_url: str, instance: str) -> int:
    return len(httpx.get(f"{sim_url}/_sim/sends", params={"instance": instance}, timeout=30).json()["sends"])


def wait_until(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark did not finish in time")
        time.sleep(0.05)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_broadcast(
    n: int, accounts: int, redis_url: str, sim_url: str, tmp: Path, concurrency: int, round_no: int = 0
) -> dict[str, float]:
    prefix = f"bench{round_no}"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ledger, store = Ledger(client, prefix), AccountStore(client, prefix)
    ids = []
    for a in range(accounts):
        instance = f"bench{round_no}-{a}"
        httpx.post(
            f"{sim_url}/_sim/accounts", json={"vendor": "gewe", "instance": instance, "token": TOKEN}
        ).raise_for_status()
        spec = AccountSpec(
            vendor="gewe", base_url=f"{sim_url}/gewe/v2/api", token=TOKEN, instance=instance, limits={"per_minute": 0}
        )  # type: ignore[arg-type]
        store.put(f"bench-{a}", spec)
        ids.append(f"bench-{a}")
    env = {
        "BROADCAST_REDIS_URL": redis_url,
        "BROADCAST_KEY_PREFIX": prefix,
        "BROADCAST_LOG_LEVEL": "WARNING",
        "BROADCAST_VENDOR_ALLOW": "127.0.0.0/8",
    }
    worker = spawn(
        [
            sys.executable,
            "-m",
            "scheduler.cli.app",
            "worker",  # as users start it: its defaults (one process per core, threads)
            "--without-gossip",
            "--without-mingle",
        ],
        env,
        tmp / "worker.log",
    )
    sched = spawn([sys.executable, "-m", "scheduler.cli.app", "scheduler"], env, tmp / "scheduler.log")
    time.sleep(4)  # worker boot
    producer = Producer(ledger, store)
    message = TextMessage(text="双十一大促, 全场五折")
    started = time.time()
    job_ids = [
        producer.submit_message(account=ids[i % accounts], to=f"wxid_{i:06d}", message=message).id for i in range(n)
    ]
    submitted = time.time()

    def done() -> bool:
        pipe = client.pipeline(transaction=False)
        for job_id in job_ids[-200:]:
            pipe.hget(Keys(prefix).job(job_id), "state")
        return all(s in TERMINAL for s in pipe.execute()) and all(
            s in TERMINAL for s in (j.state for j in ledger.get_many(job_ids[::50]) if j)
        )

    wait_until(done, timeout=600)
    jobs = [j for j in ledger.get_many(job_ids) if j]
    finished = max(float(j.fields.get("sent_at", 0)) for j in jobs)
    stop(worker)
    stop(sched)
    sent = sum(1 for j in jobs if j.state == "sent")
    latencies = [float(j.fields["sent_at"]) - float(j.fields["created"]) for j in jobs if j.state == "sent"]
    return {
        "sent": sent,
        "seconds": finished - started,
        "rate": sent / (finished - started),
        "submit_rate": n / (submitted - started),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * pct(latencies, 0.99),
    }


def run_plain_celery(
    n: int, redis_url: str, sim_url: str, tmp: Path, concurrency: int, round_no: int = 0
) -> dict[str, float]:
    from bench.plain_celery import app, post_text

    app.conf.broker_url = redis_url
    instance = f"plain-{round_no}"
    httpx.post(
        f"{sim_url}/_sim/accounts", json={"vendor": "gewe", "instance": instance, "token": TOKEN}
    ).raise_for_status()
    env = {"BENCH_REDIS_URL": redis_url}
    worker = spawn(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.plain_celery",
            "worker",
            "-c",
            str(concurrency),
            "-Q",
            "plain-bench",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "WARNING",
        ],
        env,
        tmp / "plain.log",
    )
    time.sleep(4)
    url = f"{sim_url}/gewe/v2/api/message/postText"
    started = time.time()
    with app.producer_or_acquire() as producer:
        for i in range(n):
            post_text.apply_async(
                args=[url, TOKEN, {"appId": instance, "toWxid": f"wxid_{i:06d}", "content": "双十一大促"}],
                producer=producer,
            )
    wait_until(lambda: sim_count(sim_url, instance) >= n, timeout=600)
    elapsed = time.time() - started
    stop(worker)
    return {"sent": n, "seconds": elapsed, "rate": n / elapsed}


async def _aiohttp_loop(n: int, sim_url: str, concurrency: int, instance: str) -> float:
    import aiohttp

    url = f"{sim_url}/gewe/v2/api/message/postText"
    counter = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one_worker() -> None:
            for i in counter:
                body = {"appId": instance, "toWxid": f"wxid_{i:06d}", "content": "双十一大促"}
                async with session.post(url, json=body, headers={"X-GEWE-TOKEN": TOKEN}) as resp:
                    data = await resp.json()
                    assert data["ret"] == 200

        started = time.time()
        await asyncio.gather(*(one_worker() for _ in range(concurrency)))
        return time.time() - started


def run_aiohttp(n: int, sim_url: str, concurrency: int = 32, round_no: int = 0) -> dict[str, float]:
    instance = f"raw-{round_no}"
    httpx.post(
        f"{sim_url}/_sim/accounts", json={"vendor": "gewe", "instance": instance, "token": TOKEN}
    ).raise_for_status()
    elapsed = asyncio.run(_aiohttp_loop(n, sim_url, concurrency, instance))
    return {"sent": n, "seconds": elapsed, "rate": n / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--accounts", type=int, default=8, help="sending accounts (one send in flight each)")
    parser.add_argument("--concurrency", type=int, default=2, help="the plain Celery peer's prefork -c")
    parser.add_argument("--only", choices=["broadcast", "plain", "raw"], action="append")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds; each sender runs once per round, medians reported"
    )
    args = parser.parse_args()
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    names = {
        "broadcast": "broadcast (ledger, retries, batches)",
        "plain": "plain Celery task (peer)",
        "raw": "raw aiohttp, concurrency 32 (ceiling)",
    }
    only = [k for k in names if k in set(args.only or names)]
    runs: dict[str, list[dict[str, float]]] = {names[k]: [] for k in only}
    print(f"command: python -m bench.throughput {' '.join(sys.argv[1:])}".rstrip(), f"| cores: {os.cpu_count()}")
    with EmbeddedRedis() as server:
        sim_port = free_port()
        sim = spawn(
            [sys.executable, "-m", "scheduler.cli.app", "simulator", "--port", str(sim_port)], {}, tmp / "sim.log"
        )
        sim_url = f"http://127.0.0.1:{sim_port}"
        wait_until(lambda: _up(sim_url), timeout=20)
        try:
            for round_no in range(args.repeat):  # interleaved, so every sender sees the same machine conditions
                if "broadcast" in only:
                    runs[names["broadcast"]].append(
                        run_broadcast(args.jobs, args.accounts, server.url, sim_url, tmp, args.concurrency, round_no)
                    )
                if "plain" in only:
                    runs[names["plain"]].append(
                        run_plain_celery(args.jobs, server.url, sim_url, tmp, args.concurrency, round_no)
                    )
                if "raw" in only:
                    runs[names["raw"]].append(run_aiohttp(args.jobs, sim_url, round_no=round_no))
                print(
                    f"round {round_no + 1}/{args.repeat}: "
                    + ", ".join(f"{k.split(' ')[0]} {v[-1]['rate']:.0f}/s" for k, v in runs.items()),
                    file=sys.stderr,
                )
        finally:
            stop(sim)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    base = median(next(iter(runs)), "rate")
    print(
        f"\n{args.jobs} sends of GeWe postText to the local simulator; {args.accounts} accounts; broadcast worker with its defaults, peer prefork -c {args.concurrency}; "
        f"{os.cpu_count()} cores; median of {args.repeat} interleaved rounds"
    )
    print(f"{'sender':42} {'sends/s':>9} {'min-max':>13} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for name, rs in runs.items():
        rate = median(name, "rate")
        spread = f"{min(r['rate'] for r in rs):.0f}-{max(r['rate'] for r in rs):.0f}"
        p50 = f"{median(name, 'p50_ms'):.0f}" if "p50_ms" in rs[0] else "-"
        p99 = f"{median(name, 'p99_ms'):.0f}" if "p99_ms" in rs[0] else "-"
        print(f"{name:42} {rate:9.0f} {spread:>13} {rate / base:7.2f} {p50:>8} {p99:>8}")
    if names["broadcast"] in runs:
        print(
            f"(broadcast: producer accepted a median {median(names['broadcast'], 'submit_rate'):.0f} jobs/s; "
            "latency = accepted → vendor answered, all jobs submitted at once)"
        )
    print(f"logs: {tmp}")


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_sim/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
