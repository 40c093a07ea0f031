"""``broadcast schedules list`` counts its rows in both languages."""

from __future__ import annotations

from scheduler.cli import render
from scheduler.cli.schedule import _print_schedules


def test_the_schedule_list_counts_its_rows_in_english_and_chinese() -> None:
    schedule = {"id": "s-1", "name": "morning", "cron": "0 9 * * *", "timezone": "UTC", "paused": True}
    with render.console.capture() as captured:
        _print_schedules([schedule, {**schedule, "id": "s-2"}])
    assert captured.get().rstrip().splitlines()[-1] == "2 shown / 显示 2 条"
