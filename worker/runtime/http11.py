"""A lean HTTP/1.1 transport for vendor calls: httpx's client API on plain sockets.

Why not httpx's own transport (httpcore + h11): measured with ``bench.transports``, it costs a vendor call
≈ 2.4 units of CPU on top of httpx's client (≈ 1 unit), and several times that again when hundreds of
sending threads share the interpreter (issue 22). A vendor call is one small JSON POST answered by one small
JSON body over keep-alive HTTP/1.1: this transport does just that, on the standard library's sockets, with
one pool per client and one ``sendall`` per request.

What it keeps of the product's guarantees (``docs/design.md``, "Outcomes"):

- **a deadline over the whole call**: every socket operation's timeout is capped by what is left of it, so
  a peer dribbling its answer a byte at a time cannot hold the call (and the account's lease) open;
- **the line between "never left" and "may have reached the vendor"** drawn where the bytes are: no
  connection (``ConnectError``/``ConnectTimeout``), no free connection (``PoolTimeout``) or a request not
  written whole (``WriteError``/``WriteTimeout``) are requests that did not leave; anything that goes wrong
  after the last byte was written (``ReadError``, ``ReadTimeout``, ``RemoteProtocolError``) may have
  reached the vendor;
- **no stale keep-alive connection**: one idle longer than ``keepalive_expiry`` is closed, never reused, and
  one the server closed meanwhile is seen just before the write (nothing written yet) and replaced;
- **only allowed addresses**: the host is resolved and checked by the vendor network policy, and the
  connection made to the checked address (TLS still verifies the certificate for the host's name);
- **no header injection**: a header name or value with a line break is refused before anything is sent
  (``LocalProtocolError``: the account's configuration is wrong).

What it leaves out, as no vendor call needs it: HTTP/2, proxies, ``Expect: 100-continue``, upgrades.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

import httpx

#: A response head longer than this is no vendor's answer.
MAX_HEAD_BYTES = 64 * 1024
#: One chunk-size line of a chunked body, at most.
MAX_CHUNK_LINE_BYTES = 1024
_RECV_BYTES = 65536
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: RFC 9110 5.1 token characters (a header name); a value may hold anything but CR, LF and NUL.
_HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A chunk size: hex digits only (RFC 9112 §7.1), at most 16 of them (2**64 bytes).
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_BAD_VALUE = re.compile(rb"[\r\n\x00]")

Origin = tuple[str, str, int]


class AddressPolicy(Protocol):
    """Where vendor calls may connect (``worker.runtime.connections.VendorNetwork``)."""

    def address_for(self, host: str, port: int) -> str: ...


class _Anywhere:
    def address_for(self, host: str, port: int) -> str:
        return host


class _Deadline:
    """The call's overall deadline, capping each socket operation's own timeout."""

    __slots__ = ("at",)

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self, timeout: float | None, error: type[httpx.TimeoutException], request: httpx.Request) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise error("the vendor call passed its overall deadline", request=request)
        return left if timeout is None else min(timeout, left)


class _Connection:
    """One keep-alive connection: its socket, its origin, and when it went idle."""

    __slots__ = ("idle_since", "origin", "poller", "sock")

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.sock: socket.socket | None = None
        self.poller: select.poll | None = None
        self.idle_since = 0.0

    def attach(self, sock: socket.socket) -> None:
        self.sock = sock
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)

    def closed_by_peer(self) -> bool:
        """True when an idle connection has something to read: the server closed it (or sent what no
        request asked for). Either way it must not carry a request."""
        sock, poller = self.sock, self.poller
        if sock is None or poller is None:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = self.poller = None


class Http11Transport(httpx.BaseTransport):
    """A pool of keep-alive HTTP/1.1 connections shared by a process's threads (see the module's doc)."""

    def __init__(
        self,
        *,
        deadline_s: float,
        max_connections: int,
        keepalive_expiry: float | None,
        network: AddressPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.deadline_s = deadline_s
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._network: AddressPolicy = network or _Anywhere()
        self._ssl = ssl_context
        self._cond = threading.Condition()
        #: idle connections by origin, the most recently used last
        self._idle: dict[Origin, list[_Connection]] = {}
        #: connections open, being opened or in use: at most ``max_connections``
        self._count = 0
        self._closed = False

    # --- the pool -----------------------------------------------------------------------------------------

    def _checkout(
        self, origin: Origin, deadline: _Deadline, pool_timeout: float | None, request: httpx.Request
    ) -> _Connection:
        """A connection for ``origin``: an idle one still fit to carry a request, or a slot for a new one."""
        until = deadline.at if pool_timeout is None else min(deadline.at, time.monotonic() + pool_timeout)
        with self._cond:
            while True:
                if self._closed:
                    raise httpx.ConnectError("the vendor client is closed", request=request)
                idle = self._idle.get(origin)
                while idle:
                    conn = idle.pop()
                    if self._fresh(conn):
                        return conn
                    conn.close()
                    self._count -= 1
                if self._count < self.max_connections:
                    self._count += 1
                    return _Connection(origin)
                if self._evict_one():  # an idle connection to another origin gives its slot up
                    continue
                wait = until - time.monotonic()
                if wait <= 0:
                    raise httpx.PoolTimeout("no free connection to the vendor in time", request=request)
                self._cond.wait(wait)

    def _fresh(self, conn: _Connection) -> bool:
        """Not idle past ``keepalive_expiry``: a server may be closing it just as a request goes out.
        (Whether the server closed it already is looked at just before the write.)"""
        return self.keepalive_expiry is None or time.monotonic() - conn.idle_since <= self.keepalive_expiry

    def _evict_one(self) -> bool:
        for origin, idle in self._idle.items():
            if idle:
                idle.pop(0).close()  # the one idle longest
                self._count -= 1
                if not idle:
                    del self._idle[origin]
                return True
        return False

    def _release(self, conn: _Connection, reusable: bool) -> None:
        with self._cond:
            if reusable and not self._closed and conn.sock is not None:
                conn.idle_since = time.monotonic()
                self._idle.setdefault(conn.origin, []).append(conn)
            else:
                conn.close()
                self._count -= 1
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for idle in self._idle.values():
                for conn in idle:
                    conn.close()
                    self._count -= 1
            self._idle.clear()
            self._cond.notify_all()

    # --- one request --------------------------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = _Deadline(self.deadline_s)
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        if url.scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(
                f"the URL's scheme must be http or https, not {url.scheme!r}", request=request
            )
        if not url.host:
            raise httpx.UnsupportedProtocol("the URL has no host", request=request)
        origin: Origin = (url.scheme, url.host, url.port or _DEFAULT_PORTS[url.scheme])
        data = _serialize(request)  # refuses a bad header before a connection is taken
        conn = self._checkout(origin, deadline, timeouts.get("pool"), request)
        try:
            if conn.closed_by_peer():
                # the server closed it while it was idle (its own timer): looked at just before the write,
                # as a thread may wait for the interpreter a long time among hundreds; nothing was written,
                # so the request goes out on a new connection
                conn.close()
            if conn.sock is None:
                conn.attach(self._connect(origin, deadline, timeouts.get("connect"), request))
            sock = conn.sock
            assert sock is not None
            try:
                sock.settimeout(deadline.left(timeouts.get("write"), httpx.WriteTimeout, request))
                sock.sendall(data)
            except TimeoutError:
                raise httpx.WriteTimeout("the request was not written whole in time", request=request) from None
            except OSError as exc:
                raise httpx.WriteError(f"the request was not written whole: {exc}", request=request) from None
            reader = _Reader(sock, deadline, timeouts.get("read"), request)
            version, status, reason, headers = reader.head()
            framing = _framing(request.method, status, version, headers, request)
        except BaseException:
            self._release(conn, reusable=False)
            raise
        body = _Body(self, conn, reader, framing)
        return httpx.Response(
            status,
            headers=headers,
            stream=body,
            request=request,
            extensions={"http_version": version, "reason_phrase": reason},
        )

    def _connect(
        self, origin: Origin, deadline: _Deadline, timeout: float | None, request: httpx.Request
    ) -> socket.socket:
        scheme, host, port = origin
        try:
            address = self._network.address_for(host, port)
        except httpx.ConnectError as exc:
            raise httpx.ConnectError(str(exc), request=request) from None
        try:
            sock = socket.create_connection(
                (address, port), timeout=deadline.left(timeout, httpx.ConnectTimeout, request)
            )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} in time", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}", request=request) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                context = self._ssl or httpx.create_ssl_context(trust_env=False)
                sock = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
                sock.settimeout(deadline.left(timeout, httpx.ConnectTimeout, request))
                sock.do_handshake()
        except TimeoutError:
            sock.close()
            raise httpx.ConnectTimeout(f"no TLS session with {host}:{port} in time", request=request) from None
        except OSError as exc:  # ssl.SSLError included: a certificate that does not verify
            sock.close()
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}", request=request) from None
        except BaseException:
            sock.close()
            raise
        return sock


def _serialize(request: httpx.Request) -> bytes:
    """The request's head and body as one buffer; raises LocalProtocolError for a header that would split."""
    target = request.url.raw_path or b"/"
    lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    for name, value in request.headers.raw:
        if not _HEADER_NAME.fullmatch(name) or _BAD_VALUE.search(value):
            raise httpx.LocalProtocolError(
                f"header {name[:40]!r} is not a valid HTTP header name or value", request=request
            )
        lines.append(name + b": " + value)
    lines.append(b"\r\n")
    return b"\r\n".join(lines) + request.read()


class _Reader:
    """Reads a response from a socket, every read bounded by the read timeout and the call's deadline."""

    __slots__ = ("buffer", "deadline", "eof", "request", "sock", "timeout")

    def __init__(self, sock: socket.socket, deadline: _Deadline, timeout: float | None, request: httpx.Request) -> None:
        self.sock = sock
        self.deadline = deadline
        self.timeout = timeout
        self.request = request
        self.buffer = bytearray()
        self.eof = False

    def fill(self) -> bool:
        """Read what arrives next into the buffer; False at the end of the stream."""
        if self.eof:
            return False
        try:
            self.sock.settimeout(self.deadline.left(self.timeout, httpx.ReadTimeout, self.request))
            chunk = self.sock.recv(_RECV_BYTES)
        except TimeoutError:
            raise httpx.ReadTimeout("no answer from the vendor in time", request=self.request) from None
        except OSError as exc:
            raise httpx.ReadError(
                f"the connection failed while the answer was awaited: {exc}", request=self.request
            ) from None
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def line(self, limit: int) -> bytes:
        """One CRLF-terminated line, without its CRLF."""
        start = 0
        while True:
            end = self.buffer.find(b"\r\n", start)
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            if len(self.buffer) > limit:
                raise httpx.RemoteProtocolError("a line of the vendor's answer is too long", request=self.request)
            start = max(0, len(self.buffer) - 1)
            if not self.fill():
                raise httpx.RemoteProtocolError("the vendor closed the connection mid-answer", request=self.request)

    def head(self) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
        """The status line and headers of the final response (an interim 1xx is skipped)."""
        while True:
            start = 0
            while (end := self.buffer.find(b"\r\n\r\n", start)) < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    raise httpx.RemoteProtocolError("the vendor's answer has an oversized head", request=self.request)
                start = max(0, len(self.buffer) - 3)
                if not self.fill():
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response."
                        if not self.buffer
                        else "the vendor closed the connection mid-answer",
                        request=self.request,
                    )
            if end > MAX_HEAD_BYTES:  # a head found whole in the read that went past the limit
                raise httpx.RemoteProtocolError("the vendor's answer has an oversized head", request=self.request)
            raw = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            version, status, reason, headers = _parse_head(raw, self.request)
            if 100 <= status < 200 and status != 101:
                continue
            return version, status, reason, headers

    def take(self, n: int) -> bytes:
        """Up to ``n`` bytes: what is buffered, or what arrives next; b"" at the end of the stream."""
        if not self.buffer and not self.fill():
            return b""
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


def _parse_head(raw: bytes, request: httpx.Request) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise httpx.RemoteProtocolError("the vendor's answer is not HTTP/1.x", request=request)
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise httpx.RemoteProtocolError("the vendor's answer has a malformed header", request=request)
        headers.append((name, value.strip(b" \t")))
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else b"", headers


def _framing(
    method: str, status: int, version: bytes, headers: list[tuple[bytes, bytes]], request: httpx.Request
) -> tuple[str, int, bool]:
    """How the body is delimited, its length when known, and whether the connection may carry another request."""
    connection = b",".join(v.lower() for n, v in headers if n.lower() == b"connection")
    keep_alive = version == b"HTTP/1.1" and b"close" not in {t.strip() for t in connection.split(b",")}
    if status == 101:  # the server switched protocols: whatever follows is no HTTP/1.1 answer
        return "none", 0, False
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return "none", 0, keep_alive
    codings = [v.lower() for n, v in headers if n.lower() == b"transfer-encoding"]
    if codings:
        if b",".join(codings).split(b",")[-1].strip() == b"chunked":
            # with a Content-Length beside it the two framings disagree (RFC 9112 §6.3): read the chunks,
            # then close, so nothing the other framing would have read can be taken for the next answer
            has_length = any(n.lower() == b"content-length" for n, _ in headers)
            return "chunked", 0, keep_alive and not has_length
        return "close", 0, False
    lengths = {v for n, v in headers if n.lower() == b"content-length"}
    if lengths:
        if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
            raise httpx.RemoteProtocolError("the vendor's answer has an invalid Content-Length", request=request)
        return "length", int(lengths.pop()), keep_alive
    return "close", 0, False


class _Body(httpx.SyncByteStream):
    """The response body, read as it is iterated; the connection goes back to the pool only when the body
    was read to its end and the server allows another request on it."""

    def __init__(
        self, transport: Http11Transport, conn: _Connection, reader: _Reader, framing: tuple[str, int, bool]
    ) -> None:
        self._transport = transport
        self._conn: _Connection | None = conn
        self._reader = reader
        self._kind, self._length, self._keep_alive = framing
        self._complete = self._kind == "none"

    def __iter__(self) -> Iterator[bytes]:
        if self._kind == "length":
            yield from self._by_length()
        elif self._kind == "chunked":
            yield from self._chunked()
        elif self._kind == "close":
            while chunk := self._reader.take(_RECV_BYTES):
                yield chunk
            self._complete = True
        self.close()

    def _by_length(self) -> Iterator[bytes]:
        left = self._length
        while left > 0:
            chunk = self._reader.take(min(left, _RECV_BYTES))
            if not chunk:
                raise httpx.RemoteProtocolError(
                    "the vendor closed the connection before its whole answer", request=self._reader.request
                )
            left -= len(chunk)
            yield chunk
        self._complete = True

    def _chunked(self) -> Iterator[bytes]:
        reader = self._reader
        while True:
            size_line = reader.line(MAX_CHUNK_LINE_BYTES).split(b";", 1)[0].strip(b" \t")
            if not _CHUNK_SIZE.fullmatch(size_line):  # int(…, 16) would also take "0x1f", "+5" and "1_0"
                raise httpx.RemoteProtocolError("the vendor's answer has a malformed chunk", request=reader.request)
            size = int(size_line, 16)
            if size == 0:
                while reader.line(MAX_HEAD_BYTES):  # trailers, up to the empty line
                    pass
                self._complete = True
                return
            while size > 0:
                chunk = reader.take(min(size, _RECV_BYTES))
                if not chunk:
                    raise httpx.RemoteProtocolError(
                        "the vendor closed the connection mid-chunk", request=reader.request
                    )
                size -= len(chunk)
                yield chunk
            if reader.line(2) != b"":
                raise httpx.RemoteProtocolError("the vendor's answer has a malformed chunk", request=reader.request)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            reusable = self._complete and self._keep_alive and not self._reader.buffer
            self._transport._release(conn, reusable)


class VendorClient(httpx.Client):
    """httpx's client on :class:`Http11Transport`, with a direct path for vendor calls (``send_direct``).

    ``Client.send`` keeps every ``Set-Cookie`` of every vendor answer in a jar the client's accounts share
    (growing for as long as the process lives), runs the redirect and auth machinery and logs a line per
    request: nothing a vendor call uses, and together as much CPU as the transport itself
    (``bench.transports``)."""

    def __init__(self, transport: Http11Transport, **options: Any) -> None:
        super().__init__(transport=transport, **options)
        self.vendor_transport = transport

    def send_direct(self, request: httpx.Request) -> httpx.Response:
        """The request on the transport as it is: no cookies, no redirects, no auth; the body streamed."""
        return self.vendor_transport.handle_request(request)
