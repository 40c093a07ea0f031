"""The real operating envelope: N accounts x k sends, gap g, a vendor answering in L ± s, default settings.

Everything runs on this machine: a private Redis, the bundled simulator (GeWe ``postText``, answering
every send after L ± s via ``POST /_sim/latency``), and the product exactly as a user starts it:
``broadcast worker`` with no flags and one ``broadcast scheduler`` (only ``BROADCAST_REDIS_URL`` and
``BROADCAST_KEY_PREFIX`` are set, so each case gets fresh keys).

Per case and round:

1. The processes start (and ``broadcast api`` on the campaign path); N accounts (limits ``per_minute``,
   ``min_interval_s=g``, ``jitter_s=0``) get k private-chat jobs each, all scheduled for one release moment a
   little ahead (``send_at``), so boot and submission stay out of what is measured. ``--path campaign`` (the
   default, what users send): one campaign through ``POST /v1/campaigns``, every recipient bound to its
   account; ``--path messages``: single messages through the producer.
2. Just before the release: snapshots of Redis ``INFO commandstats`` / ``INFO cpu`` and of the CPU time
   (``/proc/<pid>/stat``) of the worker's, the scheduler's and the API's process trees.
3. Wait until the simulator has recorded every send and every job is terminal (bounded by ``--timeout``;
   on timeout the partial figures are printed and the exit code is non-zero). Snapshots again.
4. From the simulator's own records (``received_at`` = request arrived, ``sent_at`` = answer left):

   - utilization per account = (sum of (sent_at - received_at) + (k - 1) x g) / (last.sent_at -
     first.received_at), median and p10 over accounts;
   - sends/s = sends / (last sent_at - first received_at); the limits allow ≈ N / (g + L);
   - violations: overlaps (next.received_at < prev.sent_at), gaps under g - 5 ms, 60 s windows over
     ``per_minute``; duplicates: one (account, recipient) received more than once.

5. CPU per send of the stack (worker + scheduler + Redis + API) and of each part, in CPU-ms and in units.
   The unit is the CPU one plain single-threaded Python client (``http.client``, keep-alive, JSON in and out)
   spends per ``postText`` against the same simulator, measured in the same run (before and after the cases,
   the mean used), so a figure in units reads the same on a slower or a busier machine.

6. Peers at the same latency, same number of sends, no pacing: ``bench.plain_celery`` (the same HTTP call
   in a plain Celery task) under prefork ``-c 2`` and under ``-P threads -c 300``. A peer stops after
   ``--peer-budget`` seconds of sending; its rate is what it reached by then.

Exit code 1 when any case shows a violation, a duplicate, a missing send or a timeout.

Run: ``.venv/bin/python -m bench.envelope`` (all cases) or ``--case 300x4-L0.3-g1``, or a custom case:
``--accounts 30 --sends 3 --gap 1 --latency 0.3 --spread 0.1``. ``--repeat 3`` interleaves rounds and
reports medians; ``--json out.json`` writes every raw figure; ``--profile DIR`` runs ``py-spy record --gil``
on the worker over the measured window (py-spy installed in the venv, not a project dependency) and prints
the share of samples per stage and the top functions. ``--replica`` attaches a replica and runs each
case twice, ``BROADCAST_REPLICA_ACKS=0`` (the unit) then ``=1``, and prints the cost of the wait as ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from bench._procs import Procs, tree, tree_rss_kb
from bench.pacing import TEXT, TOKEN, _load, _sim_up, _term, analyse, check_alive, progress, say
from bench.throughput import spawn
from scheduler.devtools.embedded import EmbeddedRedis, free_port
from scheduler.intake.producer import Producer
from worker.store.accounts import AccountSpec, AccountStore, Limits
from worker.store.keys import Keys
from worker.store.ledger import TERMINAL, Ledger
from worker.store.replication import online_replicas

PER_MINUTE = 600  # high enough never to bind at the gaps below (a 1 s gap allows 60 a minute)
POLL_S = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")
INSTANCE = "env-inst-{:05d}"


@dataclass(frozen=True)
class Case:
    """N accounts x k sends, gap g, vendor latency L ± spread (seconds)."""

    name: str
    accounts: int
    sends: int
    gap: float
    latency: float
    spread: float = 0.0

    def describe(self) -> str:
        vendor = (
            f"vendor {self.latency:g} s" + (f" ± {self.spread:g} s" if self.spread else "")
            if self.latency
            else "fast vendor"
        )
        return f"{self.accounts:,} accounts x {self.sends} sends, {self.gap:g} s gap, {vendor}"

    @property
    def allowed_rate(self) -> float:
        """Sends/s the accounts' limits allow in steady state: each account one send per (g + L)."""
        per_send = self.gap + self.latency
        return self.accounts / per_send if per_send > 0 else float("inf")

    @property
    def ideal_span(self) -> float:
        return self.sends * self.latency + (self.sends - 1) * self.gap


CASES = {
    c.name: c
    for c in (
        Case("300x4-L0.3-g1", 300, 4, 1.0, 0.3),
        Case("5000x2-fast-g20", 5000, 2, 20.0, 0.0),
        Case("1000x4-fast-g1", 1000, 4, 1.0, 0.0),
        Case("5000x2-L0.3s0.2-g20", 5000, 2, 20.0, 0.3, 0.2),
        Case("10000x2-L0.3s0.2-g20", 10000, 2, 20.0, 0.3, 0.2),
    )
}


# --- measuring ---------------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, reaped children included) of ``pid``'s process tree."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / CLK_TCK


def redis_counters(client: redis.Redis) -> tuple[dict[str, int], float, dict[str, int]]:
    """(calls per command, Redis CPU seconds, microseconds spent in each command) now; the benchmark's own
    INFO calls excluded. What the commands do not account for is the server's own work around them:
    reading and answering clients (a round trip costs more than a command inside a script)."""
    stats = client.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info"}
    usec = {k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in stats.items() if k != "cmdstat_info"}
    cpu = client.info("cpu")
    return calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), usec


class SimSends:
    """Reads the simulator's send records incrementally (``since_seq``), so polling stays cheap."""

    def __init__(self, sim: httpx.Client) -> None:
        self.sim = sim
        self.last_seq = 0
        self.records: list[dict[str, Any]] = []

    def poll(self, instance: str | None = None) -> int:
        params: dict[str, Any] = {"since_seq": self.last_seq}
        if instance:
            params["instance"] = instance
        new = self.sim.get("/_sim/sends", params=params).json()["sends"]
        for r in new:
            r.pop("body", None)
        self.records += new
        if new:
            self.last_seq = max(self.last_seq, max(r["seq"] for r in new))
        return len(self.records)


def reset_sim(sim: httpx.Client, case: Case) -> None:
    sim.post("/_sim/reset").raise_for_status()
    sim.post("/_sim/latency", json={"latency_s": case.latency, "spread_s": case.spread}).raise_for_status()


def pctl(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def span_rate(records: list[dict[str, Any]]) -> tuple[float, float]:
    """(seconds from the first request to the last answer, sends/s over it)."""
    if not records:
        return 0.0, 0.0
    span = max(r["sent_at"] for r in records) - min(r["received_at"] for r in records)
    return span, (len(records) / span if span > 0 else float("inf"))


def measure_unit(sim_url: str, requests: int = 500, batches: int = 5) -> float:
    """The unit: CPU seconds one plain single-threaded Python client (``http.client``, keep-alive, JSON in
    and out) spends per GeWe ``postText`` against the same simulator, answering at once; the median of
    ``batches`` batches (this thread's CPU time only, so the figure is the client's and nothing else's)."""
    instance = "unit-inst"
    parsed = urlsplit(sim_url)
    with httpx.Client(base_url=sim_url, timeout=30) as sim:
        sim.post("/_sim/reset").raise_for_status()
        sim.post("/_sim/latency", json={"latency_s": 0, "spread_s": 0}).raise_for_status()
        sim.post("/_sim/accounts", json={"vendor": "gewe", "instance": instance, "token": TOKEN}).raise_for_status()
    conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=30)
    headers = {"Content-Type": "application/json", "X-GEWE-TOKEN": TOKEN}
    per_request: list[float] = []
    try:
        for batch in range(batches + 1):  # the first batch warms up (connection, imports) and is not counted
            cpu0 = time.thread_time()
            for i in range(requests):
                body = {"appId": instance, "toWxid": f"wxid_unit_{batch}_{i}", "content": "x"}
                conn.request("POST", "/gewe/v2/api/message/postText", json.dumps(body), headers)
                answer = json.loads(conn.getresponse().read())
                if answer.get("ret") != 200:
                    raise RuntimeError(f"the simulator refused the unit's request: {answer}")
            if batch:
                per_request.append((time.thread_time() - cpu0) / requests)
    finally:
        conn.close()
    return statistics.median(per_request)


# --- the product -------------------------------------------------------------------------------------


class Registry:
    """GeWe accounts on the simulator, registered once and reused by every case (``/_sim/reset`` keeps
    them; registering is O(accounts) per call in the simulator, so 5,000 twice would cost seconds)."""

    def __init__(self) -> None:
        self.count = 0

    def ensure(self, sim: httpx.Client, n: int) -> None:
        for a in range(self.count, n):
            body = {"vendor": "gewe", "instance": INSTANCE.format(a), "token": TOKEN}
            sim.post("/_sim/accounts", json=body).raise_for_status()
        self.count = max(self.count, n)


def run_product(
    case: Case, args: argparse.Namespace, tag: str, redis_url: str, sim_url: str, registry: Registry,
    procs: Procs, logdir: Path, settings: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One round of the product on ``case`` (``settings``: extra BROADCAST_* variables); figures from the
    simulator's records, INFO and /proc."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"env{tag}"
    ledger, store = Ledger(client, prefix), AccountStore(client, prefix)
    limits = Limits(per_minute=PER_MINUTE, min_interval_s=case.gap, jitter_s=0.0)
    with httpx.Client(base_url=sim_url, timeout=120) as sim:
        registry.ensure(sim, case.accounts)
        reset_sim(sim, case)
        accounts = {}
        for a in range(case.accounts):
            instance = INSTANCE.format(a)
            spec = AccountSpec(
                vendor="gewe", base_url=f"{sim_url}/gewe/v2/api", token=TOKEN, instance=instance, limits=limits
            )
            store.put(f"env-acct-{a:05d}", spec)
            accounts[instance] = f"env-acct-{a:05d}"

        env = {
            "BROADCAST_REDIS_URL": redis_url,
            "BROADCAST_KEY_PREFIX": prefix,
            "BROADCAST_VENDOR_ALLOW": "127.0.0.0/8",
            **(settings or {}),
        }
        worker = procs.cli(f"{tag}-worker", ["worker"], env)
        sched = procs.cli(f"{tag}-scheduler", ["scheduler"], env)
        api = None
        if args.path == "campaign":
            api_port, api_token = free_port(), f"bench-{tag}"
            api = procs.cli(f"{tag}-api", ["api", "--port", str(api_port)], {**env, "BROADCAST_API_TOKEN": api_token})
        total = case.accounts * case.sends
        release = time.time() + args.boot_wait + total / 1500
        if api is None:
            producer = Producer(ledger, store)
            job_ids = [
                producer.submit_message(
                    account=accounts[INSTANCE.format(a)], to=f"wxid_{tag}_{a:05d}_{i}", message=TEXT, send_at=release
                ).id
                for i in range(case.sends)
                for a in range(case.accounts)
            ]
        else:
            job_ids = submit_campaign(
                case, tag, f"http://127.0.0.1:{api_port}", api_token, list(accounts.values()), release, ledger
            )
        late = time.time() - (release - 1.0)
        if late > 0:
            progress(f"{tag}: submission ended {late:.1f}s late: raise --boot-wait (figures include submission)")
        stack = [worker, sched, *([api] if api else [])]
        while time.time() < release - 0.5:
            check_alive(stack, "product process", logdir)
            time.sleep(0.1)
        spy = start_profile(args.profile, worker.pid, f"{case.name}-{tag}", logdir) if args.profile else None
        calls0, rcpu0, usec0 = redis_counters(client)
        wcpu0, scpu0, acpu0 = cpu_s(worker.pid), cpu_s(sched.pid), cpu_s(api.pid) if api else 0.0
        progress(
            f"{tag}: {total} jobs released at the next second; booted worker RSS {tree_rss_kb(worker.pid)[0] / 1024:.0f} MB"
        )

        sends = SimSends(sim)
        own_calls = 0  # the benchmark's own HGETs inside the measured window, subtracted
        timeout = args.timeout or max(300.0, 5 * case.ideal_span + 120)
        deadline = time.monotonic() + timeout
        rss_max = 0
        last_check = last_note = time.monotonic()
        timed_out = False
        states: list[str | None] = []
        while True:
            seen = sends.poll()
            rss_max = max(rss_max, tree_rss_kb(worker.pid)[0])
            now = time.monotonic()
            if seen >= total or now - last_check > 15:  # a job may end dead, without a send
                last_check = now
                calls1, rcpu1, usec1 = redis_counters(client)
                wcpu1, scpu1, acpu1 = cpu_s(worker.pid), cpu_s(sched.pid), cpu_s(api.pid) if api else 0.0
                pipe = client.pipeline(transaction=False)
                for job_id in job_ids:
                    pipe.hget(Keys(prefix).job(job_id), "state")
                states = pipe.execute()
                if all(s in TERMINAL for s in states):
                    break
                own_calls += len(job_ids)
            check_alive(stack, "product process", logdir)
            if now > deadline:
                timed_out = True
                calls1, rcpu1, usec1 = redis_counters(client)
                wcpu1, scpu1, acpu1 = cpu_s(worker.pid), cpu_s(sched.pid), cpu_s(api.pid) if api else 0.0
                progress(f"{tag}: TIMEOUT after {timeout:.0f}s: {seen}/{total} sends recorded")
                break
            if now - last_note > 20:
                last_note = now
                progress(f"{tag}: {seen}/{total} sends after {time.time() - release:.0f}s")
            time.sleep(POLL_S)
        if spy is not None:
            stop_profile(spy)
        for proc in reversed(stack):
            procs.stop(proc)
        sends.poll()

    records = [r for r in sends.records if r["instance"] in accounts]
    by_instance: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_instance[r["instance"]].append(r)
    utils: list[float] = []  # accounts with all k sends only: a cut-off account's span says nothing
    overlaps = short = window = 0
    for recs in by_instance.values():
        recs.sort(key=lambda r: r["received_at"])
        m = analyse(recs, limits)
        overlaps, short, window = overlaps + m["overlaps"], short + m["short"], window + m["window"]
        if len(recs) < case.sends:
            continue
        span = recs[-1]["sent_at"] - recs[0]["received_at"]
        busy = sum(r["sent_at"] - r["received_at"] for r in recs) + (len(recs) - 1) * case.gap
        utils.append(busy / span if span > 0 else 1.0)
    pairs = Counter((r["instance"], r["to"]) for r in records)
    duplicates = sum(c - 1 for c in pairs.values() if c > 1)
    span, rate = span_rate(records)
    n = len(records)
    calls = {k: v - calls0.get(k, 0) for k, v in calls1.items() if v - calls0.get(k, 0)}
    calls["hget"] = calls.get("hget", 0) - own_calls
    usec = {k: v - usec0.get(k, 0) for k, v in usec1.items() if v - usec0.get(k, 0)}
    commands = sum(calls.values())
    outcomes = dict(Counter(s or "missing" for s in states)) if not timed_out else {}
    return {
        "sends": n,
        "jobs": total,
        "timed_out": timed_out,
        "outcomes": outcomes,
        "span_s": span,
        "rate": rate,
        "accounts_complete": len(utils),
        "util_median": statistics.median(utils) if utils else float("nan"),
        "util_p10": pctl(utils, 0.10),
        "overlaps": overlaps,
        "short_gaps": short,
        "windows_over": window,
        "violations": overlaps + short + window,
        "duplicates": duplicates,
        "dispatcher_cpu_ms_per_1k": 1e6 * (scpu1 - scpu0) / n if n else float("nan"),
        "worker_cpu_ms_per_1k": 1e6 * (wcpu1 - wcpu0) / n if n else float("nan"),
        "api_cpu_ms_per_send": 1000 * (acpu1 - acpu0) / n if n and api else float("nan"),
        "path": args.path,
        "redis_commands_per_send": commands / n if n else float("nan"),
        "redis_cpu_ms_per_send": 1000 * (rcpu1 - rcpu0) / n if n else float("nan"),
        "worker_rss_max_mb": rss_max / 1024,
        "redis_calls": calls,
        #: microseconds inside each command (a script's commands count again in its EVALSHA's)
        "redis_usec": usec,
        "utilizations": utils,
    }


def submit_campaign(
    case: Case, tag: str, api_url: str, api_token: str, account_ids: list[str], release: float, ledger: Ledger
) -> list[str]:
    """``POST /v1/campaigns`` as a user sends one: every account's k recipients, released at ``release``;
    the ids of its jobs, in the order the API stored them."""
    recipients = [
        {"to": f"wxid_{tag}_{a:05d}_{i}", "account": account_id}
        for i in range(case.sends)
        for a, account_id in enumerate(account_ids)
    ]
    body = {
        "name": f"envelope {case.name} {tag}",
        "recipients": recipients,  # each bound to its account (``accounts`` takes at most 1,000)
        "message": TEXT,
        "send_at": datetime.fromtimestamp(release, UTC).isoformat(),
    }
    with httpx.Client(base_url=api_url, timeout=300, headers={"Authorization": f"Bearer {api_token}"}) as api:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if api.get("/healthz").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tag}: the API did not answer /healthz in 60 s")
            time.sleep(0.1)
        answer = api.post("/v1/campaigns", json=body)
        if answer.status_code != 202:
            raise RuntimeError(f"{tag}: POST /v1/campaigns answered {answer.status_code}: {answer.text[:500]}")
        campaign = answer.json()["id"]
    return [str(j) for j in ledger.redis.lrange(ledger.keys.campaign_jobs(campaign), 0, -1)]


# --- where the worker's CPU goes (--profile) -----------------------------------------------------------

#: Stages a worker sample is charged to: the innermost frame whose file is in one of these places (stdlib
#: frames such as ``socket`` or ``json`` are charged to the library or module that called them).
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("vendor HTTP (httpx, worker/runtime/http11.py)", ("httpx/", "httpcore/", "h11/", "worker/runtime/http11.py")),
    ("Redis client (redis-py)", ("redis/",)),
    ("Celery consumer (celery, kombu, billiard)", ("celery/", "kombu/", "billiard/", "vine/", "amqp/")),
    ("logging, metrics (structlog, prometheus_client)", ("structlog/", "prometheus_client/", "logging/")),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("session runner (worker/execution)", ("worker/execution/",)),
    ("pacing (worker/pacing)", ("worker/pacing/",)),
    ("store (worker/store)", ("worker/store/",)),
    ("vendor backends (worker/vendors, worker/jsonsafe)", ("worker/vendors/", "worker/jsonsafe")),
    ("worker runtime (worker/runtime: tasks, connections)", ("worker/runtime/",)),
    ("other worker code", ("worker/",)),
)


#: Frames every thread's stack starts with, left out of the inclusive top.
PLUMBING = ("threading.py", "concurrent/futures/")


def start_profile(directory: Path, pid: int, name: str, logdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``py-spy record --gil`` on the worker's process tree for the measured window (raw collapsed stacks)."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if spy is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy into the venv; not a project dependency)")
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{name}.txt"
    cmd = [spy, "record", "--pid", str(pid), "--subprocesses", "--gil", "--rate", "250", "--format", "raw",
           "--output", str(out), "--nonblocking"]  # fmt: skip
    with (logdir / f"{name}-py-spy.log").open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    return proc, out


def stop_profile(profile: tuple[subprocess.Popen[bytes], Path]) -> None:
    """SIGINT makes py-spy write its samples; then print the profile."""
    spy, path = profile
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(60)
    except subprocess.TimeoutExpired:
        spy.kill()
        progress("py-spy did not write its samples in 60 s")
        return
    if path.exists():
        for line in profile_summary(path.read_text()):
            say(line)


def _frames(stack: str) -> list[tuple[str, str]]:
    """(function, file) of each Python frame of a py-spy raw stack, outermost first."""
    frames = []
    for frame in stack.split(";"):
        function, _, where = frame.rpartition(" (")
        if function and not frame.startswith(("process ", "thread ")):
            frames.append((function, where.rsplit(":", 1)[0]))
    return frames


def profile_summary(raw: str, top: int = 15) -> list[str]:
    """py-spy's raw collapsed stacks (``frame;frame;… count``) as: the share of samples per stage, and the
    functions with the largest inclusive and self shares."""
    stages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if not frames:
            continue
        total += count
        own["{} ({})".format(*frames[-1])] += count
        for name in {f"{function} ({where})" for function, where in frames if not where.startswith(PLUMBING)}:
            inclusive[name] += count
        stage = next(
            (label for _, where in reversed(frames) for label, places in STAGES if where.startswith(places)),
            "other (interpreter, stdlib)",
        )
        stages[stage] += count
    if not total:
        return ["   profile: no samples"]
    lines = [f"   profile: {total:,} samples holding the GIL; share by stage (innermost library frame):"]
    lines += [f"     {100 * n / total:5.1f}%  {label}" for label, n in stages.most_common()]
    lines.append("   top functions, inclusive share (the function and what it calls):")
    lines += [f"     {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    lines.append("   top functions, self share:")
    lines += [f"     {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    return lines


# --- the peers ---------------------------------------------------------------------------------------


def run_peer(
    case: Case, pool_args: list[str], args: argparse.Namespace, tag: str, redis_url: str, sim_url: str,
    procs: Procs, logdir: Path,
) -> dict[str, Any]:  # fmt: skip
    """A plain Celery task doing the same GeWe postText, no pacing; bounded by ``--peer-budget`` s of sending."""
    from bench.plain_celery import app, post_text

    app.conf.broker_url = redis_url
    queue = f"plain-{tag}"  # leftovers of a budget-stopped peer stay in their own queue
    instance = f"peer-{tag}"
    total = case.accounts * case.sends
    with httpx.Client(base_url=sim_url, timeout=120) as sim:
        reset_sim(sim, case)
        sim.post("/_sim/accounts", json={"vendor": "gewe", "instance": instance, "token": TOKEN}).raise_for_status()
        url = f"{sim_url}/gewe/v2/api/message/postText"
        with app.producer_or_acquire() as producer:
            for i in range(total):
                post_text.apply_async(
                    args=[url, TOKEN, {"appId": instance, "toWxid": f"wxid_{tag}_{i:06d}", "content": "x"}],
                    producer=producer,
                    queue=queue,
                )
        cmd = [sys.executable, "-m", "celery", "-A", "bench.plain_celery", "worker", *pool_args, "-Q", queue,
               "--without-gossip", "--without-mingle", "--loglevel", "WARNING", "-n", f"{tag}@%h"]  # fmt: skip
        worker = spawn(cmd, {"BENCH_REDIS_URL": redis_url}, logdir / f"{tag}.log")
        procs.running.append(worker)
        sends = SimSends(sim)
        boot_deadline = time.monotonic() + 120
        first: float | None = None
        while True:
            seen = sends.poll(instance)
            now = time.monotonic()
            if seen and first is None:
                first = now
            if seen >= total or (first is not None and now - first > args.peer_budget):
                break
            check_alive([worker], "peer worker", logdir)
            if first is None and now > boot_deadline:
                raise TimeoutError(f"{tag}: the peer sent nothing in 120 s; see {logdir}")
            time.sleep(POLL_S)
        procs.stop(worker)
        sends.poll(instance)
    span, rate = span_rate(sends.records)
    return {"sends": len(sends.records), "of": total, "span_s": span, "rate": rate}


# --- report ------------------------------------------------------------------------------------------

PATHS = {
    "campaign": "one campaign through the API (POST /v1/campaigns, send_at = the release), what users send",
    "messages": "single messages (the producer's submit_message, send_at = the release), no API process",
}
PEERS = {"prefork": ["-c", "2"], "threads": ["-P", "threads", "-c", "300"]}


def attach_replica(primary: EmbeddedRedis, replica: EmbeddedRedis) -> None:
    """Make ``replica`` follow ``primary`` and wait until it streams (``--replica``)."""
    client = redis.Redis(port=primary.port, decode_responses=True)
    client.config_set("repl-diskless-sync-delay", 0)
    redis.Redis(port=replica.port).replicaof("127.0.0.1", primary.port)
    deadline = time.monotonic() + 30
    while online_replicas(client.info("replication")) < 1:
        if time.monotonic() > deadline:
            raise TimeoutError("the replica did not sync in 30 s")
        time.sleep(0.1)


def med(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    m = statistics.median(values)
    text = f"{m:.3g}" if abs(m) < 100 else f"{m:,.0f}"
    if len(values) > 1:
        text += f" ({min(values):.3g}-{max(values):.3g})"
    return text


#: the parts of the stack's CPU per send: (label, figure in CPU-ms per send)
STACK_PARTS: tuple[tuple[str, Callable[[dict[str, Any]], float]], ...] = (
    ("worker", lambda p: p["worker_cpu_ms_per_1k"] / 1000),
    ("scheduler", lambda p: p["dispatcher_cpu_ms_per_1k"] / 1000),
    ("Redis", lambda p: p["redis_cpu_ms_per_send"]),
    ("API", lambda p: p["api_cpu_ms_per_send"] if p["api_cpu_ms_per_send"] == p["api_cpu_ms_per_send"] else 0.0),
)


def stack_ms(p: dict[str, Any]) -> float:
    """Worker + scheduler + Redis + API CPU-ms per send."""
    return sum(part(p) for _, part in STACK_PARTS)


def report(case: Case, rounds: list[dict[str, Any]], unit_s: float) -> bool:
    """Print one case's table; True when it is clean (no violation, duplicate, missing send, timeout).
    ``unit_s``: the unit (CPU seconds per plain request) every CPU figure per send is also given in."""
    prod = [r["product"] for r in rounds]
    say()
    say(f"== {case.name}: {case.describe()}; limits per_minute={PER_MINUTE}, min_interval_s={case.gap:g}, jitter_s=0")
    say(f"   {len(rounds)} round(s); median (min-max) over rounds")

    def row(label: str, values: list[float], suffix: str = "") -> None:
        say(f"   {label:52} {med(values)}{suffix}")

    row("per-account utilization, median %", [100 * p["util_median"] for p in prod])
    row("per-account utilization, p10 %", [100 * p["util_p10"] for p in prod])
    row("sends/s (first request → last answer)", [p["rate"] for p in prod])
    say(f"   {'limits allow ≈ N / (g + L), sends/s':52} {case.allowed_rate:,.0f}")
    row("ratio sends/s ÷ limits allow", [p["rate"] / case.allowed_rate for p in prod])
    for name, pool in PEERS.items():
        peer = [r[name] for r in rounds if name in r]
        if peer:
            row(f"peer {name} ({' '.join(pool)}): sends/s", [p["rate"] for p in peer],
                f"   ({peer[-1]['sends']:,} of {peer[-1]['of']:,} sends in the budget)")  # fmt: skip
            row(f"ratio broadcast ÷ peer {name}",
                [r["product"]["rate"] / r[name]["rate"] for r in rounds if r[name]["rate"]])  # fmt: skip
    row("violations: overlaps + short gaps + 60 s windows", [p["violations"] for p in prod],
        f"   [{sum(p['overlaps'] for p in prod)} / {sum(p['short_gaps'] for p in prod)} / {sum(p['windows_over'] for p in prod)}]")  # fmt: skip
    row("duplicates", [p["duplicates"] for p in prod])
    row("dispatcher CPU-ms per 1,000 sends", [p["dispatcher_cpu_ms_per_1k"] for p in prod])
    row("worker CPU-ms per 1,000 sends", [p["worker_cpu_ms_per_1k"] for p in prod])
    row("Redis commands per send", [p["redis_commands_per_send"] for p in prod])
    row("Redis CPU-ms per send", [p["redis_cpu_ms_per_send"] for p in prod])
    unit_ms = 1000 * unit_s
    row("stack CPU-ms per send (worker+scheduler+Redis+API)", [stack_ms(p) for p in prod])
    row("stack CPU per send, in units", [stack_ms(p) / unit_ms for p in prod])
    for label, part in STACK_PARTS:
        if label != "API" or any(p["path"] == "campaign" for p in prod):  # no API process on --path messages
            row(f"  {label} CPU per send, in units", [part(p) / unit_ms for p in prod])
    row("worker RSS max (process tree), MB", [p["worker_rss_max_mb"] for p in prod])
    acked = [r["acked"] for r in rounds if "acked" in r]
    if acked:  # --replica: the same case with BROADCAST_REPLICA_ACKS=1, against the unit above (=0)
        say("   with BROADCAST_REPLICA_ACKS=1 (WAIT 1 after BEGIN and FINISH), same replica attached:")
        row("  sends/s", [p["rate"] for p in acked])
        row("  per-account utilization, median %", [100 * p["util_median"] for p in acked])
        row("  violations, duplicates", [p["violations"] + p["duplicates"] for p in acked])
        row("  worker CPU-ms per 1,000 sends", [p["worker_cpu_ms_per_1k"] for p in acked])
        row("  Redis commands per send", [p["redis_commands_per_send"] for p in acked])
        row("  Redis CPU-ms per send (primary)", [p["redis_cpu_ms_per_send"] for p in acked])
        row("  stack CPU per send, in units", [stack_ms(p) / unit_ms for p in acked])
        for label, key in (("worker CPU", "worker_cpu_ms_per_1k"), ("Redis CPU", "redis_cpu_ms_per_send"),
                           ("sends/s", "rate")):  # fmt: skip
            row(f"  ratio acks=1 ÷ acks=0, {label}",
                [r["acked"][key] / r["product"][key] for r in rounds if "acked" in r and r["product"][key]])  # fmt: skip
        prod = prod + acked
    for i, p in enumerate(prod):
        state = "TIMEOUT" if p["timed_out"] else f"outcomes {p['outcomes']}"
        say(
            f"   round {i + 1}: {p['sends']:,}/{p['jobs']:,} sends recorded in {p['span_s']:.1f}s; {state}; "
            f"utilization over the {p['accounts_complete']:,} accounts that sent all {case.sends}"
        )
    clean = all(
        not p["timed_out"] and p["violations"] == 0 and p["duplicates"] == 0 and p["sends"] == p["jobs"] for p in prod
    )
    if not clean:
        say("   FAILED: violation, duplicate, missing send or timeout (see above)")
    return clean


# --- main --------------------------------------------------------------------------------------------


def selected_cases(args: argparse.Namespace) -> list[Case]:
    custom = [args.accounts, args.sends, args.gap, args.latency]
    if any(v is not None for v in custom):
        if args.case:
            raise SystemExit(
                "--case and a custom case (--accounts/--sends/--gap/--latency/--spread) exclude each other"
            )
        n, k = args.accounts or 30, args.sends or 3
        g, lat = 1.0 if args.gap is None else args.gap, 0.0 if args.latency is None else args.latency
        if args.spread > lat:
            raise SystemExit("--spread must not exceed --latency")
        return [Case(f"custom-{n}x{k}-L{lat:g}s{args.spread:g}-g{g:g}", n, k, g, lat, args.spread)]
    return [CASES[name] for name in (args.case or CASES)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", choices=list(CASES), help="a named case (repeatable; default all)")
    parser.add_argument("--accounts", type=int, help="custom case: accounts (N)")
    parser.add_argument("--sends", type=int, help="custom case: sends per account (k)")
    parser.add_argument("--gap", type=float, help="custom case: min_interval_s (g)")
    parser.add_argument("--latency", type=float, help="custom case: vendor latency L, seconds")
    parser.add_argument("--spread", type=float, default=0.0, help="custom case: latency spread s (uniform L ± s)")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds; medians reported")
    parser.add_argument(
        "--path", choices=list(PATHS), default="campaign",
        help="how the jobs are submitted: one campaign through the API (default) or single messages",
    )  # fmt: skip
    parser.add_argument("--peers", choices=["all", "prefork", "threads", "none"], default="all")
    parser.add_argument("--peer-budget", type=float, default=60.0, help="seconds of sending per peer run")
    parser.add_argument("--boot-wait", type=float, default=12.0, help="seconds from process start to release")
    parser.add_argument("--timeout", type=float, help="seconds after release before a case fails (default per case)")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR",
        help="py-spy record --gil the worker over the measured window; raw stacks in DIR, a summary printed",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every raw figure here")
    parser.add_argument(
        "--replica", action="store_true",
        help="attach a replica; run each case with BROADCAST_REPLICA_ACKS=0 (the unit) then =1, and compare",
    )  # fmt: skip
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _term)
    cases = selected_cases(args)
    peers = {k: v for k, v in PEERS.items() if args.peers in ("all", k)}

    exe = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else sys.executable
    say(f"command: {shlex.join([exe, '-m', 'bench.envelope', *sys.argv[1:]])}")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    say(f"machine: {os.cpu_count()} cores ({affinity} usable); python {sys.version.split()[0]}; load average {_load()}")
    api = " + `broadcast api`" if args.path == "campaign" else ""
    say(f"product: `broadcast worker` (no flags) + `broadcast scheduler`{api}, default settings; path: {args.path}")

    logdir = Path(tempfile.mkdtemp(prefix="bench-envelope-"))
    procs = Procs(logdir)
    results: dict[str, list[dict[str, Any]]] = {c.name: [] for c in cases}
    units: list[float] = []
    clean = True
    try:
        with EmbeddedRedis() as server, contextlib.ExitStack() as stack:
            base: dict[str, str] = {}
            if args.replica:
                replica = stack.enter_context(EmbeddedRedis())
                attach_replica(server, replica)
                base = {"BROADCAST_REPLICA_ACKS": "0"}
            sim_port = free_port()
            procs.cli("simulator", ["simulator", "--port", str(sim_port)], {})
            sim_url = f"http://127.0.0.1:{sim_port}"
            deadline = time.monotonic() + 30
            while not _sim_up(sim_url):
                if time.monotonic() > deadline:
                    raise TimeoutError("the simulator did not start in 30 s")
                time.sleep(0.1)
            units.append(measure_unit(sim_url))
            progress(f"unit: {1000 * units[-1]:.3f} CPU-ms per request (plain http.client, keep-alive, JSON)")
            registry = Registry()
            for round_no, (ci, case) in itertools.product(range(args.repeat), enumerate(cases)):
                tag = f"c{ci}r{round_no}"
                progress(f"{case.name} round {round_no + 1}/{args.repeat}: broadcast")
                entry = {"product": run_product(case, args, tag, server.url, sim_url, registry, procs, logdir, base)}
                if args.replica:
                    progress(f"{case.name} round {round_no + 1}/{args.repeat}: broadcast, BROADCAST_REPLICA_ACKS=1")
                    acks = {"BROADCAST_REPLICA_ACKS": "1"}
                    entry["acked"] = run_product(
                        case, args, f"{tag}a", server.url, sim_url, registry, procs, logdir, acks
                    )
                for name, pool in peers.items():
                    progress(f"{case.name} round {round_no + 1}/{args.repeat}: peer {name}")
                    entry[name] = run_peer(case, pool, args, f"{tag}{name}", server.url, sim_url, procs, logdir)
                results[case.name].append(entry)
            units.append(measure_unit(sim_url))
            procs.stop_all()
        unit = statistics.mean(units)
        say(
            f"unit: {1000 * unit:.3f} CPU-ms per request = the CPU one plain single-threaded Python client "
            "(http.client, keep-alive, JSON in and out) spends per GeWe postText against the same simulator; "
            f"measured before and after the cases: {' / '.join(f'{1000 * u:.3f}' for u in units)} ms"
        )
        say(f"path: {PATHS[args.path]}")
        for case in cases:
            clean = report(case, results[case.name], unit) and clean
        if args.json:
            raw = {c.name: {"case": asdict(c), "rounds": results[c.name]} for c in cases}
            figures = {"command": sys.argv, "unit_ms": 1000 * unit, "units_ms": [1000 * u for u in units], "cases": raw}
            args.json.write_text(json.dumps(figures, indent=1))
            say(f"\nraw figures: {args.json}")
    finally:
        procs.stop_all()
        say(f"\nload average at the end {_load()}; logs: {logdir}")
    if not clean:
        sys.exit(1)


if __name__ == "__main__":
    main()
