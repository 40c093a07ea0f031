"""What one vendor call and one Redis script call cost a worker process, by client and concurrency model.

The floor under ``bench.envelope``'s CPU per send: every figure is the CPU (user + system) of this process
per request, as a ratio to the unit measured in the same run (one plain single-threaded ``http.client``
client, keep-alive, JSON in and out, against the same simulator: ``bench.envelope.measure_unit``). Rows:

- ``product, 1 thread``: a GeWe ``postText`` through the product's backend and vendor client (sync httpx
  on :class:`worker.runtime.http11.Http11Transport`), one call at a time;
- ``product, N threads``: the same from N threads at once, the vendor answering after L seconds (how a
  worker runs its sessions today);
- ``httpx async + aiohttp transport, N coroutines``: ``httpx.AsyncClient`` on ``httpx-aiohttp`` (only when
  that package is installed: ``pip install httpx-aiohttp``; not a project dependency);
- ``aiohttp, N coroutines``: raw aiohttp (a dev dependency), the floor of an asyncio engine in Python;
- ``Redis script, 1 thread`` / ``N threads``: one EVALSHA of a small script with redis-py and the reply
  parser installed (hiredis when present), no wait on the server, 64 pooled connections as the product's;
- ``Redis script, 26 args``: a call as wide as a BEGIN or FINISH, one thread, with redis-py as shipped and
  with the product's client (one-call packing, ``LuaScript``'s direct path on a pooled connection);
- ``session runner, 1 thread``: whole sends as a worker makes them (``SessionRunner.run``: the session's
  first round trip with its first BEGIN, BEGIN, the vendor call, FINISH, the last one ending the session),
  sessions of 50 unpaced jobs one after another over a private Redis: what a send costs without threads
  or Celery, the floor of the worker's share in ``bench.envelope``.

Run: ``.venv/bin/python -m bench.transports`` (``--threads 300 --latency 0.3 --seconds 8``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import redis

from bench.envelope import measure_unit
from bench.pacing import TOKEN, _sim_up
from scheduler.devtools.embedded import EmbeddedRedis, free_port
from worker.execution.runner import SessionRunner
from worker.messages import TextMessage
from worker.runtime.connections import COMMAND_PACKER, new_redis_client, new_vendor_http_client
from worker.settings import Settings
from worker.store.accounts import AccountSpec, AccountStore
from worker.store.ledger import Ledger
from worker.store.scripts import LuaScript
from worker.vendors.base import VendorAccount, backend_for

INSTANCE = "unit-inst"


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def threaded(call: Callable[[int, int], None], threads: int, seconds: float) -> float:
    """CPU seconds of this process per call, ``threads`` threads calling for ``seconds``."""
    count = [0] * threads
    stop = time.monotonic() + seconds

    def run(k: int) -> None:
        i = 0
        while time.monotonic() < stop:
            call(k, i)
            i += 1
        count[k] = i

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    before = _cpu()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return (_cpu() - before) / max(1, sum(count))


def session_floor(client: redis.Redis, url: str, sends: int) -> float:
    """CPU seconds of this process per send made by the product's session runner, single-threaded."""
    prefix = "floor"
    accounts = AccountStore(client, prefix)
    spec = {"vendor": "gewe", "base_url": f"{url}/gewe/v2/api", "token": TOKEN, "instance": INSTANCE}
    accounts.put("a1", AccountSpec.model_validate({**spec, "limits": {"per_minute": 0}}))
    ledger = Ledger(client, prefix)
    for i in range(sends):
        ledger.submit(account="a1", to=f"wxid_f_{i}", message=TextMessage(text="x"))
    settings = Settings(env="dev", key_prefix=prefix)
    runner = SessionRunner(settings, ledger, accounts, [new_vendor_http_client(settings, max_connections=4)])
    sent = 0
    before = _cpu()
    while ledger.tick().due:
        for claim in ledger.claim(lease_ttl_s=30, candidates=[("a1", 50, 0.0, 0.0)]):
            sent += runner.run(claim.account, claim.token, claim.job_ids).sent
    cpu = _cpu() - before
    if sent != sends:
        raise RuntimeError(f"the session runner sent {sent} of {sends}")
    return cpu / sent


async def _coroutines(url: str, coroutines: int, seconds: float, mode: str) -> float:
    import aiohttp

    path = f"{url}/gewe/v2/api/message/postText"
    headers = {"Content-Type": "application/json", "X-GEWE-TOKEN": TOKEN}
    count = 0
    stop = time.monotonic() + seconds
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=coroutines + 10))
    client: Any = None
    if mode == "httpx-aiohttp":
        from httpx_aiohttp import AiohttpTransport

        client = httpx.AsyncClient(transport=AiohttpTransport(client=session), timeout=30)

    async def run(k: int) -> None:
        nonlocal count
        i = 0
        while time.monotonic() < stop:
            body = json.dumps({"appId": INSTANCE, "toWxid": f"wxid_c_{k}_{i}", "content": "x"}).encode()
            if client is not None:
                answer = json.loads((await client.post(path, content=body, headers=headers)).content)
            else:
                async with session.post(path, data=body, headers=headers) as response:
                    answer = json.loads(await response.read())
            if answer.get("ret") != 200:
                raise RuntimeError(f"the simulator refused a request: {answer}")
            i += 1
            count += 1

    before = _cpu()
    try:
        await asyncio.gather(*(run(k) for k in range(coroutines)))
    finally:
        if client is not None:
            await client.aclose()
        await session.close()
    return (_cpu() - before) / max(1, count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=300, help="threads or coroutines at once (N)")
    parser.add_argument("--latency", type=float, default=0.3, help="vendor answer time L, seconds")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per concurrent row")
    args = parser.parse_args(argv)

    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli.app", "simulator", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    rows: list[tuple[str, float]] = []
    try:
        deadline = time.monotonic() + 30
        while not _sim_up(url):
            if time.monotonic() > deadline:
                raise TimeoutError("the simulator did not start in 30 s")
            time.sleep(0.1)
        unit = measure_unit(url)
        settings = Settings(env="dev")
        account = VendorAccount(vendor="gewe", base_url=f"{url}/gewe/v2/api", token=TOKEN, instance=INSTANCE)
        clients = [new_vendor_http_client(settings, max_connections=32) for _ in range(-(-args.threads // 32))]
        message = TextMessage(text="x")
        backend = backend_for(account, clients[0])
        rows.append(
            ("product (sync httpx), 1 thread", threaded(lambda k, i: backend.send(f"wxid_s_{i}", message), 1, 3))
        )
        httpx.post(f"{url}/_sim/latency", json={"latency_s": args.latency, "spread_s": 0}).raise_for_status()
        backends = [backend_for(account, clients[k % len(clients)]) for k in range(args.threads)]
        rows.append(
            (
                f"product (sync httpx), {args.threads} threads, L {args.latency} s",
                threaded(lambda k, i: backends[k].send(f"wxid_t_{k}_{i}", message), args.threads, args.seconds),
            )
        )
        if importlib.util.find_spec("httpx_aiohttp") is not None:
            rows.append(
                (
                    f"httpx async + aiohttp transport, {args.threads} coroutines",
                    asyncio.run(_coroutines(url, args.threads, args.seconds, "httpx-aiohttp")),
                )
            )
        rows.append(
            (
                f"aiohttp, {args.threads} coroutines",
                asyncio.run(_coroutines(url, args.threads, args.seconds, "aiohttp")),
            )
        )
        with EmbeddedRedis() as server:
            pool = redis.BlockingConnectionPool.from_url(
                server.url, decode_responses=True, max_connections=64, command_packer=COMMAND_PACKER
            )
            client = redis.Redis(connection_pool=pool)  # as the product's: 64 connections, threads wait, its packer
            script = client.register_script("redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); return {ARGV[1], 'ok'}")
            parser_name = "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure-Python parser"
            call = lambda k, i: script(keys=[f"bench:{k}"], args=[str(i), "x" * 40])  # noqa: E731
            rows.append((f"Redis script ({parser_name}), 1 thread", threaded(call, 1, 3)))
            rows.append((f"Redis script ({parser_name}), {args.threads} threads", threaded(call, args.threads, 3)))
            # a BEGIN-sized call (26 arguments): redis-py as shipped, then the product's client and script path
            shipped = redis.Redis(
                connection_pool=redis.BlockingConnectionPool.from_url(
                    server.url, decode_responses=True, max_connections=64
                )
            )
            product = new_redis_client(server.url, Settings(env="dev"))
            wide = [*(f"arg-{n}-{'x' * 12}" for n in range(23)), 86400, 1.5, ""]
            plain = shipped.register_script("return {ARGV[1], 'ok'}")
            rows.append(("Redis script, 26 args, redis-py as shipped", threaded(lambda k, i: plain(args=wide), 1, 3)))
            lean = LuaScript(product, "touch")  # any script file: its body is set below, only the call is timed
            lean._script = product.register_script("return {ARGV[1], 'ok'}")
            rows.append(("Redis script, 26 args, the product's client", threaded(lambda k, i: lean(args=wide), 1, 3)))
            httpx.post(f"{url}/_sim/latency", json={"latency_s": 0, "spread_s": 0}).raise_for_status()
            rows.append(("session runner (BEGIN, vendor, FINISH), 1 thread", session_floor(client, url, 2000)))
    finally:
        sim.terminate()
        sim.wait()
    print(f"unit: {1000 * unit:.3f} CPU-ms per request (plain http.client, single thread, same simulator)")
    for name, cpu in rows:
        print(f"  {name:<58} {1000 * cpu:7.3f} CPU-ms  {cpu / unit:6.2f} units")
    return 0


if __name__ == "__main__":
    sys.exit(main())
