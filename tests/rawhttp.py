"""A bare TCP server for HTTP edge cases no real server produces on demand (a dribbled answer, an idle timer
that fires late, a reset mid-request): one thread per connection, the test writes the bytes."""

from __future__ import annotations

import json
import socket
import threading
import time


class RawServer:
    """Listens on a free loopback port; each connection goes to :meth:`serve` on its own thread."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()


def read_request(conn: socket.socket) -> bytes | None:
    """One HTTP/1.1 request's body (Content-Length framing); None when the peer closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return body


def gewe_sent() -> bytes:
    """A GeWe ``postText`` answer saying the message went out."""
    return json.dumps(
        {"ret": 200, "msg": "操作成功", "data": {"toWxid": "x", "newMsgId": 7645748705605226305, "msgId": 1,
         "createTime": int(time.time()), "type": 1}}
    ).encode()  # fmt: skip


def http_ok(body: bytes) -> bytes:
    """A whole HTTP/1.1 200 answer carrying a JSON ``body``."""
    return f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
