"""How ``broadcast worker`` starts: Celery's threads pool, one process per CPU core.

Every send is I/O-bound and accounts are independent, so a process holds many sessions at once in
threads (``BROADCAST_WORKER_CONCURRENCY``, default 500: sessions wait for their vendor or their next pacing
slot, not for the CPU). Python runs one thread at a time per process, though, and a busy worker spends
about 3 ms of CPU per send (Celery, httpx, Redis scripts, the log line): one process tops out near 330
sends/s on this kind of machine (``bench.envelope``, 1,000 accounts at a 1 s gap). So by default the
command starts ``BROADCAST_WORKER_PROCESSES`` (default: the number of CPU cores) such processes, each a
Celery worker with its own node name, and stays in front of them: it forwards SIGTERM/SIGINT, and when
one of them ends (killed, crashed) it stops the others and exits with its code, so the process supervisor
(Docker's restart policy, systemd) starts the whole again at full capacity. With explicit ``-P``/``-c``/``-n`` options, or one process, Celery runs in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from worker.settings import Settings


def _given(args: Sequence[str], *names: str) -> bool:
    return any(a in names or any(a.startswith(n + "=") for n in names if n.startswith("--")) for a in args)


def celery_argv(settings: Settings, user_args: Sequence[str]) -> list[str]:
    """``celery worker`` arguments: our queue, events on for Flower, the threads pool by default."""
    args = ["worker", "-Q", settings.celery_queue, "--loglevel", settings.log_level, "-E"]
    if not _given(user_args, "-P", "--pool"):
        args += ["-P", "threads"]
    if not _given(user_args, "-c", "--concurrency"):
        args += ["-c", str(settings.worker_concurrency)]
    return [*args, *user_args]


def processes_for(settings: Settings, user_args: Sequence[str]) -> int:
    """How many worker processes to run: one when the user chose the pool, its size or the node name."""
    if _given(user_args, "-P", "--pool", "-c", "--concurrency", "-n", "--hostname"):
        return 1
    return settings.worker_processes or os.cpu_count() or 1


def _die_with_parent() -> None:
    """In a child: get SIGTERM when the supervisor dies, even by SIGKILL (Linux), never linger orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def supervise(count: int, user_args: Sequence[str]) -> int:
    """Run ``count`` worker processes (``broadcast worker`` each, as one process, named apart) until they
    exit. They share this process group, so a terminal's Ctrl-C or a group-wide signal reaches them
    directly; a SIGTERM or SIGINT sent to this process alone (``docker stop``) is passed on as SIGTERM: a warm
    shutdown that lets each finish its sessions (a second SIGINT would make Celery stop cold)."""
    env = {**os.environ, "BROADCAST_WORKER_PROCESSES": "1"}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli.app", "worker", "-n", f"broadcast{i + 1}@%h", *user_args],
            env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        for i in range(count)
    ]

    stopping = False

    def forward(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)  # once: a second one would cut a warm shutdown short

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    # one process gone (killed, crashed) means less capacity than configured: stop the others too and exit
    # with its code, so whatever supervises this command (Docker, systemd) restarts the whole
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    if not stopping:
        forward(signal.SIGTERM, None)
    codes = [child.wait() for child in children]
    return max((abs(c) for c in codes), default=0)
