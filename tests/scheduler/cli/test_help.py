"""``broadcast … --help`` reads as a CLI should: flags without a value tag, values named as Click names them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

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


def test_every_command_has_a_one_line_help_in_both_languages() -> None:
    import typer.main

    from scheduler.cli.app import app

    def walk(group: Any, path: str) -> list[tuple[str, str]]:
        found = []
        for name, command in group.commands.items():
            if command.hidden:
                continue
            line = (command.help or "").strip().splitlines()[0]
            found.append((f"{path} {name}", line))
            if hasattr(command, "commands"):
                found += walk(command, f"{path} {name}")
        return found

    lines = walk(typer.main.get_command(app), "broadcast")
    assert len(lines) >= 60  # every noun and its verbs
    one_language = [
        (name, line) for name, line in lines if " / " not in line or not re.search(r"[\u4e00-\u9fff]", line)
    ]
    assert not one_language, one_language


def test_tables_are_not_folded_at_80_columns_when_output_is_a_file() -> None:
    # `make dev > file`: no terminal and no COLUMNS; a row wider than 80 columns stays one line
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    script = (
        "from scheduler.cli.render import print_table; "
        "print_table(['id', 'account', 'error'], [['j' + '7' * 30, 'demo-gewe-legacy', '对方不是你的好友 ' * 4]])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    rows = [line for line in done.stdout.splitlines() if "j777" in line]
    assert len(rows) == 1 and rows[0].count("对方不是你的好友") == 4, done.stdout


def test_a_draft_by_audience_prints_the_same_counts_in_both_languages_and_the_next_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from scheduler.cli.campaign import _print_accepted

    audience = {"total": 65, "duplicates": 3, "excluded": 10, "accounts": {}, "sample": []}
    _print_accepted({"id": "c-1", "status": "draft", "total": 65, "audience": audience})
    out = capsys.readouterr().out
    english, chinese = out.splitlines()[1].split(" / ")
    for number in ("65", "3", "10"):
        assert number in english.split() and number in chinese, (number, out)
    assert "broadcast campaign start c-1" in out.splitlines()[-1]


@pytest.mark.parametrize("command", [("worker",), ("scheduler",)])
def test_a_setting_that_does_not_parse_is_named_in_one_line_per_variable_not_a_traceback(
    command: tuple[str, ...],
) -> None:
    """A newcomer's finding: BROADCAST_WORKER_PIN_CPUS=garbage printed 40 lines of pydantic traceback naming
    the field, not the variable. The value itself is never echoed (it may be a token)."""
    env = {**os.environ, "BROADCAST_WORKER_PIN_CPUS": "garbage-value", "BROADCAST_WORKER_PROCESSES": "many"}
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.cli.app", *command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "garbage-value" not in done.stderr
    assert "以下环境变量的值无效" in done.stderr
    named = [line.split(":")[0] for line in done.stderr.splitlines() if line.startswith("BROADCAST_")]
    assert sorted(named) == ["BROADCAST_WORKER_PIN_CPUS", "BROADCAST_WORKER_PROCESSES"]
