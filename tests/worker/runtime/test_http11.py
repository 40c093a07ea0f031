"""The vendor transport (worker/runtime/http11.py) against a raw server writing the bytes a test chooses:
framings, keep-alive, the pool's limits, refused headers, TLS. Deadlines, resets mid-write and idle closes
are in test_deadline.py and test_idle_connections.py."""

from __future__ import annotations

import datetime
import gzip
import json
import socket
import ssl
import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.rawhttp import RawServer, gewe_sent, http_ok, read_request
from worker.errors import AmbiguousError, PermanentError, TransientError
from worker.messages import TextMessage
from worker.runtime.http11 import Http11Transport, VendorClient
from worker.vendors.base import SendResult, VendorAccount, backend_for

Answer = Callable[[int], bytes]


class ScriptedVendor(RawServer):
    """Answers each request it reads whole with ``answer(n)`` (n counts requests from 1), keeping the
    connection open until the client closes it or ``answer`` returns a reply ending in a close marker."""

    CLOSE = b"<close>"

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.connections += 1
        with conn:
            while True:
                body = read_request(conn)
                if body is None:
                    return
                with self.lock:
                    self.requests.append(body)
                    n = len(self.requests)
                reply = self.answer(n)
                if reply.endswith(self.CLOSE):
                    conn.sendall(reply[: -len(self.CLOSE)])
                    return
                conn.sendall(reply)


@pytest.fixture
def vendor(request: pytest.FixtureRequest) -> Iterator[ScriptedVendor]:
    server = ScriptedVendor(request.param)
    yield server
    server.close()


def _client(**options: object) -> httpx.Client:
    settings: dict[str, object] = {"deadline_s": 10.0, "max_connections": 4, "keepalive_expiry": 5.0}
    settings.update(options)
    return httpx.Client(transport=Http11Transport(**settings), timeout=5.0)  # type: ignore[arg-type]


def _post(client: httpx.Client, url: str, n: int = 1) -> httpx.Response:
    return client.post(url, json={"appId": "app-1", "toWxid": f"wxid_{n}", "content": "hi"})


def chunked(n: int) -> bytes:
    body = gewe_sent()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    one, two = body[:10], body[10:]
    return (
        head
        + f"{len(one):x};ext=1\r\n".encode() + one + b"\r\n"
        + f"{len(two):X}\r\n".encode() + two + b"\r\n"
        + b"0\r\nX-Trailer: t\r\n\r\n"
    )  # fmt: skip


@pytest.mark.parametrize("vendor", [chunked], indirect=True)
def test_a_chunked_answer_is_decoded_and_its_connection_carries_the_next_request(vendor: ScriptedVendor) -> None:
    with _client() as client:
        answers = [_post(client, vendor.url, n).json() for n in range(3)]
    assert [a["ret"] for a in answers] == [200, 200, 200]
    assert answers[0]["data"]["newMsgId"] == 7645748705605226305
    assert vendor.connections == 1 and len(vendor.requests) == 3


def until_close(n: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + gewe_sent() + ScriptedVendor.CLOSE


def http10(n: int) -> bytes:
    return http_ok(gewe_sent()).replace(b"HTTP/1.1", b"HTTP/1.0", 1)


def connection_close(n: int) -> bytes:
    return http_ok(gewe_sent()).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)


@pytest.mark.parametrize("vendor", [until_close, http10, connection_close], indirect=True)
def test_an_answer_that_ends_its_connection_is_read_whole_and_the_next_request_opens_another(
    vendor: ScriptedVendor,
) -> None:
    with _client() as client:
        answers = [_post(client, vendor.url, n).json()["ret"] for n in range(2)]
    assert answers == [200, 200]
    assert vendor.connections == 2


def interim(n: int) -> bytes:
    return b"HTTP/1.1 100 Continue\r\n\r\n" + http_ok(gewe_sent())


def gzipped(n: int) -> bytes:
    body = gzip.compress(gewe_sent())
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@pytest.mark.parametrize("vendor", [interim, gzipped], indirect=True)
def test_an_interim_answer_is_skipped_and_a_gzipped_one_decoded(vendor: ScriptedVendor) -> None:
    with _client() as client:
        assert _post(client, vendor.url).json()["ret"] == 200
        assert _post(client, vendor.url).json()["ret"] == 200
    assert vendor.connections == 1


def cut_short(n: int) -> bytes:
    return http_ok(gewe_sent())[:-5] + ScriptedVendor.CLOSE


def oversized_head(n: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n\r\n{}"


def not_http(n: int) -> bytes:
    return b"SSH-2.0-OpenSSH_9.2\r\n\r\n" + ScriptedVendor.CLOSE


def head_just_over(n: int) -> bytes:  # arrives in one read with its end: still over the limit
    return http_ok(gewe_sent()).replace(b"\r\n", b"\r\nX-Pad: " + b"a" * 66_000 + b"\r\n", 1)


def two_lengths(n: int) -> bytes:
    return http_ok(gewe_sent()).replace(b"\r\n\r\n", b"\r\nContent-Length: 3\r\n\r\n", 1)


@pytest.mark.parametrize("vendor", [cut_short, oversized_head, head_just_over, not_http, two_lengths], indirect=True)
def test_a_broken_answer_after_the_request_left_is_an_unknown_outcome(vendor: ScriptedVendor) -> None:
    account = VendorAccount(vendor="gewe", base_url=vendor.url, token="t", instance="app-1")
    with _client() as client, pytest.raises(AmbiguousError, match="outcome unknown"):
        backend_for(account, client).send("wxid_x", TextMessage(text="hi"))
    assert len(vendor.requests) == 1


def encoded(coding: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _vendor_client() -> VendorClient:
    return VendorClient(Http11Transport(deadline_s=10.0, max_connections=4, keepalive_expiry=5.0), timeout=5.0)


def _send(vendor: ScriptedVendor) -> SendResult:
    account = VendorAccount(vendor="gewe", base_url=vendor.url, token="t", instance="app-1")
    with _vendor_client() as client:
        return backend_for(account, client).send("wxid_x", TextMessage(text="hi"))


@pytest.mark.parametrize(
    "vendor",
    [lambda n: encoded("gzip", gzip.compress(gewe_sent())), lambda n: encoded("deflate", zlib.compress(gewe_sent()))],
    indirect=True,
)
def test_a_compressed_answer_on_the_vendor_path_is_inflated(vendor: ScriptedVendor) -> None:
    assert _send(vendor).new_msg_id == 7645748705605226305


#: 64 MB of spaces after an opening brace: about 64 KB on the wire
_BOMB = gzip.compress(b"{" + b" " * (64 * 1024 * 1024), compresslevel=9)


@pytest.mark.parametrize(
    ("vendor", "why"),
    [
        (lambda n: encoded("gzip", b"abcd"), "broken gzip"),
        (lambda n: encoded("gzip", gzip.compress(gewe_sent())[:-12]), "cut short"),
        (lambda n: encoded("br", b"\x0b\x02\x80{}\x03"), "cannot read"),
        (lambda n: encoded("deflate, gzip", gzip.compress(gewe_sent())), "cannot read"),
    ],
    indirect=["vendor"],
)
def test_an_answer_that_cannot_be_inflated_or_inflates_past_the_limit_is_an_unknown_outcome(
    vendor: ScriptedVendor, why: str
) -> None:
    with pytest.raises(AmbiguousError, match=f"{why}.*outcome unknown"):
        _send(vendor)
    assert len(vendor.requests) == 1


@pytest.mark.parametrize("vendor", [lambda n: encoded("gzip", _BOMB)], indirect=True)
def test_a_gzip_bomb_is_inflated_no_further_than_the_answer_limit(vendor: ScriptedVendor) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(AmbiguousError, match=r"over 1048576 bytes.*outcome unknown"):
            _send(vendor)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024  # httpx's own decoder inflates the whole 64 KB chunk: 64 MB


def chunk_size(size: bytes) -> Answer:
    body = gewe_sent()
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    return lambda n: head + size + b"\r\n" + body + b"\r\n0\r\n\r\n" + ScriptedVendor.CLOSE


@pytest.mark.parametrize(
    "vendor",
    [chunk_size(f"0x{len(gewe_sent()):x}".encode()), chunk_size(f"+{len(gewe_sent()):x}".encode())],
    indirect=True,
)
def test_a_chunk_size_that_is_not_plain_hex_is_a_broken_answer(vendor: ScriptedVendor) -> None:
    with pytest.raises(AmbiguousError, match="outcome unknown"):
        _send(vendor)
    assert len(vendor.requests) == 1


def chunked_and_length(n: int) -> bytes:
    body = gewe_sent()
    return (
        f"HTTP/1.1 200 OK\r\nContent-Length: {len(body) + 9}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    )  # fmt: skip


@pytest.mark.parametrize("vendor", [chunked_and_length], indirect=True)
def test_an_answer_framed_two_ways_is_read_by_its_chunks_and_its_connection_not_reused(vendor: ScriptedVendor) -> None:
    with _vendor_client() as client:
        backend = backend_for(VendorAccount(vendor="gewe", base_url=vendor.url, token="t", instance="app-1"), client)
        for to in ("wxid_x", "wxid_y"):
            assert backend.send(to, TextMessage(text="hi")).new_msg_id == 7645748705605226305
    assert vendor.connections == 2


def switching(n: int) -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
        if n == 1
        else http_ok(gewe_sent())
    )


@pytest.mark.parametrize("vendor", [switching], indirect=True)
def test_a_connection_that_switched_protocols_never_carries_another_request(vendor: ScriptedVendor) -> None:
    account = VendorAccount(vendor="gewe", base_url=vendor.url, token="t", instance="app-1")
    with _vendor_client() as client:
        backend = backend_for(account, client)
        with pytest.raises(AmbiguousError):
            backend.send("wxid_x", TextMessage(text="hi"))
        assert backend.send("wxid_y", TextMessage(text="hi")).new_msg_id == 7645748705605226305
    assert vendor.connections == 2


@pytest.mark.parametrize("vendor", [lambda n: http_ok(gewe_sent())], indirect=True)
@pytest.mark.parametrize("token", ["t\r\nX-Injected: 1", "t\nHost: elsewhere", "t\x00"])
def test_a_header_that_would_split_the_request_is_refused_before_anything_is_sent(
    vendor: ScriptedVendor, token: str
) -> None:
    account = VendorAccount(vendor="gewe", base_url=vendor.url, token=token, instance="app-1")
    with _client() as client, pytest.raises(PermanentError, match="cannot build the request"):
        backend_for(account, client).send("wxid_x", TextMessage(text="hi"))
    assert vendor.connections == 0


@pytest.mark.parametrize("vendor", [lambda n: http_ok(gewe_sent())], indirect=True)
def test_keepalive_zero_opens_a_fresh_connection_for_every_call(vendor: ScriptedVendor) -> None:
    with _client(keepalive_expiry=0.0) as client:
        for n in range(3):
            assert _post(client, vendor.url, n).json()["ret"] == 200
    assert vendor.connections == 3


class HoldingVendor(ScriptedVendor):
    """Answers once ``release`` is set: a call in flight holds its connection."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.arrived = threading.Event()

        def answer(n: int) -> bytes:
            self.arrived.set()
            self.release.wait(30)
            return http_ok(gewe_sent())

        super().__init__(answer)


def test_no_free_connection_is_a_send_that_did_not_leave() -> None:
    server = HoldingVendor()
    account = VendorAccount(vendor="gewe", base_url=server.url, token="t", instance="app-1")
    client = httpx.Client(
        transport=Http11Transport(deadline_s=30.0, max_connections=1, keepalive_expiry=5.0),
        timeout=httpx.Timeout(5.0, pool=0.2),
    )
    first: list[object] = []
    holder = threading.Thread(
        target=lambda: first.append(backend_for(account, client).send("wxid_1", TextMessage(text="a")))
    )
    try:
        holder.start()
        assert server.arrived.wait(10)
        with pytest.raises(TransientError, match="not sent, PoolTimeout"):
            backend_for(account, client).send("wxid_2", TextMessage(text="b"))
        server.release.set()
        holder.join(10)
        assert len(first) == 1  # the first call ended normally, and gave its connection back
        backend_for(account, client).send("wxid_3", TextMessage(text="c"))
    finally:
        server.release.set()
        client.close()
        server.close()
    assert [json.loads(r)["toWxid"] for r in server.requests] == ["wxid_1", "wxid_3"]
    assert server.connections == 1


# --- TLS -----------------------------------------------------------------------------------------------------


def _certificates(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate it signed for ``localhost``: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class TlsVendor(ScriptedVendor):
    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        super().__init__(lambda n: http_ok(gewe_sent()))

    def serve(self, conn: socket.socket) -> None:
        try:
            wrapped = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            with self.lock:
                self.connections += 1
            conn.close()
            return
        super().serve(wrapped)


def test_tls_is_verified_for_the_hosts_name_and_a_certificate_that_does_not_match_never_gets_the_request(
    tmp_path: Path,
) -> None:
    ca, cert, key = _certificates(tmp_path)
    server = TlsVendor(cert, key)
    port = server.url.rsplit(":", 1)[1]
    trusting = ssl.create_default_context(cafile=str(ca))
    try:
        with _client(ssl_context=trusting) as client:
            assert _post(client, f"https://localhost:{port}/").json()["ret"] == 200
            assert _post(client, f"https://localhost:{port}/").json()["ret"] == 200
        account = VendorAccount(vendor="gewe", base_url=f"https://127.0.0.1:{port}", token="t", instance="app-1")
        # the certificate names localhost, not 127.0.0.1
        with _client(ssl_context=trusting) as client, pytest.raises(TransientError, match="not sent, ConnectError"):
            backend_for(account, client).send("wxid_x", TextMessage(text="hi"))
        # the system's CAs do not know the test CA
        with _client() as client, pytest.raises(httpx.ConnectError, match="certificate verify failed"):
            _post(client, f"https://localhost:{port}/")
    finally:
        server.close()
    assert len(server.requests) == 2


def with_cookie(n: int) -> bytes:
    return http_ok(gewe_sent()).replace(b"\r\n\r\n", f"\r\nSet-Cookie: session=account-{n}; Path=/\r\n\r\n".encode(), 1)


class HeaderRecordingVendor(ScriptedVendor):
    """Keeps each request's head too."""

    def __init__(self, answer: Answer) -> None:
        self.heads: list[bytes] = []
        super().__init__(answer)

    def serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(
                    next(
                        v
                        for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                        if k.lower() == b"content-length"
                    )
                )
                while len(body) < length:
                    body += conn.recv(65536)
                with self.lock:
                    self.heads.append(head)
                    self.requests.append(body)
                    n = len(self.requests)
                conn.sendall(self.answer(n))


def test_a_cookie_one_account_was_given_is_neither_kept_nor_sent_on_another_accounts_call() -> None:
    """The vendor client serves every account of a process: nothing one vendor answer sets is kept in it."""
    from worker.runtime.connections import new_vendor_http_client
    from worker.settings import Settings

    server = HeaderRecordingVendor(with_cookie)
    first = VendorAccount(vendor="gewe", base_url=server.url, token="token-a", instance="app-a")
    second = VendorAccount(vendor="gewe", base_url=server.url, token="token-b", instance="app-b")
    try:
        with new_vendor_http_client(Settings(vendor_allow="127.0.0.0/8")) as client:
            backend_for(first, client).send("wxid_1", TextMessage(text="a"))
            backend_for(second, client).send("wxid_2", TextMessage(text="b"))
            assert len(client.cookies.jar) == 0
    finally:
        server.close()
    assert len(server.heads) == 2
    assert all(b"cookie:" not in head.lower() for head in server.heads), server.heads
    assert b"X-GEWE-TOKEN: token-b" in server.heads[1]
