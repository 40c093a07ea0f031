"""How ``broadcast worker`` starts: Celery's threads pool, one process per CPU core.

Every send is I/O-bound and accounts are independent, so a process holds many sessions at once in
threads (``BROADCAST_WORKER_CONCURRENCY``, default 500: sessions wait for their vendor or their next pacing
slot, not for the CPU). Python runs one thread at a time per process, though, and a busy worker spends
about 3 ms of CPU per send (Celery, httpx, Redis scripts, the log line): one process tops out near 330
sends/s on this kind of machine (``bench.envelope``, 1,000 accounts at a 1 s gap). So by default the
command starts ``BROADCAST_WORKER_PROCESSES`` (default: the number of CPU cores) such processes, each a
Celery worker with its own node name, and stays in front of them: it forwards SIGTERM/SIGINT, and when
one of them ends (killed, crashed, stopped alone) it stops the others and exits non-zero, so the process supervisor
(Docker's restart policy, systemd) starts the whole again at full capacity. With explicit ``-P``/``-c``/``-n`` options, or one process, Celery runs in this process.

Each of those processes runs on one core (``BROADCAST_WORKER_PIN_CPUS``, on by default, Linux): the cores
this command may use (its affinity: a container's ``--cpuset-cpus``, ``taskset``) are dealt out in turn.
Only one thread of a process runs Python at a time and hundreds hand the interpreter to each other on every
blocking call; a thread woken on another core than the one that let go costs an inter-processor wake-up and
cold caches each time. Kept on one core, a process's hand-offs are plain context switches: up to 27% less
worker CPU per send through campaigns, most where a session sends once, none in the busiest case
(``bench.envelope``, docs/benchmarks.md), at no cost in sends/s, since a process never runs more than one
thread of Python at once anyway. Redis, the scheduler and the API stay where the
kernel puts them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

from worker.settings import Settings

#: Celery's short worker options that take no value, so more letters may follow them in one argument
#: (``-Ec4`` is ``-E -c 4``)
_SHORT_FLAGS = frozenset("EBD")


def _given(args: Sequence[str], *names: str) -> bool:
    """Whether any of the options ``names`` is among ``args``, in any spelling Celery reads: ``-c 4``,
    ``-c4``, ``-Ec4``, ``--concurrency 4``, ``--concurrency=4``."""
    short = {n[1] for n in names if not n.startswith("--")}
    long = [n for n in names if n.startswith("--")]
    for arg in args:
        if arg.startswith("--"):
            if any(arg == n or arg.startswith(n + "=") for n in long):
                return True
        elif arg.startswith("-"):
            for letter in arg[1:]:
                if letter in short:
                    return True
                if letter not in _SHORT_FLAGS:
                    break  # the rest is this option's value
    return False


def celery_argv(settings: Settings, user_args: Sequence[str]) -> list[str]:
    """``celery worker`` arguments: our queue, events on for Flower, the threads pool by default."""
    args = ["worker", "-Q", settings.celery_queue, "--loglevel", settings.log_level, "-E"]
    if not _given(user_args, "-P", "--pool"):
        args += ["-P", "threads"]
        if not _given(user_args, "-c", "--concurrency"):  # threads; another pool chosen keeps Celery's own size
            args += ["-c", str(settings.worker_concurrency)]
    return [*args, *user_args]


def usable_cpus() -> list[int]:
    """The CPU cores this process may run on (its affinity: a container's cpuset, ``taskset``), in order;
    where the platform does not say, all of ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def processes_for(settings: Settings, user_args: Sequence[str]) -> int:
    """How many worker processes to run: one when the user chose the pool, its size or the node name;
    else ``worker_processes``, or one per usable core."""
    if _given(user_args, "-P", "--pool", "-c", "--concurrency", "-n", "--hostname"):
        return 1
    return settings.worker_processes or len(usable_cpus())


def cores_for(count: int, settings: Settings) -> list[int | None]:
    """The core each of ``count`` worker processes is pinned to, the usable ones dealt out in turn; None
    (the kernel chooses) for all when pinning is off or not supported (not Linux)."""
    if not settings.worker_pin_cpus or not hasattr(os, "sched_setaffinity"):
        return [None] * count
    cpus = usable_cpus()
    return [cpus[i % len(cpus)] for i in range(count)]


#: Set in the environment of the processes :func:`supervise` starts (worker/runtime/celery_app.py reads it).
SUPERVISED_ENV = "BROADCAST_WORKER_SUPERVISED"


def _child_setup(core: int | None, parent: int) -> Callable[[], None] | None:
    """What a worker process does between fork and exec (Linux): get SIGTERM when the supervisor dies, even
    by SIGKILL, never linger orphaned (and exit at once if it died before that was set: ``parent`` is the
    supervisor's pid); and run on ``core`` (before exec, so every thread it starts does)."""
    if not sys.platform.startswith("linux"):
        return None

    def setup() -> None:
        # the supervisor's own handlers are Python's: a signal caught by one here would be lost at exec
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:  # the supervisor died before the death signal was set: nobody would send it
            os._exit(1)
        if core is not None:
            with contextlib.suppress(OSError):  # a core taken away meanwhile: the kernel places it
                os.sched_setaffinity(0, {core})

    return setup


def supervise(count: int, user_args: Sequence[str], cores: Sequence[int | None] | None = None) -> int:
    """Run ``count`` worker processes (``broadcast worker`` each, as one process, named apart from those of
    any other supervisor on the host), process i on ``cores[i]`` (None: anywhere), until they exit. They
    share this process group, so a terminal's Ctrl-C or a group-wide signal reaches them directly; a
    SIGTERM, SIGINT or SIGHUP sent to this process alone (``docker stop``, a closed terminal) is passed on
    as SIGTERM: a warm shutdown that lets each finish its sessions (a second SIGINT would make Celery stop
    cold). A worker process given SIGHUP stops too (celery_app.py), never restarts itself unsupervised.

    One process ending by itself (killed, crashed, stopped alone) means less capacity than configured: the
    others are stopped (saying which one ended and how) and the exit code is that process's (128 + the
    signal for one a signal killed: 137 for SIGKILL), at least 1, so whatever supervises this
    command (Docker, systemd's ``Restart=on-failure``) starts the whole again. Asked to stop, it exits with
    the highest code of its processes (0 after a clean warm shutdown)."""
    env = {**os.environ, "BROADCAST_WORKER_PROCESSES": "1", SUPERVISED_ENV: "1"}
    cores = list(cores) if cores is not None else [None] * count
    placed = ", ".join("any" if core is None else str(core) for core in cores)
    print(
        f"broadcast worker: {count} processes on cores {placed} / {count} 个进程，所在 CPU 核: {placed}",
        file=sys.stderr,
    )
    children: list[subprocess.Popen[bytes]] = []
    told: set[int] = set()  # the pids sent SIGTERM: once each, a second one would cut a warm shutdown short
    stopping = False

    def forward(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.pid not in told and child.poll() is None:
                told.add(child.pid)
                child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)  # before the first start: a stop asked for meanwhile reaches them all
    me = os.getpid()
    for i in range(count):
        if stopping:
            break
        name = f"broadcast{i + 1}-{me}@%h"  # two supervisors on one host must not share names
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "scheduler.cli.app", "worker", "-n", name, *user_args],
                env=env,
                preexec_fn=_child_setup(cores[i], me),
            )
        )
    if stopping:  # asked while a process was being started: that one was not in the list yet
        forward(signal.SIGTERM, None)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.5)
    asked = stopping
    ended = [child for child in children if child.returncode is not None]  # by themselves, when not asked
    if not asked:
        for i, child in enumerate(children):
            if child in ended:  # say which one ended and how, before the others stop
                print(
                    f"broadcast worker: process {i + 1} (pid {child.pid}) {_ended(child.returncode)}; stopping the"
                    f" others / 第 {i + 1} 个进程（pid {child.pid}）{_ended(child.returncode, zh=True)}，正在停止其余进程",
                    file=sys.stderr,
                )
        forward(signal.SIGTERM, None)
    codes = [_exit_code(child.wait()) for child in children]
    if asked:
        return max(codes, default=0)
    return max(1, *(_exit_code(child.returncode) for child in ended))  # the cause, not the ones stopped after


def _exit_code(returncode: int) -> int:
    """A process's end as a shell reports it: its exit code, or 128 + the signal that killed it (137 for
    SIGKILL), so whoever restarts the command can tell a kill from a failure."""
    return 128 - returncode if returncode < 0 else returncode


def signal_name(number: int) -> str:
    """``SIGKILL``, or ``signal 77`` for a number with no name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _ended(returncode: int, *, zh: bool = False) -> str:
    """``exited with code 1`` or ``was killed by SIGKILL``, in English or Chinese."""
    if returncode >= 0:
        return f"退出（代码 {returncode}）" if zh else f"exited with code {returncode}"
    name = signal_name(-returncode)
    return f"被 {name} 终止" if zh else f"was killed by {name}"
