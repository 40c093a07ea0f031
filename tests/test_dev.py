"""`broadcast dev` on a clean environment: starts everything, runs the demo, stops without strays."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.procs import ROOT, wait_for


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


@pytest.mark.timeout(240)
def test_broadcast_dev_runs_the_demo_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROADCAST_")}
    env["PYTHONUNBUFFERED"] = "1"
    out = (tmp_path / "dev.out").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "dev", "--api-port", "0", "--flower-port", "0", "--sim-port", "0"],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        text = lambda: (tmp_path / "dev.out").read_text(errors="replace")  # noqa: E731
        wait_for(lambda: "Ctrl-C stops everything" in text() or proc.poll() is not None, timeout=120, what="dev stack")
        assert proc.poll() is None, text()
        api = re.search(r"API\s+(http://127\.0\.0\.1:\d+)", text())
        token = re.search(r"API token\s+(\S+)", text())
        flower = re.search(r"Flower\s+(http://127\.0\.0\.1:\d+)", text())
        assert api and token and flower, text()
        assert "private Redis" in text()

        demo = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "demo", "--url", api.group(1), "--token", token.group(1)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=150,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "demo finished: 16/16 sent" in demo.stdout, demo.stdout
        assert re.search(r"\b\d{17,20}\b", demo.stdout), "new_msg_ids are shown"
        campaigns = httpx.get(
            f"{api.group(1)}/v1/campaigns", headers={"Authorization": f"Bearer {token.group(1)}"}
        ).json()
        assert len(campaigns["campaigns"]) == 4 and all(c["status"] == "finished" for c in campaigns["campaigns"])

        children = descendants(proc.pid)
        assert len(children) >= 6, "redis, simulator, api, worker (+pool), scheduler, flower"
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        assert proc.returncode == 0, text()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in children):
            time.sleep(0.2)
        survivors = [pid for pid in children if alive(pid)]
        assert survivors == [], f"processes left running: {survivors}"
        assert "stopped." in text()
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
