"""Starting real processes for tests: a private redis-server, the worker, the scheduler."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from scheduler.devtools.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent


class RedisServer(EmbeddedRedis):
    """A private redis-server for the test session."""


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
