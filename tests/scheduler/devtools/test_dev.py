"""`broadcast dev` on a clean environment: starts everything, runs the demo, stops without strays."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.procs import ROOT, wait_for

pytestmark = pytest.mark.e2e  # starts `broadcast` processes


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, grandchildren...)."""
    found: set[int] = set()
    stack = [pid]
    while stack:
        current = stack.pop()
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                children = {int(c) for c in task.read_text().split()}
            except OSError:
                continue
            new = children - found
            found |= new
            stack.extend(new)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.timeout(240)
def test_broadcast_dev_runs_the_demo_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROADCAST_", "FLOWER_"))}
    env["PYTHONUNBUFFERED"] = "1"
    out = (tmp_path / "dev.out").open("wb")
    squatter = socket.socket()  # someone else holds the port asked for Flower: the banner must say so
    squatter.bind(("127.0.0.1", 0))
    taken = squatter.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli.app", "dev", "--api-port", "0", "--flower-port", str(taken), "--sim-port", "0"],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, as in a terminal: Ctrl-C goes to the whole group
    )  # fmt: skip
    try:
        text = lambda: (tmp_path / "dev.out").read_text(errors="replace")  # noqa: E731
        wait_for(lambda: "Ctrl-C stops everything" in text() or proc.poll() is not None, timeout=120, what="dev stack")
        assert proc.poll() is None, text()
        api = re.search(r"API\s+(http://127\.0\.0\.1:\d+)", text())
        token = re.search(r"API token\s+(\S+)", text())
        flower = re.search(r"Flower\s+(http://127\.0\.0\.1:\d+)", text())
        logs = re.search(r"logs\s+(\S+)", text())
        assert api and token and flower and logs, text()
        assert "private Redis" in text()
        assert f"!! PORT {taken} IS TAKEN: Flower listens on {flower.group(1).rsplit(':', 1)[1]} instead" in text()
        try_line = next(line for line in text().splitlines() if "try:" in line)
        assert token.group(1) not in try_line and "BROADCAST_API_TOKEN=" in try_line, try_line
        token_file = Path(re.search(r"\$\(cat (\S+)\)", try_line).group(1))  # type: ignore[union-attr]
        assert token_file.read_text().strip() == token.group(1)
        assert token_file.stat().st_mode & 0o077 == 0, "only its owner can read the token file"
        password = re.search(r"user broadcast, password (\S+) /", text())
        assert password and password.group(1) != token.group(1), text()
        flower_auth = ("broadcast", password.group(1))
        # the simulator and Flower never hold the API token or the secret key (nor does any child's log)
        for child in descendants(proc.pid):
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            has = {entry.split(b"=", 1)[0] for entry in environ}
            if b"simulator" in command or b"flower" in command:
                assert not has & {b"BROADCAST_API_TOKEN", b"BROADCAST_SECRET_KEY"}, command
            elif b"api" in command:
                assert {b"BROADCAST_API_TOKEN", b"BROADCAST_SECRET_KEY"} <= has, command
        wait_for(
            lambda: httpx.get(f"{flower.group(1)}/api/workers", auth=flower_auth, timeout=2).status_code == 200,
            timeout=60,
            what="Flower's API, with the run's basic auth",
        )
        assert _status(f"{flower.group(1)}/api/workers") == 401
        # a web page's cross-origin POST (no credentials) cannot revoke tasks or shut workers down
        shut = httpx.post(f"{flower.group(1)}/api/worker/shutdown/any", headers={"Origin": "http://evil.example"})
        assert shut.status_code in (401, 403), shut.text

        demo = subprocess.run(
            [sys.executable, "-m", "scheduler.cli.app", "demo", "--url", api.group(1), "--token", token.group(1)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=150,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "demo finished: 24/24 sent" in demo.stdout, demo.stdout
        assert re.search(r"\b\d{17,20}\b", demo.stdout), "new_msg_ids are shown"
        campaigns = httpx.get(
            f"{api.group(1)}/v1/campaigns", headers={"Authorization": f"Bearer {token.group(1)}"}
        ).json()
        assert len(campaigns["campaigns"]) == 6 and all(c["status"] == "finished" for c in campaigns["campaigns"])

        # the opt-out loop (README, "Recipient hygiene"): the callback URL is set at the simulated vendor, a
        # friend answers 退订 there, and the suppression list has them
        callback = subprocess.run(
            [sys.executable, "-m", "scheduler.cli.app", "accounts", "callback", "demo-gewe", "--register",
             "--url", api.group(1), "--token", token.group(1)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert callback.returncode == 0 and f"{api.group(1)}/v1/callbacks/demo-gewe?key=" in callback.stdout, (
            callback.stdout + callback.stderr
        )
        sim = re.search(r"simulator\s+(http://127\.0\.0\.1:\d+)", text())
        assert sim, text()
        friend = {"vendor": "gewe", "instance": "wx_demo_gewe", "from": "wxid_fan", "text": "退订"}
        assert httpx.post(f"{sim.group(1)}/_sim/callbacks", json=friend).json()["statuses"] == [200]
        listed = lambda: httpx.get(  # noqa: E731
            f"{api.group(1)}/v1/suppressions", params={"account": "demo-gewe"},
            headers={"Authorization": f"Bearer {token.group(1)}"},
        ).json()["suppressions"]  # fmt: skip
        wait_for(lambda: [s["to"] for s in listed()] == ["wxid_fan"], timeout=30, what="the opt-out in the list")

        children = descendants(proc.pid)
        assert len(children) >= 6, "redis, simulator, api, worker (+pool), scheduler, flower"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        proc.wait(60)
        assert proc.returncode == 0, text()
        service_logs = {p.name: p.read_text(errors="replace") for p in Path(logs.group(1)).glob("*.log")}
        assert {"api.log", "scheduler.log", "worker.log", "flower.log"} <= set(service_logs)
        noisy = {name: log[log.find("Traceback") :][:2000] for name, log in service_logs.items() if "Traceback" in log}
        assert noisy == {}, f"tracebacks while shutting down: {noisy}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in children):
            time.sleep(0.2)
        survivors = [pid for pid in children if alive(pid)]
        assert survivors == [], f"processes left running: {survivors}"
        assert f"stopped / 已停止. Logs kept in / 日志保留在 {logs.group(1)}" in text()
        assert not (Path(logs.group(1)) / "api-token").exists()  # the run's token does not outlive it
    finally:
        squatter.close()
        if proc.poll() is None:
            proc.kill()
        for pid in descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(180)
def test_closing_the_terminal_stops_everything_dev_started(tmp_path: Path) -> None:
    """A terminal closed under `broadcast dev` sends it SIGHUP and takes its stdout away: the services (in
    sessions of their own) must still be stopped, not left running with the port and a private Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROADCAST_", "FLOWER_"))}
    env["PYTHONUNBUFFERED"] = "1"
    # a run killed before (no cleanup) left its token: the README reads the newest /tmp/broadcast-dev-*/api-token
    # must read only the live run's, so the new run removes it
    stale = Path(tempfile.mkdtemp(prefix="broadcast-dev-")) / "api-token"
    stale.write_text("token-of-a-killed-run\n")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (stale.parent / "dev.pid").write_text(gone.stdout)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli.app", "dev", "--api-port", "0", "--flower-port", "0", "--sim-port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    children: set[int] = set()
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line.decode(errors="replace"))
            if b"Ctrl-C stops everything" in line:
                break
        assert proc.poll() is None, "".join(seen)
        children = descendants(proc.pid)
        assert len(children) >= 6, "redis, simulator, api, worker (+pool), scheduler, flower"
        assert not stale.exists(), "the killed run's token file is removed"
        proc.stdout.close()  # the terminal is gone: every later write fails
        os.kill(proc.pid, signal.SIGHUP)
        proc.wait(60)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in children):
            time.sleep(0.2)
        assert [pid for pid in children if alive(pid)] == [], "processes left running after SIGHUP"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in children | descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
