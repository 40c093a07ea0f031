"""``broadcast contacts``: its lines read in English and Chinese, its times carry their UTC offset.

The commands run in-process against a stand-in for the API client (a sync needs a vendor and a worker; what
is checked here is what the CLI prints of the API's answers)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import pytest
from typer.testing import CliRunner

from scheduler.cli import contacts
from scheduler.cli.app import app

SYNCED = 1796000000  # 2026-11-30 08:53:20 UTC+8


class FakeApi:
    """The client's contact calls, answering as the API does."""

    def __init__(self, synced_at: float | None) -> None:
        self.synced_at = synced_at

    def contacts(self, account: str, **params: Any) -> dict[str, Any]:
        items = [{"wxid": "wxid_1", "kind": "friend", "nickname": "阿明", "remark": "", "labels": ["VIP"]}]
        return {"items": items, "next": "1", "total": 3, "synced_at": self.synced_at}

    def labels(self, account: str) -> dict[str, Any]:
        return {"items": [{"id": "1", "name": "VIP", "count": 2}], "synced_at": self.synced_at}

    def contacts_sync_status(self, account: str) -> dict[str, Any]:
        return {
            "status": "done", "phase": None, "friends": 2, "chatrooms": 1, "labels": 1, "ghs": 0,
            "synced_at": self.synced_at, "error": None, "progress": {"done": 3, "total": 3, "calls": 2},
        }  # fmt: skip


@pytest.fixture
def shanghai(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This machine's timezone is Shanghai's for the test."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """``cli(synced_at, *args)``: the command's stdout, the API answering with that sync time."""

    def run(synced_at: float | None, *args: str) -> str:
        monkeypatch.setattr(contacts, "connect", lambda url, token: nullcontext(FakeApi(synced_at)))
        result = CliRunner().invoke(app, ["contacts", *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    return run


def test_contacts_list_says_how_many_are_shown_and_how_old_the_sync_is_in_both_languages(
    cli: Callable[..., str],
) -> None:
    lines = cli(time.time() - 180, "list", "shop").strip().splitlines()
    assert lines[-2] == "1 of 3 shown (synced 3 min ago) / 显示 1 条（共 3 条，3 分钟前同步）", lines
    assert lines[-1] == "more / 更多: --cursor 1"
    assert "阿明" in "\n".join(lines)


def test_contacts_labels_says_when_the_sync_was_in_both_languages(cli: Callable[..., str]) -> None:
    assert cli(time.time() - 3 * 3600, "labels", "shop").strip().endswith("synced 3.0 h ago / 3.0 小时前同步")
    assert cli(None, "labels", "shop").strip().endswith("never synced / 从未同步")


def test_contacts_status_shows_the_sync_time_with_its_offset(cli: Callable[..., str], shanghai: None) -> None:
    synced = next(line for line in cli(SYNCED, "status", "shop").splitlines() if line.startswith("synced"))
    assert synced.split()[1:4] == ["2026-11-30", "08:53:20", "UTC+8"], synced
    assert re.search(r" \(\S+ \S+ ago / \S+ \S+前\)$", synced.rstrip()), synced  # and how old, in both
