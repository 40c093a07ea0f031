"""A vendor's words are stored, logged and printed: they must not forge log lines or drive a terminal."""

from worker.errors import MAX_ERROR_CHARS, PermanentError, printable


def test_control_characters_in_a_vendor_text_are_escaped_and_line_breaks_flattened() -> None:
    error = PermanentError("对方不是你的好友\x00\x1b[31m\r\nFAKE LOG LINE level=ERROR", vendor="ecloud")
    text = str(error)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text and "\x00" not in text
    assert text == "对方不是你的好友\\x00\\x1b[31m  FAKE LOG LINE level=ERROR"
    assert error.to_dict()["message"] == text


def test_a_huge_vendor_text_is_cut_and_ordinary_text_is_untouched() -> None:
    assert len(printable("很" * 5000)) == MAX_ERROR_CHARS and printable("很" * 5000).endswith("…")
    assert printable("发送消息过于频繁 (code -2)") == "发送消息过于频繁 (code -2)"
