"""No false unknown outcomes from idle keep-alive connections (issue 22).

A server closes a keep-alive connection it has seen idle for its own timeout (uvicorn: 5 s). an HTTP client notices
a close that already arrived (the idle socket reads as readable) and opens a new connection, but a server whose
idle timer fires just as the next request arrives closes a connection the client has already written to: the
request is dropped unread, and the client, seeing a dropped connection after a written request, must call the
send an unknown outcome. :class:`LateClosingVendor` reproduces that deterministically: its idle timer (0.2 s)
fires only after 1.5 s, so a request written at 0.3 s is always in its buffer when it closes.

The cure is on the client: ``BROADCAST_VENDOR_KEEPALIVE_S`` below the server's timeout, so a connection idle
that long is never reused. And a request that provably did not leave whole (the peer reset the connection
while it was being written) is transient, not unknown, although the connection then reads as dropped.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from tests.rawhttp import RawServer, gewe_sent, http_ok, read_request
from worker.errors import AmbiguousError, TransientError
from worker.messages import TextMessage
from worker.runtime.connections import new_vendor_http_client
from worker.settings import Settings
from worker.vendors.base import HttpBackend, VendorAccount, backend_for

SERVER_IDLE_S = 0.2  # the server's keep-alive timeout
TIMER_LATE_S = 1.5  # when its idle timer actually runs (a busy event loop)
REUSE_AFTER_S = 0.3  # the client's next send: past the server's timeout, before its timer ran


class LateClosingVendor(RawServer):
    """A GeWe-speaking HTTP/1.1 server: answers a request, then keeps the connection until its idle timer
    runs (late) and closes it, whatever arrived meanwhile, unread. Records every request it read whole."""

    def __init__(self) -> None:
        self.received: list[dict[str, object]] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with conn:
            body = read_request(conn)
            if body is None:
                return
            with self.lock:
                self.received.append(json.loads(body))
            conn.sendall(http_ok(gewe_sent()))
            time.sleep(TIMER_LATE_S)  # the idle timer (SERVER_IDLE_S) runs late; it closes, reading nothing

    def sent_to(self, to: str) -> int:
        with self.lock:
            return sum(1 for r in self.received if r.get("toWxid") == to)


@pytest.fixture
def vendor() -> Iterator[LateClosingVendor]:
    server = LateClosingVendor()
    yield server
    server.close()


def _send_twice(vendor: LateClosingVendor, settings: Settings) -> None:
    """A send, a pause past the server's idle timeout, a second send; raises what the second one raises."""
    account = VendorAccount(vendor="gewe", base_url=vendor.url, token="t", instance="app-1")
    with new_vendor_http_client(settings) as client:
        backend = backend_for(account, client)
        backend.send("wxid_first", TextMessage(text="hi"))
        time.sleep(REUSE_AFTER_S)
        backend.send("wxid_second", TextMessage(text="hi"))


def test_a_connection_idle_past_the_keepalive_is_not_reused_so_the_send_goes_out_once(
    vendor: LateClosingVendor,
) -> None:
    settings = Settings(vendor_allow="127.0.0.0/8", vendor_keepalive_s=SERVER_IDLE_S / 2)
    _send_twice(vendor, settings)  # no unknown outcome: the second send went on a new connection
    assert vendor.sent_to("wxid_first") == 1
    assert vendor.sent_to("wxid_second") == 1


def test_a_request_written_to_a_connection_the_server_then_drops_stays_an_unknown_outcome(
    vendor: LateClosingVendor,
) -> None:
    """The race the setting avoids, with a keep-alive longer than the server's: the request was written
    whole, so nothing says the vendor did not act on it."""
    settings = Settings(vendor_allow="127.0.0.0/8", vendor_keepalive_s=5.0)
    with pytest.raises(AmbiguousError):
        _send_twice(vendor, settings)
    assert vendor.sent_to("wxid_second") == 0  # dropped unread here, but the client could not know


class ResettingVendor(RawServer):
    """Reads the first bytes of a request, then resets the connection (RST), as a server that gave up on it."""

    def __init__(self) -> None:
        self.connections = 0
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.connections += 1
        conn.recv(1024)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


def test_a_request_the_server_reset_before_it_was_written_whole_is_retried_not_unknown() -> None:
    """A reset while the request is being written is a request that did not leave (never "dropped after
    the request was written", as a transport reading on after the failed write would report it)."""
    server = ResettingVendor()
    settings = Settings(vendor_allow="127.0.0.0/8", vendor_write_timeout_s=10.0)
    account = VendorAccount(vendor="gewe", base_url=server.url, token="t", instance="app-1")
    try:
        with new_vendor_http_client(settings) as client:
            # far more than the sockets' buffers hold, so the write is still going when the reset comes
            backend = backend_for(account, client)
            assert isinstance(backend, HttpBackend)
            with pytest.raises(TransientError, match="not fully sent"):
                backend.post("/message/postText", {"appId": "app-1", "toWxid": "wxid_x", "content": "x" * 32_000_000})
    finally:
        server.close()
    assert server.connections == 1


class ClosingVendor(LateClosingVendor):
    """Answers one request per connection, then closes it at once (an idle timer that already fired)."""

    def __init__(self) -> None:
        self.accepted = 0
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.accepted += 1
        with conn:
            body = read_request(conn)
            if body is not None:
                with self.lock:
                    self.received.append(json.loads(body))
                conn.sendall(http_ok(gewe_sent()))


def test_a_connection_the_server_closed_while_idle_is_seen_before_the_write_and_the_send_goes_out_once() -> None:
    """The server closes an idle connection on its own timer; a thread that then takes it from the pool may
    write long after (hundreds share the interpreter). The close that arrived is seen just before the write:
    nothing was written, so the send goes out on a new connection, once, with no error."""
    server = ClosingVendor()
    settings = Settings(vendor_allow="127.0.0.0/8", vendor_keepalive_s=5.0)
    account = VendorAccount(vendor="gewe", base_url=server.url, token="t", instance="app-1")
    try:
        with new_vendor_http_client(settings) as client:
            backend = backend_for(account, client)
            backend.send("wxid_first", TextMessage(text="hi"))
            time.sleep(0.2)  # the server's close arrives
            backend.send("wxid_second", TextMessage(text="hi"))
    finally:
        server.close()
    assert server.sent_to("wxid_first") == 1
    assert server.sent_to("wxid_second") == 1
    assert server.accepted == 2
