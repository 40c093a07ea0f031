"""Campaign fan-out and API latency: how fast the API accepts work, and how compactly Redis holds it.

One run, on this machine, against a private Redis and a real ``broadcast api`` process (no workers: the
API only validates and stores):

1. seconds to accept a 100,000-recipient campaign as JSON (``POST /v1/campaigns``) and as a CSV upload
   (``POST /v1/campaigns/upload``), each with a personalised text template;
2. Redis bytes per pending job: ``INFO memory`` used_memory before/after, divided by the jobs stored;
3. ``POST /v1/messages`` latency with 50 concurrent clients: open loop at a fixed total rate (the
   latency a producer sees at that load) and closed loop (each client sends back to back: the
   saturation throughput, where latency is queueing by Little's law).

Run: ``.venv/bin/python -m bench.fanout`` (``--recipients``, ``--clients``, ``--rate``, ``--seconds``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis
from cryptography.fernet import Fernet

from scheduler.devtools.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-api-token"


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def open_loop(url: str, clients: int, rate: float, seconds: float) -> list[float]:
    """Each client sends at rate/clients per second; returns latencies (s)."""
    import aiohttp

    latencies: list[float] = []
    interval = clients / rate
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def client(n: int) -> None:
            await asyncio.sleep(interval * n / clients)
            next_at = time.perf_counter()
            end = next_at + seconds
            i = 0
            while next_at < end:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                body = {"account": "bench", "to": f"wxid_{n}_{i}", "message": {"kind": "text", "text": "大促"}}
                started = time.perf_counter()
                async with session.post(f"{url}/v1/messages", json=body, headers=headers) as response:
                    await response.read()
                    assert response.status == 202, response.status
                latencies.append(time.perf_counter() - started)
                i += 1
                next_at += interval

        await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies


async def closed_loop(url: str, clients: int, seconds: float) -> tuple[list[float], float]:
    import aiohttp

    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        end = time.perf_counter() + seconds

        async def client(n: int) -> None:
            i = 0
            while time.perf_counter() < end:
                body = {"account": "bench", "to": f"wxid_c{n}_{i}", "message": {"kind": "text", "text": "大促"}}
                started = time.perf_counter()
                async with session.post(f"{url}/v1/messages", json=body, headers=headers) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(clients)))
        return latencies, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop total requests/s")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"command: python -m bench.fanout {' '.join(sys.argv[1:])}".rstrip(), f"| cores: {os.cpu_count()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        port = free_port()
        env = {
            **os.environ,
            "BROADCAST_REDIS_URL": server.url,
            "BROADCAST_VENDOR_ALLOW": "127.0.0.0/8",
            "BROADCAST_API_TOKEN": TOKEN,
            "BROADCAST_SECRET_KEY": Fernet.generate_key().decode(),  # prod stores tokens only encrypted
            "BROADCAST_KEY_PREFIX": "fan",
            "BROADCAST_LOG_LEVEL": "WARNING",
        }
        api = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli.app", "api", "--port", str(port)], cwd=ROOT, env=env,
            stdout=(tmp / "api.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"API did not start; see {tmp / 'api.log'}")
                time.sleep(0.1)
            for name in ("bench", "bench2"):
                http.put(
                    f"/v1/accounts/{name}",
                    json={
                        "vendor": "gewe",
                        "base_url": "http://127.0.0.1:9/gewe/v2/api",
                        "token": "t0ken",
                        "instance": name,
                    },
                ).raise_for_status()
            n = args.recipients
            message = {"kind": "text", "text": "{name} 你好, 双十一大促开始了"}

            recipients = [{"to": f"wxid_{i:07d}", "vars": {"name": f"用户{i}"}} for i in range(n)]
            body = json.dumps(
                {"name": "fanout", "accounts": ["bench", "bench2"], "recipients": recipients, "message": message}
            ).encode()
            before = used_memory(client)
            started = time.perf_counter()
            answer = http.post("/v1/campaigns", content=body, headers={"Content-Type": "application/json"})
            json_s = time.perf_counter() - started
            answer.raise_for_status()
            after = used_memory(client)
            per_job = (after - before) / n

            csv_body = "to,name\n" + "".join(f"wxid_u{i:07d},用户{i}\n" for i in range(n))
            spec = json.dumps({"name": "fanout-csv", "accounts": ["bench", "bench2"], "message": message})
            started = time.perf_counter()
            upload = http.post(
                "/v1/campaigns/upload",
                data={"spec": spec},
                files={"recipients": ("r.csv", csv_body.encode(), "text/csv")},
            )
            csv_s = time.perf_counter() - started
            upload.raise_for_status()

            open_lat = asyncio.run(open_loop(url, args.clients, args.rate, args.seconds))
            closed_lat, elapsed = asyncio.run(closed_loop(url, args.clients, args.seconds))
        finally:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(10)
    print(f"\n{n:,} recipients, {os.cpu_count()} cores, private Redis, one uvicorn API process")
    print(
        f"accept campaign as JSON ({len(body) / 1e6:.1f} MB)   {json_s:6.2f} s   (target ≤ 5 s)   total={answer.json()['total']}"
    )
    print(
        f"accept campaign as CSV upload ({len(csv_body.encode()) / 1e6:.1f} MB) {csv_s:6.2f} s   total={upload.json()['total']}"
    )
    print(f"Redis bytes per pending job          {per_job:6.0f} B   (target ≤ 1,024 B; used_memory before/after)")
    print(
        f"POST /v1/messages, {args.clients} clients, open loop {args.rate:.0f} req/s: "
        f"p50 {1000 * statistics.median(open_lat):.1f} ms, p99 {1000 * pct(open_lat, 0.99):.1f} ms ({len(open_lat)} requests; target p99 ≤ 20 ms)"
    )
    print(
        f"POST /v1/messages, {args.clients} clients, closed loop: {len(closed_lat) / elapsed:.0f} req/s, "
        f"p50 {1000 * statistics.median(closed_lat):.1f} ms, p99 {1000 * pct(closed_lat, 0.99):.1f} ms (saturation: latency = queueing)"
    )


if __name__ == "__main__":
    main()
