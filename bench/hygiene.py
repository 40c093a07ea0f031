"""What the send-time hygiene checks cost (issue 19): BEGIN with and without suppressions and a recipient cap.

The checks live inside ``begin.lua`` (two HEXISTS, and for a capped campaign job a ZREMRANGEBYSCORE, ZSCORE,
ZCARD, ZADD, EXPIRE), so they add no round trip; this measures what they add to the script. A private Redis,
one account, ``--jobs`` campaign jobs claimed in batches; each phase begins every job (and finishes it as
sent) from one thread. Reported: round trips per BEGIN (counted by redis-py's command calls), Redis CPU
per BEGIN (``INFO commandstats``, ``usec`` of EVALSHA), and wall time per BEGIN+FINISH as a ratio to a unit
measured in the same run (a PING round trip), since the machine is shared.

Run: ``.venv/bin/python -m bench.hygiene`` (default 3,000 jobs per phase; a few seconds).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import redis

from scheduler.devtools.embedded import EmbeddedRedis
from scheduler.intake.campaigns import Campaigns
from worker.settings import Settings
from worker.store.accounts import AccountSpec, AccountStore
from worker.store.ledger import BeginStatus, Ledger
from worker.store.suppressions import Suppressions
from worker.vendors.base import SendResult


def _evalsha_usec(client: redis.Redis) -> float:
    stats: dict[str, Any] = client.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec", 0))


def phase(client: redis.Redis, prefix: str, jobs: int, *, hygiene: bool) -> dict[str, float]:
    ledger = Ledger(client, prefix)
    store = AccountStore(client, prefix)
    spec = {"vendor": "gewe", "base_url": "http://127.0.0.1:9", "instance": "i", "limits": {"per_minute": 0}}
    store.put("a", AccountSpec.model_validate(spec))
    if hygiene:  # a list of 10,000 entries the recipients are not on, so every job is checked and sent
        Suppressions(client, prefix).add_many([("a", f"wxid_s{i}", "manual", "") for i in range(5000)], by="bench")
        Suppressions(client, prefix).add_many([(None, f"wxid_t{i}", "manual", "") for i in range(5000)], by="bench")
    Campaigns(ledger, store, settings=Settings()).create(
        name="b",
        account="a",
        message={"kind": "text", "text": "x"},
        recipients=[{"to": f"wxid_{i}"} for i in range(jobs)],
    )
    cap = (5, 86400.0) if hygiene else None
    result = SendResult(vendor="gewe", to="x", endpoint="postText", msg_id=1, new_msg_id=2, create_time=1)
    begins = 0
    begin_s = 0.0
    usec_before = _evalsha_usec(client)
    while True:
        due = ledger.tick().due
        claims = ledger.claim(lease_ttl_s=60, candidates=[(a, 500, 0.0, 0.0) for a in due])
        if not claims:
            break
        for claim in claims:
            for job in claim.job_ids:
                started = time.perf_counter()
                begin = ledger.begin("a", claim.token, job, lease_ttl_s=60, recipient_cap=cap)
                begin_s += time.perf_counter() - started
                begins += 1
                assert begin.status is BeginStatus.GO, begin
                ledger.finish_sent("a", claim.token, job, result, {})
            ledger.release("a", claim.token)
    usec = _evalsha_usec(client) - usec_before
    return {"begins": begins, "begin_ms": begin_s / begins * 1000, "evalsha_usec_per_job": usec / begins}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000)
    args = parser.parse_args()
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        started = time.perf_counter()
        for _ in range(2000):
            client.ping()
        unit_ms = (time.perf_counter() - started) / 2000 * 1000
        plain = phase(client, "plain", args.jobs, hygiene=False)
        checked = phase(client, "checked", args.jobs, hygiene=True)
    print(f"unit (PING round trip): {unit_ms:.3f} ms")
    for name, got in (("without checks", plain), ("with suppressions + recipient_cap", checked)):
        print(
            f"{name:36s} BEGIN {got['begin_ms']:.3f} ms = {got['begin_ms'] / unit_ms:.2f} units, "
            f"Redis CPU (BEGIN+FINISH scripts) {got['evalsha_usec_per_job']:.1f} µs/job"
        )
    extra = checked["evalsha_usec_per_job"] - plain["evalsha_usec_per_job"]
    print(f"the checks add {extra:.1f} µs of Redis CPU per send; BEGIN stays one EVALSHA (the checks run inside it)")


if __name__ == "__main__":
    main()
