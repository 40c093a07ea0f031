"""The peer for bench/throughput.py: a plain Celery task making the same vendor call, no bookkeeping."""

from __future__ import annotations

import os

import httpx
from celery import Celery

app = Celery("plain", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue="plain-bench",
    worker_hijack_root_logger=False,
)
_client: httpx.Client | None = None


@app.task(name="plain.post_text")  # type: ignore[untyped-decorator]
def post_text(url: str, token: str, body: dict[str, str]) -> None:
    """POST GeWe postText, check the envelope, nothing else."""
    global _client
    if _client is None:
        # no pool cap below the concurrency: under ``-P threads -c 300`` every thread gets its connection
        _client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))
    response = _client.post(url, json=body, headers={"X-GEWE-TOKEN": token})
    if response.json().get("ret") != 200:
        raise RuntimeError("send failed")
