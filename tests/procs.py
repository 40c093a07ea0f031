"""Starting real processes for tests: a private redis-server, the worker, the scheduler."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from scheduler.devtools.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent


class RedisServer(EmbeddedRedis):
    """A private redis-server for the test session."""


#: Ports for the servers tests start (redis-server, `broadcast api`, ...) come from a block of 1,000 per
#: pytest-xdist worker below Linux's ephemeral range (32768-60999), which neither bind(("", 0)) nor an
#: outgoing connection hands out. A port picked with bind(0) is free only until someone binds it: between
#: the pick and the started process's own bind (a second or two), the other worker could pick the same one,
#: and its server then fails to start while the first one answers both workers' requests. Each test run
#: starts at a random place in its block: two test runs on one machine (a developer's and CI's, say) would
#: otherwise walk the same ports in step and meet in that same window (seen: a run's upload test talked to
#: the other run's API).
PORTS_FROM = 20000
PORTS_PER_WORKER = 1000
_port_counter = itertools.count(random.randrange(PORTS_PER_WORKER))


def _worker_number() -> int:
    name = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... (unset without xdist)
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0


def free_port() -> int:
    """A TCP port free on loopback right now, from this worker's own block (not reused before the block
    wraps around): tests/conftest.py puts it in place of ``scheduler.devtools.embedded.free_port``."""
    first = PORTS_FROM + (_worker_number() % 12) * PORTS_PER_WORKER  # 12 blocks end below 32768
    for _ in range(PORTS_PER_WORKER):
        port = first + next(_port_counter) % PORTS_PER_WORKER
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken (or another service's)
        return port
    raise RuntimeError(f"no free port in {first}-{first + PORTS_PER_WORKER - 1}")


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


#: Whether the running test may start processes: tests/conftest.py sets it before each test from its
#: ``e2e`` marker, so a test that starts one unmarked fails at once instead of slowing ``make test-fast``.
processes_allowed = True


class Proc:
    """A ``broadcast`` subcommand in its own process group, output to a log file."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        if not processes_allowed:
            raise RuntimeError(
                f"`broadcast {args[0]}` started by a test not marked e2e: use the stack/api_stack fixtures "
                "(marked automatically) or add `pytestmark = pytest.mark.e2e` to the module"
            )
        self.args = args
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli.app", *args],
            cwd=ROOT,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a Celery worker and its pool children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self.kill(signal.SIGKILL)  # stray pool children too
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")
