"""``broadcast message revoke`` says what came of the revoke in English and Chinese, never as raw JSON."""

from __future__ import annotations

from scheduler.cli.client import ApiError
from scheduler.cli.message import refusal_line, revoke_line
from scheduler.cli.render import when

AT = 1796000000.5


def test_a_recalled_or_pending_revoke_reads_in_both_languages() -> None:
    recalled = revoke_line("j1", {"id": "j1", "revoked": True, "revoked_at": AT, "recall": "recalled"})
    assert recalled == f"message j1 recalled at {when(AT)} / 消息 j1 已撤回（{when(AT)}）"
    pending = revoke_line("j1", {"id": "j1", "revoked": False, "recall": "pending"})
    english, chinese = pending.split(" / ")
    assert english.startswith("message j1: revoke pending") and chinese.startswith("消息 j1 待撤回")
    unknown = revoke_line("j1", {"id": "j1", "revoked": False, "recall": "odd"})
    assert unknown == "message j1: revoke outcome unknown (odd) / 消息 j1 撤回结果未知（odd）"


def test_a_refused_revoke_names_why_with_the_reason_and_times_readable() -> None:
    late = refusal_line("j1", ApiError(409, "too_late", f"the revoke window (110s) ended at {AT:.3f}"))
    assert late == (
        f"message j1 not revoked: too late — the revoke window (110s) ended at {when(AT)}"
        f" / 消息 j1 未撤回：已超过撤回时限（撤回时限截至 {when(AT)}）"
    )
    vendor = refusal_line("j1", ApiError(502, "vendor_error", "the revoke failed (not repeated): 消息已过期"))
    assert vendor == (
        "message j1 not revoked: the vendor refused (not repeated) — 消息已过期"
        " / 消息 j1 未撤回：服务商拒绝撤回（不会重试）：消息已过期"
    )
    again = refusal_line("j1", ApiError(409, "already_revoked", "this message was already revoked"))
    assert again.endswith(" / 消息 j1 未撤回：此前已撤回") and "{" not in again
    unsupported = refusal_line("j1", ApiError(409, "unsupported", "gewe-legacy has no documented revoke"))
    assert unsupported.endswith(" / 消息 j1 未撤回：该服务商不支持撤回（gewe-legacy 没有公开的撤回接口）"), unsupported
