"""Every time the CLI prints carries its UTC offset, as the console writes it (``2026-11-30 08:53:20 UTC+8``):
in this machine's timezone, or in a schedule's own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from scheduler.cli.render import when
from tests.procs import ROOT

EPOCH = 1796000000  # 2026-11-30 00:53:20 UTC
SUMMER = 1784000000  # 2026-07-14 03:33:20 UTC


@pytest.fixture
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Sets this process's timezone (``TZ``) as an operator's machine would have it; restored afterwards."""

    def set_zone(zone: str) -> None:
        monkeypatch.setenv("TZ", zone)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    ("zone", "shown"),
    [
        ("Asia/Shanghai", "2026-11-30 08:53:20 UTC+8"),
        ("Asia/Kolkata", "2026-11-30 06:23:20 UTC+5:30"),
        ("America/St_Johns", "2026-11-29 21:23:20 UTC-3:30"),
        ("America/New_York", "2026-11-29 19:53:20 UTC-5"),
        ("UTC", "2026-11-30 00:53:20 UTC"),
    ],
)
def test_a_time_is_shown_in_the_machines_timezone_with_its_offset(
    local_zone: Callable[[str], None], zone: str, shown: str
) -> None:
    local_zone(zone)
    assert when(EPOCH) == shown
    assert when(float(EPOCH) + 0.75) == shown  # the API's float epochs: whole seconds


def test_the_offset_is_the_one_of_that_moment_not_of_now(local_zone: Callable[[str], None]) -> None:
    local_zone("America/New_York")
    assert when(SUMMER) == "2026-07-13 23:33:20 UTC-4"  # daylight saving time in July
    assert when(EPOCH).endswith(" UTC-5")


def test_a_schedules_time_is_in_its_own_timezone_and_an_unknown_zone_falls_back_to_the_machines(
    local_zone: Callable[[str], None],
) -> None:
    local_zone("UTC")
    assert when(EPOCH, "Asia/Shanghai") == "2026-11-30 08:53:20 UTC+8"
    assert when(EPOCH, "Europe/Berlin") == "2026-11-30 01:53:20 UTC+1"
    assert when(EPOCH, "No/Such_Zone") == when(EPOCH, "") == "2026-11-30 00:53:20 UTC"


def test_an_unset_time_is_a_dash_and_text_is_left_alone() -> None:
    assert when(None) == when(0) == when("") == "-"
    assert when("soon") == "soon"


def test_the_audit_at_column_carries_the_offset() -> None:
    """Run as an operator's machine in Shanghai would: ``TZ`` read at the CLI's start."""
    # output to a pipe with no COLUMNS (a pytest-xdist worker can inherit COLUMNS=80, which wraps the table)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update({"TZ": "Asia/Shanghai", "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"})
    script = (
        "from scheduler.cli.keys import print_audit; "
        f"print_audit({{'items': [{{'at': {EPOCH}, 'key': 'alice', 'role': 'operator', 'action': 'campaign.recall', "
        "'target': 'campaign:c1', 'status': 200}], 'next_cursor': None})"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    row = next(line for line in done.stdout.splitlines() if "alice" in line)
    assert row.split()[:3] == ["2026-11-30", "08:53:20", "UTC+8"], done.stdout
