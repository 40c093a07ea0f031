"""Clients for Redis and the vendors, built on first use in each process (never at import).

Celery's prefork pool forks after import; a socket opened before the fork would be shared by every child.
"""

from __future__ import annotations

import httpx
import redis

from worker.settings import Settings

_redis: dict[str, redis.Redis] = {}
_http: httpx.Client | None = None


def redis_client(url: str) -> redis.Redis:
    """A shared client (a connection pool) per URL, strings decoded."""
    client = _redis.get(url)
    if client is None:
        client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30, socket_keepalive=True)
        _redis[url] = client
    return client


def vendor_http_client(settings: Settings) -> httpx.Client:
    """One keep-alive pool for every vendor call of this process (sync: see worker.vendors.base)."""
    global _http
    if _http is None:
        _http = httpx.Client(
            timeout=httpx.Timeout(
                connect=settings.vendor_connect_timeout_s,
                read=settings.vendor_read_timeout_s,
                write=10.0,
                pool=settings.vendor_connect_timeout_s,
            ),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            follow_redirects=False,
            trust_env=False,
        )
    return _http


def reset_after_fork() -> None:
    """Forget clients inherited from a parent process."""
    global _http
    _redis.clear()
    _http = None
