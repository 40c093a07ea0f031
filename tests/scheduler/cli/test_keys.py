"""``broadcast audit``'s table: what an operator copies out of it stays whole at any terminal width."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.procs import ROOT

TARGET = "campaign:c0123456789abcdef0123456789"


def test_an_audit_target_is_never_wrapped_on_a_narrow_terminal() -> None:
    # a long target folded onto two lines cannot be pasted into `broadcast audit --target …`
    env = {**os.environ, "COLUMNS": "60", "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}
    script = (
        "from scheduler.cli.keys import print_audit; "
        "print_audit({'items': [{'at': 1796000000, 'key': 'alice-from-the-shanghai-shop', 'role': 'operator', "
        f"'action': 'campaign.recall', 'target': {TARGET!r}, 'status': 200}}], 'next_cursor': None}})"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert TARGET in done.stdout, done.stdout  # on one line, not folded or cut
    assert "alice" in done.stdout and done.stdout.rstrip().endswith("1 shown / 显示 1 条"), done.stdout


def test_an_audit_action_reads_in_chinese_and_english_over_its_code() -> None:
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}
    script = (
        "from scheduler.cli.keys import print_audit; "
        "print_audit({'items': [{'at': 1796000000, 'key': 'cb', 'role': 'callback', 'action': 'callback.over_cap', "
        "'target': 'account:shop', 'status': 200}, {'at': 1796000001, 'key': 'alice', 'role': 'operator', "
        "'action': 'made.up', 'target': 'x', 'status': 200}], 'next_cursor': None})"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    out = done.stdout
    assert "回调变更超过每小时上限，已暂存 / Callback changes over the hourly cap: held" in out, out
    assert "callback.over_cap" in out and "服务商回调" in out and "操作员" in out, out
    assert "made.up" in out  # a code the table lacks is shown as recorded
