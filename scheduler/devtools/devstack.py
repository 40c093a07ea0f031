"""``broadcast dev``: the whole product on one machine with nothing installed but this package.

Starts, as child processes each in its own session (so a terminal's Ctrl-C reaches only this process): a
private Redis (unless ``BROADCAST_REDIS_URL`` is set), the vendor simulator with one demo account per vendor,
the API, a worker, the scheduler and Flower. Prints the URLs and an API token generated for this run.
Ctrl-C (or SIGTERM) stops the children one by one, consumers before what they consume: API, scheduler,
workers, Flower, simulator, and Redis last, so nothing logs a lost connection while shutting down.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from scheduler.devtools.embedded import EmbeddedRedis, free_port
from worker.runtime.launch import signal_name


def _how_it_ended(code: int) -> str:
    """``exit 1`` or ``killed by SIGKILL``: what an operator needs to know first about a dead service. A
    code above 128 is how ``broadcast worker`` reports a process of its own that a signal killed."""
    if code < 0:
        return f"killed by {signal_name(-code)}"
    if code > 128:
        return f"killed by {signal_name(code - 128)} (a worker process)"
    return f"exit {code}"


def _port_or_free(preferred: int) -> int:
    """``preferred`` when it is free on loopback (0: any free port), else a free one."""
    if preferred == 0:
        return free_port()
    with socket.socket() as sock:
        # as the servers themselves bind: a port whose old connections linger in TIME_WAIT (a restart a
        # minute later) is free, not taken
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


#: The order of shutdown: whoever calls a service stops before it (Redis, outside ``procs``, goes last).
#: What only the API, the workers and the scheduler need: the simulator and Flower never get it.
SECRETS = ("BROADCAST_API_TOKEN", "BROADCAST_SECRET_KEY")


def _without_secrets(env: Mapping[str, str]) -> dict[str, str | None]:
    return {**env, **dict.fromkeys(SECRETS)}


STOP_ORDER = ("api", "scheduler", "worker", "flower", "simulator")


@dataclass
class DevStack:
    """The processes of a development stack and how to reach them."""

    api_port: int = 8000
    flower_port: int = 5555
    sim_port: int = 8899
    #: The worker's concurrency (``-c``); 0 keeps ``broadcast worker``'s default.
    workers: int = 0
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="broadcast-dev-")))
    redis: EmbeddedRedis | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    token: str = ""
    redis_url: str = ""
    prefix: str = "bc"
    #: Services whose preferred port was taken: name -> (preferred, used instead).
    moved: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.flower_port}"

    def start(self, say: Callable[[str], None]) -> None:
        """Start everything and wait until the API answers."""
        wanted = {"API": self.api_port, "Flower": self.flower_port, "simulator": self.sim_port}
        self.api_port = _port_or_free(self.api_port)
        self.flower_port = _port_or_free(self.flower_port)
        self.sim_port = _port_or_free(self.sim_port)
        got = {"API": self.api_port, "Flower": self.flower_port, "simulator": self.sim_port}
        self.moved = {name: (port, got[name]) for name, port in wanted.items() if port and got[name] != port}
        self.redis_url = os.environ.get("BROADCAST_REDIS_URL", "")
        if not self.redis_url:
            self.redis = EmbeddedRedis(appendonly=True)
            self.redis_url = self.redis.url
            say(f"private Redis on {self.redis_url} (AOF on, temporary data in {self.redis.dir}, removed on exit)")
        self.token = os.environ.get("BROADCAST_API_TOKEN", "").split(",")[0] or secrets.token_urlsafe(24)
        self.prefix = os.environ.get("BROADCAST_KEY_PREFIX", "bc")
        # Flower's own password: the API token opens far more than Flower does (it is never given to Flower)
        self.flower_auth = os.environ.get("FLOWER_BASIC_AUTH") or f"broadcast:{secrets.token_urlsafe(18)}"
        # vendor tokens are encrypted in Redis: with a key made for this run unless one is given
        self.secret_key = os.environ.get("BROADCAST_SECRET_KEY") or Fernet.generate_key().decode()
        env = {
            "BROADCAST_REDIS_URL": self.redis_url,
            "BROADCAST_API_TOKEN": os.environ.get("BROADCAST_API_TOKEN") or self.token,
            "BROADCAST_ENV": "dev",
            "BROADCAST_SECRET_KEY": self.secret_key,
            "BROADCAST_KEY_PREFIX": self.prefix,
            # callback URLs point at this API (`broadcast accounts callback demo-gewe --register`)
            "BROADCAST_PUBLIC_URL": os.environ.get("BROADCAST_PUBLIC_URL") or self.api_url,
        }
        self._spawn("simulator", ["simulator", "--port", str(self.sim_port)], _without_secrets(env))
        self._wait(f"{self.sim_url}/_sim/health", "simulator")
        self._demo_accounts()
        self._spawn("api", ["api", "--port", str(self.api_port)], env)
        concurrency = ["-c", str(self.workers)] if self.workers else []
        self._spawn("worker", ["worker", *concurrency, "--without-gossip", "--without-mingle"], env)
        self._spawn("scheduler", ["scheduler"], env)
        # Flower takes POSTs that revoke tasks or shut workers down, from any web page the browser shows while
        # it runs: basic auth in dev too (FLOWER_BASIC_AUTH, or user "broadcast" with a password made for this run)
        flower_env = {
            **_without_secrets(env),
            "FLOWER_BASIC_AUTH": self.flower_auth,
            "FLOWER_UNAUTHENTICATED_API": "false",
        }
        self._spawn("flower", ["flower", "--port", str(self.flower_port)], flower_env)
        self._wait(f"{self.api_url}/healthz", "API")

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str | None]) -> None:
        """Start ``broadcast <args>`` with this shell's environment and ``env``; a name ``env`` maps to None
        is left out (a secret the process does not need, even when the shell has it)."""
        log = (self.log_dir / f"{name}.log").open("ab")
        merged = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli.app", *args],
            env={key: value for key, value in merged.items() if value is not None},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _wait(self, url: str, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.log_dir / (name + '.log')}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{what} did not come up within {timeout}s; logs in {self.log_dir}")

    def _demo_accounts(self) -> None:
        """One account per vendor on the simulator (its demo credentials), paced fast for a demo."""
        from simulator.state import DEMO_ACCOUNTS
        from worker.runtime.connections import redis_client
        from worker.store.accounts import AccountSpec, AccountStore

        store = AccountStore(redis_client(self.redis_url), self.prefix, secret_keys=self.secret_key.split(","))
        prefixes = {"gewe": "/gewe/v2/api", "gewe-legacy": "", "ecloud": "", "ohwxapi": ""}
        for demo in DEMO_ACCOUNTS:
            spec = AccountSpec.model_validate(
                {
                    "vendor": demo.vendor,
                    "base_url": self.sim_url + prefixes[demo.vendor],
                    "token": demo.token,
                    "instance": demo.instance,
                    "limits": DEMO_LIMITS,
                }
            )
            store.put(f"demo-{demo.vendor}", spec)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs.values())

    def stop(self) -> None:
        """Stop each service in ``STOP_ORDER`` (SIGTERM to its process group, up to 15 s, then SIGKILL),
        then the private Redis: every client is gone before the server it talks to."""
        names = [n for n in STOP_ORDER if n in self.procs] + [n for n in self.procs if n not in STOP_ORDER]
        for name in names:
            proc = self.procs[name]
            _signal_group(proc, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            _signal_group(proc, signal.SIGKILL)  # stragglers of the group (pool children)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        if self.redis is not None:
            self.redis.stop()

    def write_token_file(self) -> Path:
        """The token in a file only this user can read, so a ``try:`` line can load it without it landing
        in shell history; with this process's id beside it, and the token files of runs that were killed
        (no Ctrl-C, so no cleanup) removed, so ``cat <tmp>/broadcast-dev-*/api-token`` reads this run's."""
        for stale in all_token_files():
            if not _run_alive(stale):
                with contextlib.suppress(OSError):  # another user's: not ours to remove
                    stale.unlink()
        path = self.log_dir / "api-token"
        (self.log_dir / "dev.pid").write_text(f"{os.getpid()}\n")
        path.touch(mode=0o600)
        path.write_text(self.token + "\n")
        return path


def all_token_files() -> list[Path]:
    """Every ``broadcast dev`` token file in the temporary directory, live or left by a killed run."""
    return sorted(Path(tempfile.gettempdir()).glob("broadcast-dev-*/api-token"))


def live_token_files() -> list[Path]:
    """The token files of ``broadcast dev`` runs still running."""
    return [path for path in all_token_files() if _run_alive(path)]


def _run_alive(token_file: Path) -> bool:
    """Whether the run that wrote ``token_file`` still runs (the ``dev.pid`` beside it names a live process)."""
    try:
        os.kill(int((token_file.parent / "dev.pid").read_text().strip()), 0)
    except PermissionError:
        return True  # alive, another user's
    except (OSError, ValueError):
        return False
    return True


#: Demo pacing: fast enough to watch a campaign finish in seconds, still one send at a time per account.
DEMO_LIMITS = {
    "per_minute": 600,
    "min_interval_s": 0.05,
    "jitter_s": 0.05,
    "group_min_interval_s": 0.1,
    "group_jitter_s": 0.1,
}


def _broadcast_command() -> str:
    """``broadcast`` when it is on PATH, else its full path in this interpreter's environment."""
    import shutil

    if shutil.which("broadcast"):
        return "broadcast"
    candidate = Path(sys.executable).parent / "broadcast"
    return str(candidate) if candidate.exists() else f"{sys.executable} -m scheduler.cli.app"


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _never_raising(say: Callable[[str], None]) -> Callable[[str], None]:
    def said(line: str) -> None:
        # a closed terminal or pipe: rich's console answers a broken pipe with SystemExit(1)
        with contextlib.suppress(OSError, ValueError, SystemExit):
            say(line)

    return said


def run_dev(
    *, api_port: int, flower_port: int, sim_port: int, workers: int, demo: bool, say: Callable[[str], None]
) -> int:
    """Run the stack until Ctrl-C, SIGTERM or SIGHUP (its terminal closed); with ``demo`` send the demo
    campaigns once it is up. The services run in sessions of their own (a Ctrl-C reaches them only through
    this process, in order), so this process must never die without stopping them."""
    stack = DevStack(api_port=api_port, flower_port=flower_port, sim_port=sim_port, workers=workers)
    stop = threading.Event()
    say = _never_raising(say)  # the terminal may be gone (SIGHUP): nothing must stop the shutdown

    def on_signal(*_: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        stack.start(say)
        token_file = stack.write_token_file()
        say("")
        for name, (wanted, used) in stack.moved.items():
            say(f"!! PORT {wanted} IS TAKEN: {name} listens on {used} instead (the README's examples use {wanted})")
            say(f"!! 端口 {wanted} 已被占用：{name} 改用端口 {used}（README 中的示例使用 {wanted}）")
        say("wechat-broadcast is running / 已启动")
        say(f"  API        {stack.api_url}   (docs: {stack.api_url}/docs)")
        say(f"  console    {stack.api_url}/console   (控制台: paste the token / 粘贴下面的 token)")
        say(f"  API token  {stack.token}   (also in {token_file})")
        password = stack.flower_auth.split(":", 1)[1]
        auth = (
            "basic auth from FLOWER_BASIC_AUTH"
            if os.environ.get("FLOWER_BASIC_AUTH")
            else f"user broadcast, password {password} / 用户 broadcast，密码 {password}"
        )
        say(f"  Flower     {stack.flower_url}   ({auth})")
        say(f"  simulator  {stack.sim_url}   (records: {stack.sim_url}/_sim/sends)")
        say(f"             vendor base_url: gewe {stack.sim_url}/gewe/v2/api, the others {stack.sim_url}")
        say(f"  logs       {stack.log_dir}")
        say(
            f'  try: export BROADCAST_API_URL={stack.api_url} BROADCAST_API_TOKEN="$(cat {token_file})"; '
            f"{_broadcast_command()} demo"
        )
        say("Ctrl-C stops everything / 按 Ctrl-C 停止全部服务")
        if demo:
            from scheduler.devtools.demo import run_demo

            run_demo(stack.api_url, stack.token, say=say, stop=stop)
        while not stop.wait(0.5):
            if not stack.alive():
                dead = [f"{n}: {_how_it_ended(p.returncode)}" for n, p in stack.procs.items() if p.poll() is not None]
                say(
                    f"a process exited ({', '.join(dead)}); stopping / 有进程退出，正在停止. Logs / 日志: {stack.log_dir}"
                )
                return 1
        return 0
    finally:
        say("stopping… / 正在停止…")
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        (stack.log_dir / "api-token").unlink(missing_ok=True)  # this run's token dies with it
        say(f"stopped / 已停止. Logs kept in / 日志保留在 {stack.log_dir}")
