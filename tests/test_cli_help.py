"""``broadcast … --help`` reads as a CLI should: flags without a value tag, values named as Click names them."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.procs import ROOT


def help_text(*command: str) -> str:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.cli.app", *command, "--help"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


@pytest.mark.parametrize("command", [(), ("send",), ("campaign", "export"), ("dead-letters", "replay")])
def test_help_has_no_python_type_tags(command: tuple[str, ...]) -> None:
    text = help_text(*command)
    assert "--help" in text
    assert not re.search(r"<(bool|str|int|float|file|list\[\w+\])>", text), text


def test_flags_read_as_flags_and_values_say_what_they_take() -> None:
    text = help_text("send")
    wait = next(line for line in text.splitlines() if "│" in line and "--wait" in line)
    assert re.search(r"--wait\s+wait until sent", wait), wait
    assert re.search(r"--account\s+TEXT\s", text) and re.search(r"--var\s+TEXT…", text), text
