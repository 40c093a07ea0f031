"""Images, files, link cards and sequences end to end (issue 20): the API, a real worker and dispatcher, the
simulator over HTTP. What is checked is what the vendor saw (endpoint, body, ids, times) against what the
product reports. One stack for the module: its vendor deadline is short (4 s) so slow media and an
abandoned call show in seconds."""

from __future__ import annotations

import csv
import io
import itertools
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from simulator.server import SimulatorServer
from tests.conftest import ApiStack
from tests.e2e.test_pipeline import add_fault, sim_sends
from tests.procs import wait_for
from tests.scheduler.api.test_routes import put_account

pytestmark = pytest.mark.e2e

DEADLINE_S = 4.0
COOLDOWN_S = 2.0
#: the simulator and the worker share this machine's clock; a few ms cover float rounding only
TOLERANCE_S = 0.005

IMAGE = {"kind": "image", "url": "https://cdn.example.com/poster-1111.jpg"}
FILE = {"kind": "file", "url": "https://cdn.example.com/price.pdf", "name": "报价单.pdf"}
LINK = {
    "kind": "link",
    "title": "双十一 <会场> & 优惠",
    "description": "点开看看",
    "url": "https://shop.example.com/1111?a=1&b=2",
    "thumb_url": "https://cdn.example.com/thumb.jpg",
}
MINI = {
    "kind": "miniprogram",
    "app_id": "wx1f9ea355b47256dd",
    "username": "gh_690acf47ea05@app",
    "title": "最快29分钟 好吃水果送到家",
    "page_path": "pages/homeDelivery/index.html",
    "cover_url": "https://cdn.example.com/c.jpg",
    "display_name": "百果园+",
}


@pytest.fixture(scope="module")
def media(redis_url: str, sim: SimulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    env = {
        "BROADCAST_VENDOR_DEADLINE_S": str(DEADLINE_S),
        "BROADCAST_VENDOR_READ_TIMEOUT_S": str(DEADLINE_S),
        "BROADCAST_LEASE_TTL_S": "8",
        "BROADCAST_ABANDONED_COOLDOWN_S": str(COOLDOWN_S),
    }
    stack = ApiStack(redis_url, sim, tmp_path_factory.mktemp("media"), **env)
    stack.start_worker()
    stack.start("scheduler")
    yield stack
    stack.stop()


@pytest.fixture
def sim_clean(sim_admin: httpx.Client) -> Iterator[httpx.Client]:
    yield sim_admin
    sim_admin.post("/_sim/latency", json={"latency_s": 0, "media_s": [0, 0]}).raise_for_status()


def submit(stack: ApiStack, account: str, to: str, message: dict[str, Any]) -> str:
    response = stack.http.post("/v1/messages", json={"account": account, "to": to, "message": message})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def view(stack: ApiStack, job_id: str) -> dict[str, Any]:
    return dict(stack.http.get(f"/v1/messages/{job_id}").json())


def wait_views(stack: ApiStack, ids: list[str], timeout: float = 60) -> list[dict[str, Any]]:
    stack.wait_terminal(ids, timeout=timeout)
    return [view(stack, i) for i in ids]


def ids_of(record: dict[str, Any]) -> dict[str, str | None]:
    """The ids a simulator send answered, as the product shows them (strings); MagicCgi answers only
    NewMsgId and ClientMsgId (seed 002)."""
    names = (
        ("new_msg_id", "client_msg_id") if record["vendor"] == "ohwxapi" else ("msg_id", "new_msg_id", "create_time")
    )
    return {name: None if record[name] is None else str(record[name]) for name in names}


def test_each_new_kind_on_each_vendor_that_has_it_with_exact_ids(media: ApiStack, sim_clean: httpx.Client) -> None:
    p = media.prefix
    for account, vendor in (("gw", "gewe"), ("ec", "ecloud"), ("lg", "gewe-legacy"), ("oh", "ohwxapi")):
        put_account(media, account, vendor, f"{p}-{account}")
    cases = [(a, k, m) for a in ("gw", "ec") for k, m in (("image", IMAGE), ("file", FILE), ("link", LINK))]
    cases += [("lg", "link", LINK), ("oh", "link", LINK)]
    jobs = {(a, k): submit(media, a, f"wxid_{a}_{k}", m) for a, k, m in cases}
    views = dict(zip(jobs, wait_views(media, list(jobs.values())), strict=True))
    records = {(s["instance"].rsplit("-", 1)[1], s["to"].split("_")[2]): s for s in sim_sends(media)
               if s["instance"].startswith(p)}  # fmt: skip
    expected_endpoints = {
        ("gw", "image"): "postImage", ("gw", "file"): "postFile", ("gw", "link"): "postLink",
        ("ec", "image"): "sendImage2", ("ec", "file"): "sendFile", ("ec", "link"): "sendUrl",
        ("lg", "link"): "sendapp", ("oh", "link"): "CgiCmd222",
    }  # fmt: skip
    assert set(records) == set(expected_endpoints)
    for key, endpoint in expected_endpoints.items():
        record, got = records[key], views[key]
        assert got["status"] == "sent" and record["endpoint"] == endpoint, (key, got)
        # ids exactly as the vendor answered them (64-bit ints as strings)
        expected = ids_of(record)
        assert {k: got["result"][k] for k in expected} == expected, key
    # what each vendor was sent, field by field (docs/vendors.md)
    body = {key: records[key]["body"] for key in records}
    assert body["gw", "image"]["imgUrl"] == IMAGE["url"]
    assert (body["gw", "file"]["fileUrl"], body["gw", "file"]["fileName"]) == (FILE["url"], "报价单.pdf")
    assert {k: body["gw", "link"][k] for k in ("title", "desc", "linkUrl", "thumbUrl")} == {
        "title": LINK["title"], "desc": LINK["description"], "linkUrl": LINK["url"], "thumbUrl": LINK["thumb_url"]
    }  # fmt: skip
    assert body["ec", "image"]["content"] == IMAGE["url"]
    assert (body["ec", "file"]["path"], body["ec", "file"]["fileName"]) == (FILE["url"], "报价单.pdf")
    assert {k: body["ec", "link"][k] for k in ("title", "description", "url", "thumbUrl")} == {
        "title": LINK["title"], "description": LINK["description"], "url": LINK["url"], "thumbUrl": LINK["thumb_url"]
    }  # fmt: skip
    # XML-only vendors get a type-5 card with every value escaped
    for xml in (body["lg", "link"]["xml"], body["oh", "link"]["CgiRequest"]["AppMsgXml"]):
        assert "<type>5</type>" in xml and "<title>双十一 &lt;会场&gt; &amp; 优惠</title>" in xml
        assert "<url>https://shop.example.com/1111?a=1&amp;b=2</url>" in xml
    # GeWe postImage: createTime 0 as its doc's example, and the CDN facts kept for a later forward
    image = views["gw", "image"]["result"]
    assert image["create_time"] == "0" and len(image["md5"]) == 32 and image["aes_key"] and image["file_id"]


def test_a_kind_a_vendor_cannot_carry_is_a_422_naming_kind_and_vendor_everywhere(
    media: ApiStack, sim_clean: httpx.Client
) -> None:
    p = media.prefix
    put_account(media, "gw2", "gewe", f"{p}-gw2")
    put_account(media, "lg2", "gewe-legacy", f"{p}-lg2")
    put_account(media, "oh2", "ohwxapi", f"{p}-oh2")
    before = media.stored_keys()

    def refused(path: str, body: dict[str, Any], field: str, kind: str, vendor: str) -> None:
        response = media.http.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        error = response.json()["error"]
        assert error["field"] == field and kind in error["message"] and vendor in error["message"], error
        assert "不支持发送" in error["message"] and "可发送：" in error["message"], error  # what it can carry, too

    refused(
        "/v1/messages", {"account": "lg2", "to": "wxid_a", "message": IMAGE}, "message.kind", "image", "gewe-legacy"
    )
    sequence = {"kind": "sequence", "parts": [{"kind": "text", "text": "hi"}, FILE]}
    refused("/v1/messages", {"account": "oh2", "to": "wxid_a", "message": sequence}, "message.parts[1].kind", "file",
            "ohwxapi")  # fmt: skip
    refused("/v1/campaigns", {"name": "x", "accounts": ["gw2", "lg2"], "message": IMAGE, "recipients": [{"to": "a"}]},
            "message.kind", "image", "gewe-legacy")  # fmt: skip
    recipients = [{"to": "wxid_a"}, {"to": "wxid_b", "account": "oh2"}]
    refused("/v1/campaigns", {"name": "x", "account": "gw2", "message": FILE, "recipients": recipients},
            "recipients[1].account", "file", "ohwxapi")  # fmt: skip
    schedule = {"cron": "0 9 * * *", "timezone": "Asia/Shanghai",
                "message": {"account": "lg2", "to": "wxid_a", "message": IMAGE}}  # fmt: skip
    refused("/v1/schedules", schedule, "message.message.kind", "image", "gewe-legacy")
    assert media.stored_keys() == before  # nothing stored for any refusal
    # a sequence is a message wherever a message goes: a schedule of one is accepted for a vendor carrying it
    schedule["message"] = {"account": "gw2", "to": "wxid_a", "message": {"kind": "sequence", "parts": [IMAGE, LINK]}}
    accepted = media.http.post("/v1/schedules", json=schedule)
    assert accepted.status_code == 201, accepted.text
    media.http.delete(f"/v1/schedules/{accepted.json()['id']}")
    before = media.stored_keys()
    draft = {"name": "t", "account": "gw2", "message": IMAGE, "recipients": [{"to": "wxid_a"}], "draft": True}
    created = media.http.post("/v1/campaigns", json=draft)
    assert created.status_code == 202, created.text
    cid = created.json()["id"]
    refused(f"/v1/campaigns/{cid}/test", {"to": ["wxid_ops"], "account": "lg2"}, "message.kind", "image", "gewe-legacy")


def test_slow_media_keeps_the_deadline_and_the_gap_and_an_abandoned_call_cools_the_account(
    media: ApiStack, sim_clean: httpx.Client
) -> None:
    p = media.prefix
    gap = 0.5
    put_account(media, "slow", "gewe", f"{p}-slow", per_minute=600, min_interval_s=gap, jitter_s=0)
    sim_clean.post("/_sim/latency", json={"media_s": [2, 3]}).raise_for_status()
    first = [submit(media, "slow", f"wxid_s{i}", IMAGE if i % 2 == 0 else FILE) for i in range(3)]
    assert [v["status"] for v in wait_views(media, first)] == ["sent"] * 3
    sends = sorted(sim_sends(media, instance=f"{p}-slow"), key=lambda s: s["received_at"])
    assert len(sends) == 3 and all(s["sent_at"] - s["received_at"] >= 2 - TOLERANCE_S for s in sends)
    for before, after in itertools.pairwise(sends):  # one call at a time, the gap after each answer
        assert after["received_at"] - before["sent_at"] >= gap - TOLERANCE_S

    # an answer slower than the deadline: abandoned, an unknown outcome, and the account cools down
    add_fault(media, kind="slow", vendor="gewe", instance=f"{p}-slow", delay_s=DEADLINE_S + 2, times=1)
    abandoned = submit(media, "slow", "wxid_late", {"kind": "text", "text": "hi"})
    (late,) = wait_views(media, [abandoned])
    assert late["status"] == "dead" and late["reason"] == "unknown_outcome"
    hold = media.http.get("/v1/accounts/slow").json()["holds"]["cooldown"]
    assert hold["until"] - hold["since"] == pytest.approx(COOLDOWN_S, abs=0.5) and "abandoned" in hold["reason"]
    later = submit(media, "slow", "wxid_after", {"kind": "text", "text": "after"})
    assert wait_views(media, [later])[0]["status"] == "sent"
    (next_send,) = [s for s in sim_sends(media, instance=f"{p}-slow") if s["to"] == "wxid_after"]
    assert next_send["received_at"] >= hold["until"] - TOLERANCE_S


SEQUENCE = {
    "kind": "sequence",
    "parts": [{"kind": "text", "text": "{name}，双十一快乐"}, IMAGE, MINI, LINK],
}


@pytest.mark.timeout(240)
def test_a_sequence_campaign_to_50_recipients_on_5_accounts(media: ApiStack, sim_clean: httpx.Client) -> None:
    p = media.prefix
    gap = 0.1
    sim_clean.post("/_sim/latency", json={"latency_s": 0.02}).raise_for_status()
    accounts = {"sq0": "gewe", "sq1": "gewe", "sq2": "ecloud", "sq3": "ecloud", "sq4": "ecloud"}
    for account, vendor in accounts.items():
        put_account(media, account, vendor, f"{p}-{account}", per_minute=6000, min_interval_s=gap, jitter_s=0)
    recipients: list[dict[str, Any]] = [{"to": f"wxid_q{i:02d}", "vars": {"name": f"客户{i}"}} for i in range(50)]
    # the mini-program card of one recipient on a GeWe account is refused for its cover (Devo919/Gewechat#176):
    # its link card never goes out (recipients without an account are spread by crc32, as campaigns do)
    failing = next(str(r["to"]) for r in recipients if zlib.crc32(r["to"].encode()) % len(accounts) == 0)
    add_fault(media, kind="cover_refused", vendor="gewe", to=failing, times=1)
    body = {"name": "seq", "accounts": list(accounts), "message": SEQUENCE, "recipients": recipients}
    response = media.http.post("/v1/campaigns", json=body)
    assert response.status_code == 202, response.text
    cid = response.json()["id"]
    wait_for(lambda: media.http.get(f"/v1/campaigns/{cid}").json()["finished"], timeout=180, what="the campaign")
    c = media.http.get(f"/v1/campaigns/{cid}").json()
    assert c["counts"]["sent"] == 49 and c["counts"]["dead"] == 1

    sends = [s for s in sim_sends(media) if s["instance"].startswith(f"{p}-sq")]
    kinds = {"postText": "text", "sendText": "text", "postImage": "image", "sendImage2": "image",
             "postMiniApp": "miniprogram", "sendApplets": "miniprogram", "postLink": "link", "sendUrl": "link"}  # fmt: skip
    by_account: dict[str, list[dict[str, Any]]] = {}
    for s in sorted(sends, key=lambda s: s["received_at"]):
        by_account.setdefault(s["instance"], []).append(s)
    for instance, calls in by_account.items():
        # one call at a time per account and the gap after each, between parts as between recipients
        for before, after in itertools.pairwise(calls):
            assert after["received_at"] - before["sent_at"] >= gap - TOLERANCE_S, instance
        # no interleaving: a recipient's parts are consecutive, in order
        runs = [
            (to, [kinds[s["endpoint"]] for s in group]) for to, group in itertools.groupby(calls, lambda s: s["to"])
        ]
        assert len({to for to, _ in runs}) == len(runs), f"{instance}: a recipient's parts were interleaved"
        for to, got in runs:
            assert got == (["text", "image"] if to == failing else ["text", "image", "miniprogram", "link"]), to
    assert sum(len(v) for v in by_account.values()) == 49 * 4 + 2
    first = next(s for s in sends if s["to"] == "wxid_q03" and kinds[s["endpoint"]] == "text")
    assert first["body"].get("content") == "客户3，双十一快乐"

    # each part's own ids in the deliveries, the failing one's rest skipped
    deliveries = media.http.get(f"/v1/campaigns/{cid}/deliveries", params={"limit": 100}).json()["deliveries"]
    by_to = {d["to"]: d for d in deliveries}
    records = {(s["to"], kinds[s["endpoint"]]): s for s in sends}
    for to, d in by_to.items():
        for part in d["parts"]:
            if part["status"] == "sent":
                assert part["new_msg_id"] == str(records[to, part["kind"]]["new_msg_id"])
    assert [x["status"] for x in by_to[failing]["parts"]] == ["sent", "sent", "dead", "skipped"]
    assert by_to[failing]["reason"] == "permanent" and "remaining parts: skipped" in by_to[failing]["error"]
    # the export: one row per part, with that part's ids
    export = media.http.get(f"/v1/campaigns/{cid}/deliveries", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 50 * 4
    mine = [r for r in rows if r["to"] == "wxid_q11"]
    assert [r["part"] for r in mine] == ["1", "2", "3", "4"] and len({r["new_msg_id"] for r in mine}) == 4

    # recall: every part that went out is revoked (GeWe's postImage answers createTime 0: not revocable)
    response = media.http.post(f"/v1/campaigns/{cid}/recall", json={"window_s": 120})
    assert response.status_code == 202, response.text

    def settled() -> bool:
        return bool(media.http.get(f"/v1/campaigns/{cid}").json()["recall"]["pending"] == 0)

    wait_for(settled, timeout=120, what="the revokes", interval=0.2)
    with httpx.Client(base_url=media.sim.url) as admin:
        revoked = {(r["to"], r["ids"].get("newMsgId")) for r in admin.get("/_sim/revokes").json()["revokes"]
                   if r["instance"].startswith(f"{p}-sq") and r["outcome"] == "revoked"}  # fmt: skip
    for s in sends:
        gewe_image = s["endpoint"] == "postImage"
        assert ((s["to"], s["new_msg_id"]) in revoked) is not gewe_image, s["endpoint"]
    after = {d["to"]: d for d in media.http.get(f"/v1/campaigns/{cid}/deliveries", params={"limit": 100}).json()[
        "deliveries"]}  # fmt: skip
    ecloud_to = next(s["to"] for s in sends if s["instance"].endswith("-sq2"))
    gewe_to = next(s["to"] for s in sends if s["instance"].endswith("-sq0") and s["to"] != failing)
    assert after[ecloud_to]["recall"] == "recalled"
    assert after[gewe_to]["recall"] == "failed" and "part 2: not revocable" in after[gewe_to]["recall_error"]
    assert after[gewe_to]["recall_error"].startswith("recalled part 1, 3, 4; ")  # what did come back
    assert after[failing]["recall"] in ("recalled", "failed")  # its sent parts were asked for too


def test_a_worker_killed_during_a_part_never_resends_it(media: ApiStack, sim_clean: httpx.Client) -> None:
    """SIGKILL while the vendor fetches a sequence's image: RECOVER makes the job an unknown outcome, the text
    part keeps its ids, the image shows `unknown` (it may have gone out), the link is skipped, and nothing is
    sent again by the next worker."""
    p = media.prefix
    put_account(media, "kill", "gewe", f"{p}-kill")
    sim_clean.post("/_sim/latency", json={"media_s": [3, 3]}).raise_for_status()
    job = submit(media, "kill", "wxid_k", {"kind": "sequence", "parts": [{"kind": "text", "text": "hi"}, IMAGE, LINK]})
    wait_for(lambda: len(sim_sends(media, instance=f"{p}-kill")) == 1, timeout=30, what="the text part", interval=0.02)
    time.sleep(0.5)  # the image part is in the vendor's hands (it fetches for 3 s)
    workers = [proc for proc in media.procs if proc.args[0] == "worker"]
    for proc in workers:
        proc.kill()
    media.start_worker()
    (done,) = wait_views(media, [job], timeout=60)
    assert done["status"] == "dead" and done["reason"] == "unknown_outcome"
    assert [part["status"] for part in done["parts"]] == ["sent", "unknown", "skipped"]
    time.sleep(1.0)  # anything resent would have reached the simulator by now
    sent = sim_sends(media, instance=f"{p}-kill")
    assert [s["endpoint"] for s in sent] == ["postText", "postImage"]  # the in-flight image once, no link
    assert done["parts"][0]["new_msg_id"] == str(sent[0]["new_msg_id"])
