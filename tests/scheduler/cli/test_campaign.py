"""What ``broadcast campaign`` prints while and after it runs says the same numbers in English and Chinese."""

from __future__ import annotations

from scheduler.cli.campaign import _campaign_line, _progress_info


def test_the_outcome_line_has_the_same_counts_in_both_languages() -> None:
    campaign = {"id": "c-1", "status": "finished", "total": 12, "counts": {"sent": 8, "dead": 2, "skipped": 2}}
    english, chinese = _campaign_line(campaign).split(" / ")
    assert english == "campaign c-1 finished: 8 sent, 2 dead, 0 cancelled, 2 skipped, 0 remaining of 12"
    assert chinese == "群发：已发送 8，死信 2，已取消 0，已跳过 2，剩余 0（共 12）"
    # nothing skipped: neither language names it
    plain = _campaign_line({**campaign, "counts": {"sent": 10, "dead": 2}})
    assert "skipped" not in plain and "已跳过" not in plain and plain.endswith("剩余 0（共 12）")


def test_the_progress_bar_names_each_count_in_both_languages() -> None:
    info = _progress_info({"sent": 3, "dead": 1, "cancelled": 0}, 6, 2.5, "2s")
    assert info == "已发送 sent 3  死信 dead 1  已取消 cancelled 0  剩余 remaining 6  2.5/s  预计 ETA 2s"
    assert "已跳过 skipped 4" in _progress_info({"sent": 3, "dead": 1, "cancelled": 0, "skipped": 4}, 2, 0.0, "-")
