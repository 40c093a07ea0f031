"""Pacing under load, measured at the vendor (the simulator's own timestamps), and a bounded broker.

Everything runs on this machine: a private Redis, the bundled simulator (GeWe ``postText``), ``--workers``
``broadcast worker`` processes (one process each, default concurrency) and one ``broadcast scheduler``.

* **Phase 1, pacing** — ``--accounts`` accounts limited to ``per_minute``, a minimum gap of
  ``min_interval_s`` plus up to ``jitter_s`` measured from the end of the previous send, and one send in
  flight each, across all workers. ``--jobs`` private-chat jobs per account are submitted, then the
  processes start and run until every job is terminal. From the simulator's records
  (``received_at`` = request arrived, ``sent_at`` = answer left), per account:

  - violations = overlaps (next.received_at < prev.sent_at)
    + gaps (next.received_at - prev.sent_at) under ``min_interval_s`` - 5 ms
    + 60 s windows (starting at each received_at) holding more than ``per_minute`` sends;
  - achieved rate = (n - 1) / (last.received_at - first.received_at) x 60 per minute,
    utilization = achieved / per_minute.

  Targets: 0 violations; median and minimum utilization >= 95 %.

* **Phase 2, bounded broker** — a fresh key prefix, the same number of accounts and pacing, a campaign
  backlog of ``--backlog`` jobs, fresh workers + scheduler observed for ``--observe`` s. Every
  ``--sample`` s: the Celery queue depth (``LLEN {prefix}.send``), due/ready/leased entries, and the RSS
  of each worker's process tree (and of the scheduler). Targets: queue depth <= number of accounts
  (the dispatcher releases one batch per account only when pacing allows it), worker RSS flat (last
  within +10 % of first).

Run: ``.venv/bin/python -m bench.pacing`` (defaults: 20 accounts x 200 jobs at 120/min, 3 workers,
100,000-job backlog observed for 60 s; about 3-4 minutes).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from bench._procs import Procs, tree_rss_kb, wait_until
from scheduler.devtools.embedded import EmbeddedRedis, free_port
from scheduler.intake.campaigns import Campaigns
from scheduler.intake.producer import Producer
from worker.store.accounts import AccountSpec, AccountStore, Limits
from worker.store.keys import Keys
from worker.store.ledger import TERMINAL, Ledger

TOKEN = "bench-token"
GAP_TOLERANCE_S = 0.005
WINDOW_S = 60.0
TEXT = {"kind": "text", "text": "x"}


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def progress(msg: str) -> None:
    print(f"  … {msg}", file=sys.stderr, flush=True)


# --- setup -------------------------------------------------------------------------------------------


def register_accounts(
    client: redis.Redis, prefix: str, sim_url: str, n: int, limits: Limits, tag: str
) -> list[tuple[str, str]]:
    """``n`` GeWe accounts on the simulator and in the store; returns (account id, simulator instance)."""
    store = AccountStore(client, prefix)
    out = []
    with httpx.Client(base_url=sim_url, timeout=30) as sim:
        for a in range(n):
            instance = f"{tag}-inst-{a:02d}"
            sim.post("/_sim/accounts", json={"vendor": "gewe", "instance": instance, "token": TOKEN}).raise_for_status()
            spec = AccountSpec(
                vendor="gewe", base_url=f"{sim_url}/gewe/v2/api", token=TOKEN, instance=instance, limits=limits
            )
            account_id = f"{tag}-acct-{a:02d}"
            store.put(account_id, spec)
            out.append((account_id, instance))
    return out


def start_stack(procs: Procs, env: dict[str, str], workers: int, tag: str) -> tuple[list[Any], Any]:
    ws = [
        procs.cli(
            f"{tag}-worker{i}",
            ["worker", "--without-gossip", "--without-mingle", "-n", f"{tag}w{i}@%h"],
            env,
        )
        for i in range(workers)
    ]
    sched = procs.cli(f"{tag}-scheduler", ["scheduler"], env)
    return ws, sched


def env_for(redis_url: str, prefix: str) -> dict[str, str]:
    return {
        "BROADCAST_REDIS_URL": redis_url,
        "BROADCAST_KEY_PREFIX": prefix,
        "BROADCAST_LOG_LEVEL": "WARNING",
        "BROADCAST_VENDOR_ALLOW": "127.0.0.0/8",
    }


def check_alive(procs: list[Any], what: str, logdir: Path) -> None:
    for p in procs:
        if p.poll() is not None:
            raise RuntimeError(f"{what} pid {p.pid} exited with code {p.returncode}; see logs in {logdir}")


# --- phase 1 -----------------------------------------------------------------------------------------


def analyse(recs: list[dict[str, Any]], limits: Limits) -> dict[str, Any]:
    """Violations, gaps and achieved rate of one account's sends as the vendor saw them."""
    recs = sorted(recs, key=lambda r: r["received_at"])
    n = len(recs)
    gaps = [b["received_at"] - a["sent_at"] for a, b in itertools.pairwise(recs)]
    overlaps = sum(1 for g in gaps if g < 0)
    short = sum(1 for g in gaps if 0 <= g < limits.min_interval_s - GAP_TOLERANCE_S)
    times = [r["received_at"] for r in recs]
    per_window = [bisect.bisect_left(times, t + WINDOW_S) - i for i, t in enumerate(times)]
    window_excess = sum(1 for c in per_window if c > limits.per_minute)
    span = times[-1] - times[0] if n > 1 else 0.0
    rate = (n - 1) / span * 60 if span > 0 else 0.0
    vendor_ms = [1000 * (r["sent_at"] - r["received_at"]) for r in recs]
    return {
        "n": n,
        "overlaps": overlaps,
        "short": short,
        "window": window_excess,
        "violations": overlaps + short + window_excess,
        "min_gap": min(gaps) if gaps else float("nan"),
        "mean_gap": statistics.fmean(gaps) if gaps else float("nan"),
        "max_win": max(per_window) if per_window else 0,
        "span": span,
        "rate": rate,
        "util": rate / limits.per_minute if limits.per_minute else float("nan"),
        "vendor_ms": statistics.fmean(vendor_ms) if vendor_ms else 0.0,
    }


def phase1(args: argparse.Namespace, redis_url: str, sim_url: str, procs: Procs, logdir: Path) -> dict[str, Any]:
    prefix = "pace1"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ledger, store = Ledger(client, prefix), AccountStore(client, prefix)
    limits = Limits(per_minute=args.per_minute, min_interval_s=args.min_interval, jitter_s=args.jitter)
    accounts = register_accounts(client, prefix, sim_url, args.accounts, limits, "p1")
    producer = Producer(ledger, store)
    t0 = time.time()
    job_ids: list[str] = []
    for i in range(args.jobs):
        for a, (account_id, _) in enumerate(accounts):
            job_ids.append(producer.submit_message(account=account_id, to=f"wxid_p1_{a:02d}_{i:05d}", message=TEXT).id)
    submit_s = time.time() - t0
    progress(f"phase 1: submitted {len(job_ids)} jobs in {submit_s:.1f}s; starting workers + scheduler")

    env = env_for(redis_url, prefix)
    workers, sched = start_stack(procs, env, args.workers, "p1")
    started = time.time()
    queue = f"{prefix}.send"
    max_queue = 0
    expected = args.jobs / args.per_minute * 60 if args.per_minute else 30
    deadline = time.monotonic() + 2 * expected + 120
    states: list[str] = []
    last_note = 0.0
    while True:
        max_queue = max(max_queue, int(client.llen(queue)))
        pipe = client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(Keys(prefix).job(job_id), "state")
        states = pipe.execute()
        terminal = sum(1 for s in states if s in TERMINAL)
        if terminal == len(job_ids):
            break
        check_alive([*workers, sched], "phase-1 process", logdir)
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"phase 1: only {terminal}/{len(job_ids)} jobs terminal after {time.time() - started:.0f}s"
            )
        if time.time() - last_note > 20:
            last_note = time.time()
            progress(f"phase 1: {terminal}/{len(job_ids)} terminal after {time.time() - started:.0f}s")
        time.sleep(1.0)
    elapsed = time.time() - started
    for p in [sched, *workers]:
        procs.stop(p)
    outcome = {s: states.count(s) for s in sorted(set(states))}

    per_account: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=sim_url, timeout=60) as sim:
        for account_id, instance in accounts:
            recs = sim.get("/_sim/sends", params={"instance": instance}).json()["sends"]
            per_account[account_id] = analyse(recs, limits)
    return {
        "limits": limits,
        "per_account": per_account,
        "elapsed": elapsed,
        "submit_s": submit_s,
        "jobs": len(job_ids),
        "outcome": outcome,
        "max_queue": max_queue,
    }


def report1(args: argparse.Namespace, r: dict[str, Any]) -> None:
    limits: Limits = r["limits"]
    rows = r["per_account"]
    gap_rate = 60 / (limits.min_interval_s + limits.jitter_s / 2) if limits.min_interval_s + limits.jitter_s else 0
    say()
    say(
        f"== Phase 1: pacing — {args.accounts} accounts x {args.jobs} private jobs, {args.workers} worker processes + 1 scheduler"
    )
    say(
        f"limits: per_minute={limits.per_minute}, min_interval_s={limits.min_interval_s}, jitter_s={limits.jitter_s} "
        f"(the gap alone would allow ~{gap_rate:.0f}/min: the 60 s window binds once an account has sent {limits.per_minute})"
    )
    say(
        f"submitted {r['jobs']} jobs in {r['submit_s']:.1f}s; all terminal {r['elapsed']:.1f}s after the processes started; "
        f"outcomes {r['outcome']}; max Celery queue depth seen {r['max_queue']}"
    )
    say(
        f"{'account':12} {'sends':>5} {'overlap':>7} {'short':>5} {'>win':>5} {'min gap ms':>10} {'mean gap ms':>11} "
        f"{'max/60s':>7} {'span s':>7} {'rate/min':>8} {'util':>6}"
    )
    for account_id, m in rows.items():
        say(
            f"{account_id:12} {m['n']:5d} {m['overlaps']:7d} {m['short']:5d} {m['window']:5d} {1000 * m['min_gap']:10.1f} "
            f"{1000 * m['mean_gap']:11.1f} {m['max_win']:7d} {m['span']:7.1f} {m['rate']:8.1f} {100 * m['util']:5.1f}%"
        )
    utils = [m["util"] for m in rows.values()]
    total = sum(m["violations"] for m in rows.values())
    say(
        f"violations: {total} total (overlaps {sum(m['overlaps'] for m in rows.values())}, "
        f"gaps < {1000 * (limits.min_interval_s - GAP_TOLERANCE_S):.0f} ms {sum(m['short'] for m in rows.values())}, "
        f"60 s windows > {limits.per_minute} {sum(m['window'] for m in rows.values())})   [target 0]"
    )
    say(
        f"utilization of {limits.per_minute}/min: median {100 * statistics.median(utils):.1f}%, "
        f"min {100 * min(utils):.1f}%, max {100 * max(utils):.1f}%   [target >= 95%]"
    )
    say(
        f"mean vendor-side time per send {statistics.fmean(m['vendor_ms'] for m in rows.values()):.2f} ms; "
        f"mean gap (prev answer -> next request) {1000 * statistics.fmean(m['mean_gap'] for m in rows.values()):.1f} ms "
        f"vs configured mean {1000 * (limits.min_interval_s + limits.jitter_s / 2):.1f} ms"
    )


# --- phase 2 -----------------------------------------------------------------------------------------


def redis_used_mb(client: redis.Redis) -> float:
    return int(client.info("memory")["used_memory"]) / 1e6


def phase2(args: argparse.Namespace, redis_url: str, sim_url: str, procs: Procs, logdir: Path) -> dict[str, Any]:
    prefix = "pace2"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ledger, store = Ledger(client, prefix), AccountStore(client, prefix)
    limits = Limits(per_minute=args.per_minute, min_interval_s=args.min_interval, jitter_s=args.jitter)
    accounts = register_accounts(client, prefix, sim_url, args.accounts, limits, "p2")
    campaigns = Campaigns(ledger, store)
    t0 = time.time()
    created = campaigns.create(
        name="bench backlog",
        message=TEXT,
        recipients=({"to": f"wxid_p2_{i:07d}"} for i in range(args.backlog)),
        accounts=[a for a, _ in accounts],
    )
    submit_s = time.time() - t0
    redis_after_submit = redis_used_mb(client)
    progress(f"phase 2: campaign of {created.total} jobs stored in {submit_s:.1f}s; starting workers + scheduler")

    env = env_for(redis_url, prefix)
    workers, sched = start_stack(procs, env, args.workers, "p2")
    boot0 = time.time()
    queue = f"{prefix}.send"

    def sent() -> int:
        return int(client.hget(Keys(prefix).campaign(created.id), "n:sent") or 0)

    def booted() -> bool:
        check_alive([*workers, sched], "phase-2 process", logdir)
        return sent() > 0 and all(tree_rss_kb(w.pid)[1] >= 1 for w in workers)  # one process each (threads)

    wait_until(booted, timeout=90, what="phase-2 workers to boot and send")
    boot_s = time.time() - boot0

    samples: list[dict[str, Any]] = []
    start = time.monotonic()
    n = 0
    fine_max = fine_n = 0
    while True:
        target = start + n * args.sample
        while time.monotonic() < target:  # between samples, probe the queue depth at ~10 Hz
            fine_max = max(fine_max, int(client.llen(queue)))
            fine_n += 1
            time.sleep(min(0.1, max(0.0, target - time.monotonic())))
        pipe = client.pipeline(transaction=False)
        pipe.llen(queue)
        pipe.zcard(Keys(prefix).due)
        pipe.scard(f"{prefix}:ready")
        pipe.scard(Keys(prefix).leased)
        pipe.hget(Keys(prefix).campaign(created.id), "n:sent")
        qlen, due, ready, leased, n_sent = pipe.execute()
        samples.append(
            {
                "t": time.monotonic() - start,
                "queue": int(qlen),
                "due": int(due),
                "ready": int(ready),
                "leased": int(leased),
                "sent": int(n_sent or 0),
                "workers": [tree_rss_kb(w.pid) for w in workers],
                "sched": tree_rss_kb(sched.pid)[0],
                "redis_mb": redis_used_mb(client),
            }
        )
        check_alive([*workers, sched], "phase-2 process", logdir)
        n += 1
        if samples[-1]["t"] >= args.observe - 1e-6:
            break
    for p in [sched, *workers]:
        procs.stop(p)
    return {
        "total": created.total,
        "submit_s": submit_s,
        "boot_s": boot_s,
        "redis_after_submit": redis_after_submit,
        "samples": samples,
        "fine_max": fine_max,
        "fine_n": fine_n,
    }


def report2(args: argparse.Namespace, r: dict[str, Any]) -> None:
    s = r["samples"]
    say()
    say(
        f"== Phase 2: bounded broker — backlog of {r['total']} campaign jobs over {args.accounts} accounts at "
        f"{args.per_minute}/min, {args.workers} worker processes + 1 scheduler, observed {args.observe:.0f}s"
    )
    say(
        f"campaign stored in {r['submit_s']:.1f}s (Redis used_memory {r['redis_after_submit']:.1f} MB); "
        f"first send {r['boot_s']:.1f}s after the processes started; t=0 below is that moment"
    )
    wcols = " ".join(f"{'w' + str(i) + ' MB':>8}" for i in range(args.workers))
    say(
        f"{'t s':>5} {'celeryQ':>7} {'due':>5} {'ready':>5} {'leased':>6} {'sent':>6} {'sends/min':>9} {wcols} "
        f"{'sched MB':>8} {'redis MB':>8}"
    )
    prev = None
    for x in s:
        rate = "" if prev is None else f"{(x['sent'] - prev['sent']) / (x['t'] - prev['t']) * 60:.0f}"
        wmb = " ".join(f"{kb / 1024:8.1f}" for kb, _ in x["workers"])
        say(
            f"{x['t']:5.0f} {x['queue']:7d} {x['due']:5d} {x['ready']:5d} {x['leased']:6d} {x['sent']:6d} {rate:>9} "
            f"{wmb} {x['sched'] / 1024:8.1f} {x['redis_mb']:8.1f}"
        )
        prev = x
    depths = [x["queue"] for x in s]
    say(
        f"Celery queue depth: max {max(depths)}, mean {statistics.fmean(depths):.1f} over {len(s)} samples; "
        f"max {r['fine_max']} over {r['fine_n']} probes at ~10 Hz   [target <= {args.accounts} accounts]"
    )
    first = [kb for kb, _ in s[0]["workers"]]
    last = [kb for kb, _ in s[-1]["workers"]]
    procs_per = [c for _, c in s[-1]["workers"]]
    for i, (a, b) in enumerate(zip(first, last, strict=True)):
        say(
            f"worker {i} RSS ({procs_per[i]} processes): first {a / 1024:.1f} MB, last {b / 1024:.1f} MB "
            f"({100 * (b - a) / a:+.1f}%), max {max(x['workers'][i][0] for x in s) / 1024:.1f} MB"
        )
    tf, tl = sum(first), sum(last)
    say(
        f"all workers RSS: first {tf / 1024:.1f} MB, last {tl / 1024:.1f} MB ({100 * (tl - tf) / tf:+.1f}%)   [target within +10%]"
    )
    span = s[-1]["t"] - s[0]["t"]
    if span > 0:
        achieved = (s[-1]["sent"] - s[0]["sent"]) / span * 60
        ceiling = args.accounts * args.per_minute
        say(
            f"sent {s[-1]['sent'] - s[0]['sent']} during the observation: {achieved:.0f}/min vs {ceiling}/min configured "
            f"({100 * achieved / ceiling:.1f}%)"
        )


# --- main --------------------------------------------------------------------------------------------


def _sim_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_sim/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _term(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=200, help="phase 1: jobs per account")
    parser.add_argument("--per-minute", type=int, default=120)
    parser.add_argument("--min-interval", type=float, default=0.45, help="min_interval_s")
    parser.add_argument("--jitter", type=float, default=0.05, help="jitter_s")
    parser.add_argument(
        "--workers", type=int, default=3, help="worker processes (one process each, default concurrency)"
    )
    parser.add_argument("--backlog", type=int, default=100_000, help="phase 2: campaign jobs")
    parser.add_argument("--observe", type=float, default=60.0, help="phase 2: seconds to observe")
    parser.add_argument("--sample", type=float, default=2.0, help="phase 2: seconds between samples")
    parser.add_argument("--only", choices=["pacing", "broker"], help="run one phase only")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _term)

    exe = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else sys.executable
    say(f"command: {shlex.join([exe, '-m', 'bench.pacing', *sys.argv[1:]])}")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    say(
        f"machine: {os.cpu_count()} cores ({affinity} usable by this process); python {sys.version.split()[0]}; load average {_load()}"
    )

    logdir = Path(tempfile.mkdtemp(prefix="bench-pacing-"))
    procs = Procs(logdir)
    try:
        with EmbeddedRedis() as server:
            sim_port = free_port()
            procs.cli("simulator", ["simulator", "--port", str(sim_port)], {})
            sim_url = f"http://127.0.0.1:{sim_port}"
            wait_until(lambda: _sim_up(sim_url), timeout=30, what="the simulator")
            try:
                if args.only in (None, "pacing"):
                    report1(args, phase1(args, server.url, sim_url, procs, logdir))
                if args.only in (None, "broker"):
                    report2(args, phase2(args, server.url, sim_url, procs, logdir))
            finally:
                procs.stop_all()
    finally:
        procs.stop_all()
        say(f"\nload average at the end {_load()}; logs: {logdir}")


if __name__ == "__main__":
    main()
