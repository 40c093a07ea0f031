"""``broadcast dead-letters list``: a long error is cut at a word, and says it was cut."""

from __future__ import annotations

from scheduler.cli.deadletter import _short


def test_a_long_error_is_cut_at_a_word_and_marked() -> None:
    error = "/sendText: request sent, no answer in time (ReadTimeout): outcome unknown"
    assert _short(error) == "/sendText: request sent, no answer in time (ReadTimeout)…"
    assert _short("short one") == "short one"
    chinese = "发送消息失败：对方不是你的好友" * 5  # no spaces: cut at the width
    assert len(_short(chinese)) == 60 and _short(chinese).endswith("…")
