"""Running the simulator: in a background thread for tests and benchmarks, or in the foreground.

`SimulatorServer` binds its listening socket itself before starting uvicorn, so `port=0` yields a free
port with no race, and `start()` returns only once the server accepts connections. uvicorn runs with
httptools and (when importable) uvloop, access log off and log level `warning`: the simulator must
never be the bottleneck of a benchmark.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
import tomllib
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import uvicorn

from simulator.app import create_app
from simulator.state import DEMO_ACCOUNTS, SimAccount, SimState

try:
    import uvloop  # noqa: F401

    _LOOP = "uvloop"
except ImportError:  # pragma: no cover - uvloop is optional
    _LOOP = "asyncio"


def load_accounts(path: str | Path) -> tuple[SimAccount, ...]:
    """Read accounts from a TOML file of `[[accounts]]` tables (vendor, instance, token, wxid?)."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    tables = data.get("accounts")
    if not isinstance(tables, list) or not tables:
        raise ValueError(f"{path}: expected one or more [[accounts]] tables")
    return tuple(SimAccount.from_json(table) for table in tables)


def _config(state: SimState, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(state),
        host=host,
        port=port,
        http="httptools",
        loop=_LOOP,
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )


def _format_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class SimulatorServer:
    """The simulator in a daemon thread: `start()`, use `.url` and `.state`, `stop()`.

    Also a context manager (`with SimulatorServer() as sim: ...`).
    """

    def __init__(
        self,
        accounts: Iterable[SimAccount] = DEMO_ACCOUNTS,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
    ) -> None:
        self.host = host
        self.state = SimState(accounts, seed=seed)
        self._requested_port = port
        self._port: int | None = None
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (known once started)."""
        if self._port is None:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:54321`."""
        return _format_url(self.host, self.port)

    def start(self, timeout: float = 10.0) -> SimulatorServer:
        """Bind, start uvicorn in a daemon thread and wait until it accepts connections."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self._port = sock.getsockname()[1]
        server = uvicorn.Server(_config(self.state, self.host, self._port))
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="vendor-simulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive():
                self._cleanup()
                raise RuntimeError("simulator failed to start")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"simulator did not start within {timeout} s")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit and wait for the thread (in-flight slow requests get ~1 s)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._server = None
        self._thread = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = 8899,
    accounts: Iterable[SimAccount] = DEMO_ACCOUNTS,
    seed: int | None = None,
    contacts: tuple[int, int] | None = None,
) -> None:
    """Run the simulator in the foreground until interrupted (SIGINT / SIGTERM). ``contacts``: (friends,
    groups) each account has."""
    state = SimState(accounts, seed=seed)
    if contacts is not None:
        state.contact_size = contacts
    print(f"vendor simulator listening on {_format_url(host, port)}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it handled
        uvicorn.Server(_config(state, host, port)).run()
