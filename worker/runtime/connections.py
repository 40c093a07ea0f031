"""Clients for Redis and the vendors, built on first use in each process (never at import).

Celery's prefork pool forks after import; a socket opened before the fork would be shared by every child.

Vendor calls get one overall deadline. httpx's timeouts bound each socket operation, so a vendor (or a
proxy) that dribbles its answer a byte at a time holds a call open for as long as it likes, past the
account's lease — and then a second worker would send for the same account while the first call is still
open. The vendor transport (:mod:`worker.runtime.http11`) gives every request a deadline and shrinks each
connect/read/write timeout to what is left of it, so the call ends (as a timeout, hence an unknown
outcome) when the deadline passes, whatever the peer does. A request whose bytes did not all get out is
reported as ``httpx.WriteError`` (retried: the vendor cannot act on half a request).

Vendor calls reach only addresses :class:`VendorNetwork` allows (``BROADCAST_VENDOR_DENY`` /
``BROADCAST_VENDOR_ALLOW``; in ``prod`` loopback, link-local such as the cloud metadata service at
169.254.169.254, and "this host" are refused): the host is resolved once, every address checked, and the
connection made to the checked address, so a name cannot resolve elsewhere between the check and the connect.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
import httpx
import redis
import redis.sentinel
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from worker.errors import redact
from worker.runtime.http11 import Http11Transport, VendorClient
from worker.settings import Settings, get_settings

_redis: dict[str, redis.Redis] = {}
_http: list[httpx.Client] | None = None

#: ``BROADCAST_VENDOR_DENY=auto`` in ``prod``: loopback, "this host", link-local and the cloud metadata services
#: outside it (Alibaba Cloud ECS 100.100.100.200, AWS IMDS over IPv6 fd00:ec2::254).
DEFAULT_VENDOR_DENY = (
    "127.0.0.0/8,0.0.0.0/8,169.254.0.0/16,100.100.100.200/32,::1/128,::/128,fe80::/10,fd00:ec2::254/128"
)
#: IPv6 ranges whose last 32 bits are an IPv4 address a connection reaches (IPv4-compatible, the NAT64
#: well-known prefix): judged by the IPv4 rules, like IPv4-mapped ``::ffff:a.b.c.d``. ``::`` and ``::1``
#: are no IPv4-compatible addresses (RFC 4291 2.5.5.1).
_EMBEDDING_IPV4 = (
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # SIIT IPv4-translated ::ffff:0:a.b.c.d (RFC 2765)
)
#: 6to4 (RFC 3056): the IPv4 address is bits 16-48 (``2002:a.b.c.d::/48``).
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_NOT_EMBEDDING = ipaddress.IPv6Network("::/127")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class VendorNetwork:
    """The address ranges vendor calls may not reach, and the exceptions to them."""

    deny: tuple[Network, ...] = ()
    allow: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> VendorNetwork:
        """Raises ValueError naming the setting when a range is not a CIDR."""
        deny = settings.vendor_deny.strip().lower()
        if deny == "auto":
            deny = "" if settings.env == "dev" else DEFAULT_VENDOR_DENY
        elif deny == "none":
            deny = ""
        return cls(_ranges(deny, "BROADCAST_VENDOR_DENY"), _ranges(settings.vendor_allow, "BROADCAST_VENDOR_ALLOW"))

    def refuses(self, address: str) -> bool:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            elif ip not in _NOT_EMBEDDING and any(ip in net for net in _EMBEDDING_IPV4):
                ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            elif ip in _SIX_TO_FOUR:
                ip = ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)
        return any(ip in net for net in self.deny) and not any(ip in net for net in self.allow)

    def literal_refused(self, host: str) -> str | None:
        """The address ``host`` spells when it is a refused IP literal in any form (``2130706433``,
        ``0x7f000001``, ``127.1``, ``[::1]``) or ``localhost``; None otherwise (names are checked at connect)."""
        if not self.deny:
            return None
        # meant as an IP literal: bracketed, percent-encoded, or a last label starting with a digit (no TLD does)
        last = host.rstrip(".").rsplit(".", 1)[-1]
        looks_literal = host.startswith("[") or host.endswith("]") or "%" in host or last[:1].isdigit()
        host = host.strip("[]").rstrip(".").lower()
        if host == "localhost" or host.endswith(".localhost"):
            return "127.0.0.1" if self.refuses("127.0.0.1") else None
        try:
            address = str(socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)[0][4][0])
        except (OSError, UnicodeError):
            # an IP literal that does not parse (``[fe80::1%25lo]``, ``127.1%2e0.1``) may parse elsewhere
            return host or "?" if looks_literal else None
        return address if self.refuses(address) else None

    def address_for(self, host: str, port: int) -> str:
        """The address to connect to for ``host``: its first allowed one. Raises httpx.ConnectError."""
        if not self.deny:
            return host
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
        addresses = [str(info[4][0]) for info in found]
        for address in addresses:
            if not self.refuses(address):
                return address
        raise httpx.ConnectError(
            f"{host} resolves to {addresses[0] if addresses else '?'}, an address vendor calls may not reach "
            "(BROADCAST_VENDOR_DENY / BROADCAST_VENDOR_ALLOW)"
        )


def _ranges(spec: str, setting: str) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"{setting}: {exc}") from None


#: Redis connections one process opens at most. Its threads borrow one per command or script (well under
#: a millisecond each) and wait for a free one rather than fail: hundreds of sending threads share them.
REDIS_CONNECTIONS = 64
#: How long a thread waits for a free Redis connection before it counts as a Redis outage.
REDIS_POOL_WAIT_S = 10.0
#: Socket timeouts of every Redis client: a primary that hangs (SIGSTOP, a partition) is a connection error
#: after this long, so the caller retries against whichever primary the Sentinels name next. Blocking
#: commands (the dispatcher's BLPOP, WAIT) send their own timeout, shorter than this.
REDIS_SOCKET_TIMEOUT_S = 5.0


class CommandPacker:
    """Packs a command in one C call. redis-py encodes each argument in Python before hiredis packs them
    (about 0.5 µs an argument; a session's BEGIN and FINISH carry 20-30): hiredis packs str, int, float
    and bytes itself, to the same bytes (``tests/worker/runtime/test_connections.py``). Anything else
    (a bytearray, a bool, a command name with a space such as ``CLIENT SETINFO``) goes through redis-py's
    own packer, with its checks and errors."""

    def __init__(self) -> None:
        serializer: Any = PythonRespSerializer  # redis-py's packer and encoder carry no annotations
        encoder: Any = Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]
        self._fallback: Callable[..., list[bytes]] = serializer(6000, encoder.encode).pack

    def pack(self, *args: Any) -> list[bytes]:
        head = args[0]
        if (" " in head) if isinstance(head, str) else (not isinstance(head, bytes) or b" " in head):
            return list(self._fallback(*args))
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a type hiredis does not pack: redis-py's packer encodes it or refuses it (bool)
            return list(self._fallback(*args))


#: one per process: it holds no state
COMMAND_PACKER = CommandPacker()


class SentinelBlockingPool(redis.sentinel.SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's Sentinel pool (asks the Sentinels for the primary on every new connection, drops
    connections to a primary that was demoted) that makes threads wait for a free connection, as the
    plain pool does, instead of raising when all are in use."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is, parsed from ``BROADCAST_REDIS_URL`` (docs/deployment.md lists the forms)."""

    url: str
    #: (host, port) of each Sentinel; empty for a plain ``redis://`` or ``rediss://`` URL
    sentinels: tuple[tuple[str, int], ...] = ()
    #: the primary's ACL user, password and database (from the URL), for Sentinel
    username: str | None = None
    password: str | None = None
    db: int = 0

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)


def parse_redis_url(url: str) -> RedisTarget:
    """``redis://``/``rediss://`` as is; ``sentinel://h1:p1;sentinel://h2:p2`` (kombu's convention: the
    first URL may carry the primary's ``user:password@`` and ``/db``) as a list of Sentinels.

    An error never quotes the URL (it may carry the primary's password, and a ``;`` inside a password
    splits it across parts): it names the part by its place and what was expected."""
    if not url.startswith("sentinel://"):
        return RedisTarget(url)
    sentinels: list[tuple[str, int]] = []
    username = password = None
    db = 0
    for n, part in enumerate(filter(None, (p.strip() for p in url.split(";"))), start=1):
        where = f"BROADCAST_REDIS_URL: part {n} of the sentinel list (not shown: it may carry a password)"
        try:
            parsed = urlsplit(part)
            host, port, path = parsed.hostname, parsed.port, parsed.path.strip("/")
            if path and not (path.isascii() and path.isdigit()):
                raise ValueError("the database must be a number")
        except ValueError:
            raise ValueError(f"{where} is not sentinel://host:port[/db]") from None
        if parsed.scheme != "sentinel" or not host:
            raise ValueError(f"{where} is not sentinel://host:port")
        sentinels.append((host, port or 26379))
        username = username or (unquote(parsed.username) if parsed.username else None)
        password = password or (unquote(parsed.password) if parsed.password else None)
        if path:
            db = int(path)
    return RedisTarget(url, tuple(sentinels), username, password, db)


def _url_secrets(url: str) -> list[str]:
    """The user and password a URL may carry, raw and percent-decoded (what an error must not show)."""
    found: list[str] = []
    for part in url.split(";"):
        userinfo = part.partition("://")[2].rpartition("@")[0]
        for piece in (userinfo, *userinfo.split(":")):
            found += [piece, unquote(piece)]
    return sorted(set(found), key=len, reverse=True)


def _tls_options(url: str, settings: Settings) -> dict[str, Any]:
    """Certificate checks for ``rediss://`` (managed Redis): always verified, against the CA file if given."""
    if not url.startswith("rediss://"):
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required"}
    if settings.redis_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.redis_ca_file)
    return options


def new_redis_client(url: str, settings: Settings | None = None) -> redis.Redis:
    """A new client (strings decoded, a blocking pool shared by the process's threads) for any of the
    three forms. With Sentinel it is redis-py's ``Sentinel(...).master_for(...)``: every new connection
    goes to the current primary, and a connection to a demoted one is dropped (READONLY answers turn
    into connection errors, which every caller here retries)."""
    settings = settings or get_settings()
    target = parse_redis_url(url)
    common: dict[str, Any] = {
        "decode_responses": True,
        "health_check_interval": 30,
        "socket_keepalive": True,
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": REDIS_SOCKET_TIMEOUT_S,
        "command_packer": COMMAND_PACKER,
    }
    if not target.is_sentinel:
        try:
            pool = redis.BlockingConnectionPool.from_url(
                url,
                max_connections=REDIS_CONNECTIONS,
                timeout=REDIS_POOL_WAIT_S,
                **common,
                **_tls_options(url, settings),
            )
        except ValueError as exc:  # redis-py's words may quote the URL's parts: never its password
            raise ValueError(
                "BROADCAST_REDIS_URL (not shown: it may carry a password) is not redis://[user:password@]host:port[/db] "
                f"or rediss://…: {redact(str(exc), _url_secrets(url))}"
            ) from None
        return redis.Redis(connection_pool=pool)
    sentinel_password = settings.redis_sentinel_password.get_secret_value() or None
    sentinel = redis.sentinel.Sentinel(
        list(target.sentinels),
        sentinel_kwargs={
            "password": sentinel_password,
            "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": REDIS_SOCKET_TIMEOUT_S,
        },
    )
    primary: redis.Redis = sentinel.master_for(
        settings.redis_master_name,
        redis_class=redis.Redis,
        connection_pool_class=SentinelBlockingPool,
        max_connections=REDIS_CONNECTIONS,
        timeout=REDIS_POOL_WAIT_S,
        username=target.username,
        password=target.password,
        db=target.db,
        **common,
    )
    return primary


def redis_client(url: str, settings: Settings | None = None) -> redis.Redis:
    """This process's shared client for a URL (see :func:`new_redis_client`)."""
    client = _redis.get(url)
    if client is None:
        client = _redis[url] = new_redis_client(url, settings)
    return client


def celery_broker(settings: Settings) -> dict[str, Any]:
    """The Celery settings that point the broker at the same Redis as the store, in the same form.

    With Sentinel, kombu's sentinel transport asks the Sentinels for the primary (``master_name``) on
    every (re)connection. Either way the consumer retries its connection forever and treats a channel
    error as a connection loss (``broker_channel_error_retry``, celery#7951): a worker never exits
    because Redis went away or changed primary."""
    target = parse_redis_url(settings.redis_url)
    options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    socket = {
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": REDIS_SOCKET_TIMEOUT_S,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry_on_timeout": True,
    }
    options.update(socket)
    conf: dict[str, Any] = {
        "broker_url": settings.redis_url,
        "broker_connection_retry": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_channel_error_retry": True,
        "broker_transport_options": options,
    }
    if target.is_sentinel:
        conf["broker_transport"] = "worker.runtime.broker:SentinelTransport"
        options["master_name"] = settings.redis_master_name
        sentinel_password = settings.redis_sentinel_password.get_secret_value()
        options["sentinel_kwargs"] = {
            "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
            **({"password": sentinel_password} if sentinel_password else {}),
        }
    else:
        # kombu's Redis transport, minus a restore-on-close that kills a threads-pool worker when Redis
        # restarts (worker/runtime/broker.py says why that is safe)
        conf["broker_transport"] = "worker.runtime.broker:Transport"
        if settings.redis_url.startswith("rediss://"):
            conf["broker_use_ssl"] = {
                "ssl_cert_reqs": ssl.CERT_REQUIRED,
                **({"ssl_ca_certs": str(settings.redis_ca_file)} if settings.redis_ca_file else {}),
            }
    return conf


def new_vendor_http_client(settings: Settings, *, max_connections: int = 64) -> httpx.Client:
    """A keep-alive pool for vendor calls, every call bounded by ``vendor_deadline_s`` overall; a connection
    idle past ``vendor_keepalive_s`` is closed rather than reused (a server closing it as a request goes out
    would leave that send an unknown outcome)."""
    transport = Http11Transport(
        deadline_s=settings.vendor_deadline_s,
        max_connections=max_connections,
        keepalive_expiry=settings.vendor_keepalive_s,
        network=VendorNetwork.from_settings(settings),
    )
    return VendorClient(
        transport,
        timeout=httpx.Timeout(
            connect=settings.vendor_connect_timeout_s,
            read=settings.vendor_read_timeout_s,
            write=settings.vendor_write_timeout_s,
            pool=settings.vendor_pool_timeout_s,
        ),
        follow_redirects=False,
        trust_env=False,
    )


#: Connections per vendor client: every call takes its pool's lock twice, so a process that holds hundreds
#: of calls open spreads them over several small pools (by account) instead of one big one.
CONNECTIONS_PER_POOL = 32


def vendor_http_clients(settings: Settings, *, max_connections: int = 64) -> list[httpx.Client]:
    """This process's vendor clients (sync: see worker.vendors.base), shared by its sending threads: one
    pool of at most CONNECTIONS_PER_POOL connections per slice of ``max_connections``."""
    global _http
    if _http is None:
        shards = max(1, -(-max_connections // CONNECTIONS_PER_POOL))
        _http = [new_vendor_http_client(settings, max_connections=CONNECTIONS_PER_POOL) for _ in range(shards)]
    return _http


def reset_after_fork() -> None:
    """Forget clients inherited from a parent process."""
    global _http
    _redis.clear()
    _http = None


def vendor_http_client(settings: Settings) -> httpx.Client:
    """One vendor client of this process (the API's online checks and revokes)."""
    return vendor_http_clients(settings)[0]
