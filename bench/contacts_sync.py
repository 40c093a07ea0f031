"""Contact sync of a large account: vendor calls, time, Redis bytes per contact, and that no call overlapped a
send on the account.

A GeWe account on the simulator with N friends (default 10,000) and some groups syncs while a campaign
sends on the same account; the simulator's records give every contact call (start, end) and every send.
Reported: calls by endpoint, the sync's wall time against its floor (calls × the mean gap: the pacing is
the cost, by design), the gaps between contact calls, overlaps with sends (must be 0), and Redis bytes per
contact (``MEMORY USAGE`` of the stored book ÷ contacts), with the worker's and Redis's CPU over the sync as
a ratio to a unit measured in the same run (one JSON encode+decode of the book).

Run: ``.venv/bin/python -m bench.contacts_sync`` (``--friends``, ``--groups``, ``--batch``, ``--gap-min``…).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from bench._procs import Procs, wait_until
from bench.envelope import cpu_s
from scheduler.devtools.embedded import EmbeddedRedis, free_port
from worker.store.accounts import AccountSpec, AccountStore
from worker.store.contacts import ContactStore

PREFIX = "bcs"


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_sim/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def storage_only(friends: int) -> None:
    """Bytes per contact with realistic names (random wxids, 2-8 random CJK characters, a remark for a third):
    the simulator's names (好友1, 好友2…) compress far better than real ones."""
    import random

    from worker.store.contacts import Contact, ContactBook

    rng = random.Random(18)
    alnum = "abcdefghijklmnopqrstuvwxyz0123456789"

    def cjk(lo: int, hi: int) -> str:
        return "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(lo, hi)))

    book = ContactBook(synced_at=time.time(), labels={str(i): cjk(2, 4) for i in range(1, 11)})
    for _ in range(friends):
        labels = tuple(sorted({str(rng.randint(1, 10)) for _ in range(rng.randint(0, 3))}))
        wxid = "wxid_" + "".join(rng.choice(alnum) for _ in range(14))
        book.friends.append(Contact(wxid, "friend", cjk(2, 8), cjk(2, 6) if rng.random() < 0.33 else "", labels))
    book.chatrooms = [Contact(f"{rng.randint(10**10, 10**11)}@chatroom", "chatroom", cjk(3, 10)) for _ in range(50)]
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        store = ContactStore(client, PREFIX)
        client.set(store.keys.contacts("real"), book.encode())
        stored = store.stored_bytes("real")
        contacts = len(book.friends) + len(book.chatrooms)
        started = time.process_time()
        for _ in range(5):
            ContactBook.decode(book.encode())
        unit = (time.process_time() - started) / 5
        read = time.process_time()
        for _ in range(5):
            store.book("real")
        say(f"realistic names: {stored} bytes for {contacts} contacts = {stored / contacts:.1f} bytes per contact; "
            f"reading the book (GET + decode) {(time.process_time() - read) / 5 * 1000:.1f} ms, "
            f"encode+decode {unit * 1000:.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--friends", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--batch", type=int, default=100, help="ids per getBriefInfo (GeWe schema: up to 100)")
    parser.add_argument("--gap-min", type=float, default=0.3)
    parser.add_argument("--gap-max", type=float, default=0.8)
    parser.add_argument("--sends", type=int, default=100, help="a campaign on the same account meanwhile")
    parser.add_argument("--storage-only", action="store_true", help="only bytes per contact with realistic names")
    args = parser.parse_args()
    say(f"command: {shlex.join([os.path.relpath(sys.executable), '-m', 'bench.contacts_sync', *sys.argv[1:]])}")
    say(f"machine: {os.cpu_count()} cores (shared); python {sys.version.split()[0]}; load {os.getloadavg()[0]:.2f}")
    if args.storage_only:
        storage_only(args.friends)
        return
    logdir = Path(tempfile.mkdtemp(prefix="bench-contacts-"))
    procs = Procs(logdir)
    try:
        with EmbeddedRedis() as server:
            client = redis.Redis.from_url(server.url, decode_responses=True)
            env = {
                "BROADCAST_REDIS_URL": server.url, "BROADCAST_KEY_PREFIX": PREFIX, "BROADCAST_LOG_LEVEL": "WARNING",
                "BROADCAST_CONTACTS_GAP_MIN_S": str(args.gap_min), "BROADCAST_CONTACTS_GAP_MAX_S": str(args.gap_max),
                "BROADCAST_CONTACTS_LIST_TIMEOUT_S": "5", "BROADCAST_WORKER_PROCESSES": "1",
            }  # fmt: skip
            sim_port = free_port()
            procs.cli("simulator", ["simulator", "--port", str(sim_port)], {})
            sim = f"http://127.0.0.1:{sim_port}"
            wait_until(lambda: _up(sim), timeout=30, what="the simulator")
            httpx.post(
                f"{sim}/_sim/accounts", json={"vendor": "gewe", "instance": "big", "token": "tok-big"}
            ).raise_for_status()
            httpx.post(f"{sim}/_sim/contacts", json={"vendor": "gewe", "instance": "big", "friends": args.friends,
                                                     "chatrooms": args.groups, "list_slow_s": 30, "cache_delay_s": 3})  # fmt: skip
            spec = AccountSpec.model_validate({
                "vendor": "gewe", "base_url": f"{sim}/gewe/v2/api", "token": "tok-big", "instance": "big",
                "options": {"contacts_batch": str(args.batch)},
                "limits": {"per_minute": 600, "min_interval_s": 0.5, "jitter_s": 0.5},
            })  # fmt: skip
            AccountStore(client, PREFIX).put("big", spec)
            worker = procs.cli("worker", ["worker"], env)
            procs.cli("scheduler", ["scheduler"], env)
            time.sleep(3)
            from scheduler.intake.campaigns import Campaigns
            from worker.store.ledger import Ledger

            campaigns = Campaigns(Ledger(client, PREFIX), AccountStore(client, PREFIX))
            campaigns.create(name="meanwhile", message={"kind": "text", "text": "hi"},
                             recipients=[{"to": f"wxid_m{i}", "account": "big"} for i in range(args.sends)])  # fmt: skip
            store = ContactStore(client, PREFIX)
            cpu0 = cpu_s(worker.pid)
            redis_cpu0 = float(client.info("cpu")["used_cpu_sys"]) + float(client.info("cpu")["used_cpu_user"])
            started = time.time()
            store.start("big")
            wait_until(
                lambda: store.state("big").get("status") != "running", timeout=3600, what="the sync", interval=0.5
            )
            took = time.time() - started
            worker_cpu = cpu_s(worker.pid) - cpu0
            redis_cpu = (
                float(client.info("cpu")["used_cpu_sys"]) + float(client.info("cpu")["used_cpu_user"]) - redis_cpu0
            )
            status = store.status("big")
            book = store.book("big")
            assert book is not None, status
            contacts = len(book.friends) + len(book.chatrooms) + len(book.ghs)
            stored = store.stored_bytes("big")
            unit_t = time.process_time()
            for _ in range(5):
                type(book).decode(book.encode())
            unit = (time.process_time() - unit_t) / 5
            calls = httpx.get(f"{sim}/_sim/contact_calls", params={"instance": "big"}).json()["calls"]
            sends = httpx.get(f"{sim}/_sim/sends", params={"instance": "big"}).json()["sends"]
            by: dict[str, int] = {}
            for c in calls:
                by[c["endpoint"]] = by.get(c["endpoint"], 0) + 1
            live = sorted((c for c in calls if c["ended"] - c["started"] < 5), key=lambda c: c["started"])
            gaps = [b["started"] - a["ended"] for a, b in itertools.pairwise(live)]
            overlaps = sum(
                1
                for c in live
                for s in sends
                if s["received_at"] < c["ended"] - 0.005 and s["sent_at"] > c["started"] + 0.005
            )
            floor = (len(live) - 1) * (args.gap_min + args.gap_max) / 2
            say(f"\nsync: {status['status']}, {status['friends']} friends, {status['chatrooms']} groups, "
                f"{status['labels']} labels, {status['ghs']} public accounts")  # fmt: skip
            say(f"calls: {len(calls)} ({', '.join(f'{k} {v}' for k, v in sorted(by.items()))})")
            say(f"time: {took:.1f} s; floor of the gaps alone {floor:.1f} s")
            say(
                f"gaps between contact calls: min {min(gaps):.3f} s, median {statistics.median(gaps):.3f} s, max {max(gaps):.3f} s"
            )
            say(f"sends on the account meanwhile: {sum(1 for s in sends if started <= s['received_at'] <= started + took)}; "
                f"overlapping a contact call: {overlaps}")  # fmt: skip
            say(f"redis: {stored} bytes for {contacts} contacts = {stored / contacts:.1f} bytes per contact")
            say(f"cpu: worker {worker_cpu:.2f} s, redis {redis_cpu:.2f} s over the sync; unit (book encode+decode) "
                f"{unit * 1000:.1f} ms: worker {worker_cpu / unit:.0f} units, redis {redis_cpu / unit:.0f} units")  # fmt: skip
    finally:
        procs.stop_all()
        say(f"\nlogs: {logdir}")


if __name__ == "__main__":
    main()
