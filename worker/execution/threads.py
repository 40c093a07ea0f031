"""The session threads of a worker process: where a Celery message's sessions beyond its first run.

``concurrent.futures.ThreadPoolExecutor`` did this, but each submit built a ``Future`` (a ``Condition`` with
its own lock and waiter list) and went through a ``Semaphore``: about 5% of a worker's CPU where every
session sends once (py-spy ``--gil``, ``bench.envelope`` 10,000 × 2). A session needs less: a queue the
threads take work from (``queue.SimpleQueue``, in C) and one lock its caller waits on.

Threads start as work needs them, up to the pool's size, and then stay (daemon threads: a worker stopping
has already waited for its tasks, and each task waits for its sessions). Work beyond the size waits in the
queue, as with the executor.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Pending(Generic[T]):
    """One call handed to the threads: :meth:`result` waits for it."""

    __slots__ = ("_call", "_done", "_error", "_value")

    def __init__(self, call: Callable[[], T]) -> None:
        self._call = call
        self._value: T | None = None
        self._error: BaseException | None = None
        self._done = threading.Lock()
        self._done.acquire()

    def run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as error:  # noqa: BLE001 - handed to the caller of result(), who raises it
            self._error = error
        finally:
            self._done.release()

    def result(self) -> T:
        """The call's return value, once it ran (its exception raised here)."""
        with self._done:
            pass
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


class SessionThreads:
    """Up to ``size`` daemon threads running handed-over calls in the order they came."""

    def __init__(self, size: int, name: str = "session") -> None:
        self.size = size
        self.name = name
        self._work: queue.SimpleQueue[Pending[Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = 0
        self._idle = 0

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Pending[T]:
        """Run ``fn(*args, **kwargs)`` on a thread: an idle one, a new one while under ``size``, else the
        first to be free."""
        pending: Pending[T] = Pending(lambda: fn(*args, **kwargs))
        start = False
        with self._lock:
            if self._idle > 0:
                self._idle -= 1  # taken: the next submit does not count on it
            elif self._started < self.size:
                self._started += 1
                start = True
        self._work.put(pending)
        if start:
            threading.Thread(target=self._serve, name=f"{self.name}-{self._started}", daemon=True).start()
        return pending

    def _serve(self) -> None:
        while True:
            self._work.get().run()
            with self._lock:
                self._idle += 1
