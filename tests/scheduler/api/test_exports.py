"""Campaign exports of a sequence: each part carries the time it went out, not the job's."""

from __future__ import annotations

import csv
import io
import json

from scheduler.api.exports import export_deliveries

JOB_SENT_AT = 1_800_000_000.0
PARTS = [
    {"index": 0, "status": "sent", "kind": "text", "new_msg_id": "m1", "sent_at": JOB_SENT_AT},
    {"index": 1, "status": "sent", "kind": "image", "new_msg_id": "m2", "sent_at": JOB_SENT_AT + 4.25},
    {"index": 2, "status": "skipped"},
]
ITEM = {"id": "j1", "to": "wxid_a", "account": "a", "status": "sent", "attempts": 1, "result": {"new_msg_id": "m1"},
        "vendor": "gewe", "sent_at": JOB_SENT_AT, "reason": None, "error": None, "recall": None, "recall_error": None,
        "parts": PARTS}  # fmt: skip


class Deliveries:
    def deliveries(self, cid: str, **_: object) -> tuple[list[dict[str, object]], None]:
        return [ITEM], None


def export(fmt: str) -> str:
    chunks = export_deliveries(Deliveries(), "c1", status=None, fmt=fmt, timezone_of=lambda _: "Asia/Shanghai")  # type: ignore[arg-type]
    return "".join(chunks)


def test_each_part_of_a_sequence_is_exported_with_its_own_sent_at() -> None:
    rows = list(csv.DictReader(io.StringIO(export("csv"))))
    assert [(r["part"], r["sent_at"], r["sent_at_iso"]) for r in rows] == [
        ("1", str(JOB_SENT_AT), "2027-01-15T16:00:00.000+08:00"),
        ("2", str(JOB_SENT_AT + 4.25), "2027-01-15T16:00:04.250+08:00"),
        ("3", "", ""),  # skipped: never went out
    ]
    (line,) = export("jsonl").splitlines()
    parts = json.loads(line)["parts"]
    assert [p.get("sent_at") for p in parts] == [JOB_SENT_AT, JOB_SENT_AT + 4.25, None]
    assert [p["sent_at_iso"] for p in parts] == ["2027-01-15T16:00:00.000+08:00", "2027-01-15T16:00:04.250+08:00", None]
