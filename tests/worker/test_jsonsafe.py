"""Issue 24, item 1: JSON is bounded in shape (depth, members, elements, values) while it streams in,
everywhere it comes in. A 400 KB body nested 200,000 levels deep once grew the API to 23.7 GB."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import ApiStack
from tests.scheduler.api.test_routes import put_account
from worker.errors import MessageError
from worker.jsonsafe import JSON_LIMITS, JsonLimitError, JsonLimits, JsonScanner, check, loads

TEXT = {"kind": "text", "text": "x"}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def scan(raw: bytes, limits: JsonLimits, cuts: list[int]) -> str:
    scanner = JsonScanner(limits)
    start = 0
    try:
        for cut in cuts:
            scanner.feed(raw[start:cut])
            start = cut
        scanner.feed(raw[start:])
    except JsonLimitError as exc:
        return str(exc)
    return f"ok {scanner.values}"


@pytest.mark.parametrize(
    "doc",
    [
        {'a\\"[': ['x"\\', {"b]": [1, 2, 3]}, "\\\\"], "c": "é[{,,,", "d": [[[[1]]]]},
        {"k": list(range(30))},
        {f"k{i}": "\\" * i for i in range(6)},
        [[[[[[[]]]]]]],
    ],
)
def test_the_scan_is_the_same_however_the_bytes_are_split(doc: object) -> None:
    """Strings hide brackets and commas, escapes hide quotes; a chunk may end anywhere, even after ``\\``."""
    raw = json.dumps(doc, ensure_ascii=False).encode()
    limits = JsonLimits(depth=5, keys=4, items=20, values=1000)
    whole = scan(raw, limits, [])
    rng = random.Random(24)
    for _ in range(200):
        cuts = sorted(rng.sample(range(len(raw) + 1), rng.randint(1, min(20, len(raw)))))
        assert scan(raw, limits, cuts) == whole, cuts


def test_each_limit_is_named() -> None:
    limits = JsonLimits(depth=3, keys=2, items=3, values=10)
    cases = {
        "nesting is limited to 3 levels": nested(4),
        "objects are limited to 2 members": '{"a": 1, "b": 2, "c": 3}',
        "arrays are limited to 3 elements": "[1, 2, 3, 4]",
        "a document is limited to 10 values": '[[1, 2], [3, 4], [5, 6], ["7", "8"]]',
    }
    for expected, raw in cases.items():
        with pytest.raises(JsonLimitError, match=expected) as refused:
            check(raw, limits, "recipients[3]")
        assert refused.value.field == "recipients[3]" and str(refused.value).startswith("recipients[3]: JSON ")
    check(nested(3), limits)
    check('"[[[[[[[[,,,,,,,,,,,,"', limits)  # inside a string nothing counts
    assert loads('{"to": "wxid_a"}') == {"to": "wxid_a"}
    with pytest.raises(MessageError):
        loads(nested(JSON_LIMITS.depth + 1))


def test_a_200k_deep_document_is_refused_at_once_by_counting_only() -> None:
    scanner = JsonScanner()
    with pytest.raises(JsonLimitError, match="32 levels"):
        scanner.feed(("{" + '"x":' + nested(200_000) + "}").encode())
    assert len(scanner._objects) == JSON_LIMITS.depth + 1  # what it kept: one entry per open container


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


def test_deep_and_wide_bodies_get_422_naming_the_limit_and_memory_stays_flat(api: ApiStack) -> None:
    """The real API process: depth 10k and 200k everywhere JSON comes in; its peak RSS must barely move."""
    pid = api.procs[0].proc.pid
    put_account(api, "deep", "gewe", f"inst-{api.prefix}")
    keys = api.stored_keys()
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to the RSS now
    before_kb = rss_kb(pid, "VmRSS")
    campaign = {"name": "deep", "account": "deep", "message": TEXT}
    deep = nested(200_000)
    refused = {
        "campaign 10k": api.http.post(
            "/v1/campaigns", content=json.dumps(campaign)[:-1] + ', "x": ' + nested(10_000) + "}"
        ),
        "campaign 200k": api.http.post("/v1/campaigns", content=json.dumps(campaign)[:-1] + ', "x": ' + deep + "}"),
        "recipient vars": api.http.post(
            "/v1/campaigns",
            content=json.dumps({**campaign, "recipients": [{"to": "wxid_a", "vars": {"v": 1}}]}).replace(
                "1}", deep + "}"
            ),
        ),
        "message": api.http.post("/v1/messages", content='{"account": "a", "to": "b", "message": ' + deep + "}"),
        "schedule": api.http.post("/v1/schedules", content='{"cron": "* * * * *", "message": ' + deep + "}"),
        "no content type": api.http.put("/v1/accounts/a", content=deep, headers={"Content-Type": ""}),
        "upload spec": api.http.post(
            "/v1/campaigns/upload", data={"spec": deep}, files={"recipients": ("r.csv", b"to\nwxid_a\n", "text/csv")}
        ),
        "upload jsonl": api.http.post(
            "/v1/campaigns/upload",
            data={"spec": json.dumps(campaign)},
            files={"recipients": ("r.jsonl", ('{"to": "wxid_a", "vars": ' + deep + "}\n").encode(), "text/plain")},
        ),
    }
    for what, response in refused.items():
        assert response.status_code == 422, (what, response.text)
        error = response.json()["error"]
        assert "nesting is limited to 32 levels" in error["message"], (what, error)
        assert error["field"] in ("body", "spec", "recipients[0]"), (what, error)

    wide = {
        "members": ('{"x": {' + ", ".join(f'"k{i}": 0' for i in range(10_001)) + "}}", "10000 members"),
        "elements": ('{"x": [' + "0," * 300_000 + "0]}", "200000 elements"),
        "values": ('{"x": [' + ", ".join(["[" + "0," * 150_000 + "0]"] * 7) + "]}", "1000000 values"),
    }
    for what, (body, limit) in wide.items():
        response = api.http.post("/v1/messages", content=body)
        assert response.status_code == 422 and limit in response.json()["error"]["message"], (what, response.text)
    assert api.stored_keys() == keys

    # memory: the peak (VmHWM) over all of the above is within 64 MB of the RSS before the first one
    # (before the bound, depth 10k alone took 273 MB and 200k took 23.7 GB)
    peak_growth_mb = (rss_kb(pid, "VmHWM") - before_kb) / 1024
    assert peak_growth_mb < 64, f"peak RSS grew {peak_growth_mb:.0f} MB"
