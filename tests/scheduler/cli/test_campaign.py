"""What ``broadcast campaign`` prints while and after it runs says the same numbers in English and Chinese."""

from __future__ import annotations

import pytest

from scheduler.cli import render
from scheduler.cli.campaign import _campaign_line, _print_accepted, _print_campaign, _print_campaigns, _progress_info


def test_the_outcome_line_has_the_same_counts_in_both_languages() -> None:
    campaign = {"id": "c-1", "status": "finished", "total": 12, "counts": {"sent": 8, "dead": 2, "skipped": 2}}
    english, chinese = _campaign_line(campaign).split(" / ")
    assert english == "campaign c-1 finished: 8 sent, 2 dead, 0 cancelled, 2 skipped, 0 remaining of 12"
    assert chinese == "群发已完成：已发送 8，死信 2，已取消 0，已跳过 2，剩余 0（共 12）"
    # nothing skipped: neither language names it
    plain = _campaign_line({**campaign, "counts": {"sent": 10, "dead": 2}})
    assert "skipped" not in plain and "已跳过" not in plain and plain.endswith("剩余 0（共 12）")


def test_the_progress_bar_names_each_count_in_both_languages() -> None:
    info = _progress_info({"sent": 3, "dead": 1, "cancelled": 0}, 6, 2.5, "2s")
    assert info == "已发送 sent 3  死信 dead 1  已取消 cancelled 0  剩余 remaining 6  2.5/s  预计 ETA 2s"
    assert "已跳过 skipped 4" in _progress_info({"sent": 3, "dead": 1, "cancelled": 0, "skipped": 4}, 2, 0.0, "-")


@pytest.mark.parametrize(
    ("status", "chinese"),
    [
        ("draft", "草稿"),
        ("scheduled", "已预约"),
        ("active", "发送中"),
        ("paused", "已暂停"),
        ("finished", "已完成"),
        ("cancelled", "已取消"),
    ],
)
def test_the_chinese_half_names_every_status(status: str, chinese: str) -> None:
    campaign = {"id": "c-1", "status": status, "total": 3, "counts": {"sent": 1}}
    english, zh = _campaign_line(campaign).split(" / ")
    assert english.startswith(f"campaign c-1 {status}: 1 sent")
    assert zh == f"群发{chinese}：已发送 1，死信 0，已取消 0，剩余 2（共 3）"


def test_a_campaign_that_paused_itself_says_so_in_both_halves() -> None:
    reason = "error threshold — 3 in a row failed: not a friend"
    campaign = {"id": "c-1", "status": "paused", "pause_reason": reason, "total": 3, "counts": {"dead": 3}}
    english, chinese = _campaign_line(campaign).split(" / ")
    assert english.startswith(f"campaign c-1 paused: {reason}: 0 sent, 3 dead")
    assert chinese.startswith("群发已暂停（出错自动暂停，原因见前）：已发送 0，死信 3")


def test_created_shown_and_listed_campaigns_name_their_status_and_count_in_chinese() -> None:
    with render.console.capture() as captured:
        _print_accepted({"id": "c-9", "status": "draft", "total": 4, "duplicates": 1})
        _print_campaign({"id": "c-9", "status": "scheduled", "total": 4, "counts": {"queued": 4}})
        _print_campaigns([{"id": "c-9", "name": "x", "status": "active", "total": 4, "counts": {
            "sent": 1, "dead": 0, "cancelled": 0}}] * 3)  # fmt: skip
    lines = [line.strip() for line in captured.get().splitlines()]
    assert (
        lines[0] == "campaign c-9 draft: 4 recipients (1 duplicates dropped) / 群发草稿：4 位接收人（已去掉 1 个重复）"
    )
    assert any(line.split() == ["status", "scheduled", "/", "已预约"] for line in lines), lines
    assert lines[-1] == "3 shown / 显示 3 条"


def test_an_audience_draft_prints_its_accounts_and_first_recipients_as_tables_not_dicts() -> None:
    audience = {
        "total": 2, "duplicates": 0, "excluded": 1,
        "accounts": {"shop": {"synced_at": 1.0, "sync_age_s": 185.0, "recipients": 2}},
        "sample": [{"to": "wxid_a", "account": "shop", "vars": {"name": "小王", "remark": "VIP"}},
                   {"to": "123@chatroom", "account": "shop"}],
    }  # fmt: skip
    with render.console.capture() as captured:
        _print_accepted({"id": "c-2", "status": "draft", "total": 2, "audience": audience})
    out = captured.get()
    assert "{" not in out and "'" not in out, out  # no Python dict anywhere
    rows = [line.split() for line in out.splitlines()]
    assert ["shop", "2", "3", "min", "ago", "/", "3", "分钟前"] in rows, out
    assert ["wxid_a", "shop", "name=小王", "remark=VIP"] in rows and ["123@chatroom", "shop", "-"] in rows, out
    assert "first recipients / 前几位接收人" in out and "contacts synced / 通讯录同步于" in out
    assert out.rstrip().splitlines()[-1] == "next: broadcast campaign start c-2 / 下一步：broadcast campaign start c-2"
