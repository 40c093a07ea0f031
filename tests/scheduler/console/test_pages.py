"""The operator console (``/console``) driven in a real headless Chromium against a real stack.

One browser and one stack (``broadcast api`` + worker + scheduler on the vendor simulator) for the module.
The tests share the browser's session: the token is typed once (``open_page`` logs in when it must).
Screenshots of each page land in ``test-output/console/`` for a person to look at; with
``BROADCAST_DOCS_SCREENSHOTS=1`` the README's pictures (a finished campaign, and those of issue 23: charts,
audit, a viewer's page) are also copied to ``docs/`` where the README shows them.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator.server import SimulatorServer
from tests.browser import ROOT, browser_session, requested_urls, screenshot
from tests.conftest import API_TOKEN, DATA, ApiStack
from tests.procs import wait_for
from tests.worker.test_xmlsafe import XXE
from worker.store.audit import AuditLog

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    for driver in browser_session():
        # the console's readers are mostly in China; a zone other than the machine's (UTC in CI) also shows that
        # every time the console prints is the moment the API recorded, with its offset
        driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Shanghai"})
        yield driver


@pytest.fixture(scope="module")
def stack(redis_url: str, sim: SimulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    s = ApiStack(redis_url, sim, tmp_path_factory.mktemp("console"))
    s.add_account("shop", "gewe")
    s.add_account("backup", "ecloud")
    s.start_worker()
    s.start("scheduler")
    yield s
    with httpx.Client(base_url=sim.url) as admin:
        admin.delete("/_sim/faults")
    s.stop()


def by_css(driver: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def all_css(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def click(driver: Any, css: str) -> None:
    """Click what ``css`` finds; if a poll redrew it between finding and clicking, find it again."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            by_css(driver, css).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.05)
    by_css(driver, css).click()


def text_of(driver: Any, css: str) -> str:
    found = all_css(driver, css)
    return " ".join(e.text for e in found)


def type_into(driver: Any, css: str, text: str) -> None:
    """Type into what ``css`` finds once it takes keys: a field can be briefly not interactable (or redrawn)
    while the page settles after a click, longer on a busy machine."""
    from selenium.common.exceptions import ElementNotInteractableException, StaleElementReferenceException

    deadline = time.monotonic() + 10
    while True:
        try:
            by_css(driver, css).send_keys(text)
            return
        except (ElementNotInteractableException, StaleElementReferenceException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait for what the page shows (the console polls every 2 s)."""

    def safe() -> bool:
        try:
            return predicate()
        except Exception:
            return False

    wait_for(safe, timeout=timeout, what=what, interval=0.1)


def shown_moment(text: str) -> int:
    """The epoch second a console time such as ``2026-12-05 16:03:26 UTC+8`` (or ``UTC-3:30``, ``UTC``) names."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC(?:([+-])(\d{1,2})(?::(\d\d))?)?", text)
    assert match, f"no UTC offset in {text!r}"
    sign = -1 if match[2] == "-" else 1
    offset = timedelta(hours=int(match[3] or 0), minutes=int(match[4] or 0)) * sign
    return int(datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone(offset)).timestamp())


def open_page(driver: Any, stack: ApiStack, hash_: str) -> None:
    """Go to a page, logging in first when this browser session has no token yet."""
    driver.get(f"{stack.api_url}/console#{hash_}")
    until(lambda: by_css(driver, "#view").is_displayed() or by_css(driver, "#login").is_displayed(), "the console")
    if by_css(driver, "#login").is_displayed():
        by_css(driver, "#token").send_keys(API_TOKEN)
        click(driver, "#login-form button")
    until(lambda: by_css(driver, "#view").is_displayed(), f"the {hash_} page")


def test_login_refuses_a_wrong_token_then_keeps_the_right_one_out_of_urls(stack: ApiStack, browser: Any) -> None:
    requested_urls(browser)
    browser.get(f"{stack.api_url}/console")
    until(lambda: by_css(browser, "#login").is_displayed(), "the login form")
    assert "输入 API token" in by_css(browser, "#login h1").text  # Chinese first
    screenshot(browser, "console", "01-login")

    by_css(browser, "#token").send_keys("not-the-token")
    click(browser, "#login-form button")
    until(lambda: "Token 无效" in by_css(browser, "#notice").text, "the refusal")
    assert by_css(browser, "#login").is_displayed()

    by_css(browser, "#token").send_keys(API_TOKEN)
    click(browser, "#login-form button")
    until(lambda: by_css(browser, "#nav").is_displayed(), "the console after login")
    assert browser.execute_script("return sessionStorage.getItem('broadcast.token')") == API_TOKEN
    assert browser.execute_script("return localStorage.length") == 0 or "token" not in str(
        browser.execute_script("return JSON.stringify(localStorage)")
    )
    urls = [url for url, _ in requested_urls(browser)]
    assert urls and all(url.startswith(stack.api_url) for url in urls), urls  # no CDN, nothing else
    assert all(API_TOKEN not in url for url in urls), "the token never goes into a URL"


def test_campaign_from_csv_finishes_and_its_dead_letters_replay(stack: ApiStack, browser: Any, tmp_path: Path) -> None:
    # two recipients fail once: one is not a friend (permanent), one times out after the request left
    with httpx.Client(base_url=stack.sim.url) as admin:
        admin.post("/_sim/faults", json={"kind": "not_friend", "to": "wxid_console_blocked", "times": 1})
        admin.post("/_sim/faults", json={"kind": "timeout_after", "to": "wxid_console_slow", "times": 1, "delay_s": 3})
    csv_file = tmp_path / "双十一名单.csv"
    rows = [("wxid_console_00", "张三"), ("wxid_console_01", "李四"), ("wxid_console_blocked", "王五")]
    rows += [("wxid_console_slow", "赵六")] + [(f"wxid_console_{i:02d}", f"客户{i}") for i in range(2, 8)]
    csv_file.write_text("to,name\n" + "".join(f"{to},{name}\n" for to, name in rows), encoding="utf-8")

    open_page(browser, stack, "new")
    until(lambda: len(all_css(browser, "#c-accounts input")) == 2, "the account choices")
    by_css(browser, "#c-name").send_keys("双十一 console")
    click(browser, "#c-accounts input[value='shop']")
    type_into(browser, "#c-text", "{name} 你好，双十一快乐")
    by_css(browser, "#c-file").send_keys(str(csv_file))
    until(lambda: "10" in by_css(browser, "#c-preview p").text, "the CSV preview")
    preview = text_of(browser, "#c-preview-table tbody")
    assert "wxid_console_00" in preview and "张三" in preview and "客户2" in preview
    assert len(all_css(browser, "#c-preview-table tbody tr")) == 5, "the first five rows"
    until(lambda: by_css(browser, "#c-rendered").text == "张三 你好，双十一快乐", "the rendered message")
    screenshot(browser, "console", "02-new-campaign")

    click(browser, "#c-submit")
    until(lambda: "#campaign/" in browser.current_url, "the campaign page")
    campaign_id = browser.current_url.split("#campaign/")[1]
    until(lambda: by_css(browser, "#stat-remaining").text == "0", "the campaign to finish", timeout=60)
    assert by_css(browser, "#stat-sent").text == "8"
    assert by_css(browser, "#stat-dead").text == "2"
    assert "已完成" in by_css(browser, "#head").text
    assert by_css(browser, "#stat-rate").text == "–"  # nothing left to send: no "0.0 条/秒"
    assert by_css(browser, "#stat-cancelled").text == "0" and "已取消" in by_css(browser, "#head .stats").text
    # exact 64-bit ids, as the API gave them (strings)
    api_items = stack.http.get(f"/v1/campaigns/{campaign_id}/deliveries", params={"limit": 50}).json()["deliveries"]
    expected = {d["result"]["new_msg_id"] for d in api_items if d["status"] == "sent"}
    until(lambda: len([e for e in all_css(browser, ".new-msg-id") if e.text]) == 8, "the ids in the table")
    shown = {e.text for e in all_css(browser, ".new-msg-id") if e.text}
    assert shown == expected and all(len(x) >= 17 for x in shown)
    # every time says which time it is: its UTC offset, and the moment the API recorded
    sent_at = {d["result"]["new_msg_id"]: d["sent_at"] for d in api_items if d["status"] == "sent"}
    for row in all_css(browser, "#deliveries tbody tr"):
        new_msg_id = row.find_element("css selector", ".new-msg-id").text
        if new_msg_id:
            assert shown_moment(row.find_element("css selector", "td[data-label='发送时间']").text) == int(
                sent_at[new_msg_id]
            )
    # the README's picture: 8 sent, 2 dead letters, and the deliveries with their exact ids and times under them
    browser.execute_script("document.querySelector('.stats').scrollIntoView()")
    shot(browser, "03-campaign", docs="console")
    browser.execute_script("window.scrollTo(0, 0)")

    # the status filter pages through the dead ones only
    from selenium.webdriver.support.ui import Select

    Select(by_css(browser, "#status-filter")).select_by_value("dead")
    until(lambda: len(all_css(browser, "#deliveries tbody tr")) == 2, "the dead deliveries")

    # the list shows live progress
    open_page(browser, stack, "campaigns")
    until(lambda: campaign_id in text_of(browser, "#list"), "the campaign in the list")
    row = f"tr[data-campaign='{campaign_id}']"
    assert by_css(browser, f"{row} .sent").text == "8" and by_css(browser, f"{row} .dead").text == "2"
    screenshot(browser, "console", "04-campaigns")

    # dead letters: the permanent one replays at once; the unknown outcome asks for --force first
    open_page(browser, stack, "dead")
    until(lambda: "wxid_console_blocked" in text_of(browser, "#list"), "the dead letters")
    assert "结果未知（可能已发出）" in text_of(browser, "#list") and "服务商拒绝" in text_of(browser, "#list")
    screenshot(browser, "console", "05-dead-letters")
    dead = {d["to"]: d["id"] for d in stack.http.get("/v1/dead-letters").json()["dead_letters"]}
    # the reason filter offers the reasons in words and asks the API with the code
    Select(by_css(browser, "#f-reason")).select_by_value("unknown_outcome")
    click(browser, "#dead-filter button[type='submit']")
    until(lambda: "wxid_console_blocked" not in text_of(browser, "#list"), "the unknown outcomes only")
    assert [row.get_attribute("data-dead") for row in all_css(browser, "#list tbody tr")] == [dead["wxid_console_slow"]]
    Select(by_css(browser, "#f-reason")).select_by_value("")
    click(browser, "#dead-filter button[type='submit']")
    until(lambda: "wxid_console_blocked" in text_of(browser, "#list"), "every dead letter again")
    click(browser, f"tr[data-dead='{dead['wxid_console_blocked']}'] button[data-action='inspect']")
    until(
        lambda: "not_friend" in by_css(browser, "#dead-detail").text or "好友" in by_css(browser, "#dead-detail").text,
        "history",
    )
    click(browser, f"button[data-action='replay'][data-id='{dead['wxid_console_blocked']}']")
    until(lambda: "已重新排队" in by_css(browser, "#notice").text, "the replay notice")

    slow = dead["wxid_console_slow"]
    click(browser, f"button[data-action='replay'][data-id='{slow}']")
    until(lambda: browser.switch_to.alert is not None, "the --force confirmation")
    alert = browser.switch_to.alert
    assert "未知" in alert.text
    alert.dismiss()  # declining sends nothing
    time.sleep(0.5)
    assert stack.http.get(f"/v1/messages/{slow}").json()["status"] == "dead"
    click(browser, f"button[data-action='replay'][data-id='{slow}']")
    until(lambda: browser.switch_to.alert is not None, "the --force confirmation")
    browser.switch_to.alert.accept()
    until(lambda: "已重新排队" in by_css(browser, "#notice").text, "the forced replay")

    open_page(browser, stack, f"campaign/{campaign_id}")
    until(lambda: by_css(browser, "#stat-sent").text == "10", "the replayed sends", timeout=60)
    assert by_css(browser, "#stat-dead").text == "0"


def test_pasted_xml_is_checked_live_showing_what_was_extracted(stack: ApiStack, browser: Any) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(browser, stack, "new")
    Select(by_css(browser, "#c-kind")).select_by_value("appmsg")
    pasted = (DATA / "seed000_callback_fragment.xml").read_text(encoding="utf-8")
    browser.execute_script(
        "const x = document.querySelector('#c-xml'); x.value = arguments[0];"
        "x.dispatchEvent(new Event('input', {bubbles: true}))",
        pasted,
    )
    until(lambda: by_css(browser, "#c-extracted").text.startswith("<appmsg"), "the extracted <appmsg>")
    assert "校验通过" in by_css(browser, "#c-check").text
    browser.execute_script(
        "const x = document.querySelector('#c-xml'); x.value = arguments[0];"
        "x.dispatchEvent(new Event('input', {bubbles: true}))",
        XXE,
    )
    until(lambda: "message.xml" in by_css(browser, "#c-check").text, "the refusal naming the field")
    assert not all_css(browser, "#c-extracted")


def test_new_campaign_form_previews_media_and_sequences_with_the_vendors_that_carry_them(
    stack: ApiStack, browser: Any
) -> None:
    """Issue 20: image, file, link and sequence kinds in the form; the check names the vendors that carry it
    and shows each part of a sequence as the recipient gets it."""
    from selenium.webdriver.support.ui import Select

    open_page(browser, stack, "new")
    Select(by_css(browser, "#c-kind")).select_by_value("image")
    browser.execute_script(
        "const x = document.querySelector('#c-media_url'); x.value = 'https://cdn.example.com/p.jpg';"
        "x.dispatchEvent(new Event('input', {bubbles: true}))"
    )
    until(lambda: "ecloud, gewe" in by_css(browser, "#c-vendors").text, "the vendors carrying an image")
    assert "p.jpg" in by_css(browser, "#c-check").text
    Select(by_css(browser, "#c-kind")).select_by_value("sequence")
    browser.execute_script(  # the example sequence, touched: text, image, link
        "document.querySelector('#c-sequence').dispatchEvent(new Event('input', {bubbles: true}))"
    )
    until(lambda: len(all_css(browser, "#c-parts li")) == 3, "the three parts")
    parts = [li.text for li in all_css(browser, "#c-parts li")]
    assert "第 1 条 · text" in parts[0] and "第 3 条 · link" in parts[2] and "<type>5</type>" in parts[2]
    assert "ecloud, gewe" in by_css(browser, "#c-vendors").text  # the image part: not gewe-legacy, not MagicCgi
    screenshot(browser, "console", "new-campaign-sequence")
    browser.execute_script(  # a part a vendor would refuse: the check names the field
        "const x = document.querySelector('#c-sequence');"
        "x.value = JSON.stringify({kind: 'sequence', parts: [{kind: 'image', url: 'ftp://x'}]});"
        "x.dispatchEvent(new Event('input', {bubbles: true}))"
    )
    until(lambda: "message.parts[0].url" in by_css(browser, "#c-check").text, "the refusal naming the part's field")


def test_export_downloads_every_delivery_with_iso_times(stack: ApiStack, browser: Any, tmp_path: Path) -> None:
    import csv
    import json

    created = stack.http.post(
        "/v1/campaigns",
        json={
            "name": "导出",
            "account": "shop",
            "recipients": [{"to": f"wxid_export_{i}"} for i in range(3)],
            "message": {"kind": "text", "text": "x"},
        },
    ).json()
    wait_for(
        lambda: stack.http.get(f"/v1/campaigns/{created['id']}").json()["finished"], timeout=60, what="the campaign"
    )
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    open_page(browser, stack, f"campaign/{created['id']}")
    until(lambda: by_css(browser, "#stat-sent").text == "3", "the finished campaign")
    for fmt in ("csv", "jsonl"):
        click(browser, f"button[data-action='export'][data-format='{fmt}']")
        target = tmp_path / f"{created['id']}-deliveries.{fmt}"
        until(lambda target=target: target.exists() and target.stat().st_size > 0, f"the {fmt} download")
    rows = list(csv.DictReader((tmp_path / f"{created['id']}-deliveries.csv").open(encoding="utf-8")))
    assert sorted(r["to"] for r in rows) == [f"wxid_export_{i}" for i in range(3)]
    assert all(
        r["status"] == "sent" and r["sent_at_iso"].endswith("+08:00") and len(r["new_msg_id"]) >= 17 for r in rows
    )
    lines = (tmp_path / f"{created['id']}-deliveries.jsonl").read_text(encoding="utf-8").splitlines()
    assert {json.loads(line)["result"]["new_msg_id"] for line in lines} == {r["new_msg_id"] for r in rows}


def test_recall_asks_first_then_shows_each_outcome(stack: ApiStack, browser: Any) -> None:
    created = stack.http.post(
        "/v1/campaigns",
        json={
            "name": "撤回",
            "account": "shop",
            "recipients": [{"to": f"wxid_recall_{i}"} for i in range(3)],
            "message": {"kind": "text", "text": "发错了"},
        },
    ).json()
    wait_for(
        lambda: stack.http.get(f"/v1/campaigns/{created['id']}").json()["finished"], timeout=60, what="the campaign"
    )
    open_page(browser, stack, f"campaign/{created['id']}")
    recall = "button[data-action='recall']"
    until(lambda: by_css(browser, "#stat-sent").text == "3", "the finished campaign")
    click(browser, recall)
    until(lambda: browser.switch_to.alert is not None, "the recall confirmation")
    assert "撤回" in browser.switch_to.alert.text
    browser.switch_to.alert.dismiss()  # declining revokes nothing
    assert stack.http.get(f"/v1/campaigns/{created['id']}").json()["recall"] is None
    click(browser, recall)
    until(lambda: browser.switch_to.alert is not None, "the recall confirmation")
    browser.switch_to.alert.accept()
    until(lambda: by_css(browser, "#recall-recalled").text == "3", "three recalled")
    assert by_css(browser, "#recall-pending").text == "0" and not all_css(browser, recall)
    until(lambda: text_of(browser, "#deliveries td.recall").split() == ["已撤回"] * 3, "the recall column")
    screenshot(browser, "console", "10-campaign-recalled")


def test_pause_and_resume_a_scheduled_campaign(stack: ApiStack, browser: Any) -> None:
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    created = stack.http.post(
        "/v1/campaigns",
        json={
            "name": "明早推送",
            "account": "backup",
            "recipients": [{"to": f"wxid_later_{i}"} for i in range(3)],
            "message": {"kind": "text", "text": "早上好"},
            "send_at": later,
        },
    ).json()
    open_page(browser, stack, "campaigns")
    row = f"tr[data-campaign='{created['id']}']"
    until(lambda: "已预约" in by_css(browser, f"{row} .status").text, "the scheduled campaign")
    click(browser, f"{row} button[data-op='pause']")
    until(lambda: "已暂停" in by_css(browser, f"{row} .status").text, "paused")
    assert stack.http.get(f"/v1/campaigns/{created['id']}").json()["status"] == "paused"
    click(browser, f"{row} button[data-op='resume']")
    until(lambda: "已预约" in by_css(browser, f"{row} .status").text, "resumed")
    assert stack.http.get(f"/v1/campaigns/{created['id']}").json()["status"] == "scheduled"


def test_a_draft_is_tested_then_started_from_its_page(stack: ApiStack, browser: Any, tmp_path: Path) -> None:
    csv_file = tmp_path / "草稿名单.csv"
    csv_file.write_text("to,name\nwxid_draft_0,张三\nwxid_draft_1,李四\n", encoding="utf-8")
    open_page(browser, stack, "new")
    until(lambda: len(all_css(browser, "#c-accounts input")) == 2, "the account choices")
    by_css(browser, "#c-name").send_keys("草稿 console")
    click(browser, "#c-accounts input[value='shop']")
    type_into(browser, "#c-text", "{name} 你好")
    by_css(browser, "#c-file").send_keys(str(csv_file))
    until(lambda: "2" in by_css(browser, "#c-preview p").text, "the CSV preview")
    # its long label does not shrink the box: the same size as the account's checkbox
    assert by_css(browser, "#c-draft").size == by_css(browser, "#c-accounts input[value='shop']").size
    click(browser, "#c-draft")
    click(browser, "#c-submit")
    until(lambda: "#campaign/" in browser.current_url, "the campaign page")
    campaign_id = browser.current_url.split("#campaign/")[1]
    until(lambda: "草稿" in by_css(browser, "#head").text, "the draft")
    assert stack.http.get(f"/v1/campaigns/{campaign_id}").json()["status"] == "draft"

    by_css(browser, "#test-to").send_keys("wxid_console_ops")
    click(browser, "#test-submit")
    until(lambda: "1 条已送达" in by_css(browser, "#tests-summary").text, "the test send delivered", timeout=60)
    assert "wxid_console_ops" in text_of(browser, "#tests .test-job")
    screenshot(browser, "console", "06b-draft-tested")
    assert stack.http.get(f"/v1/campaigns/{campaign_id}").json()["counts"]["sent"] == 0

    click(browser, "#head button[data-action='start']")
    until(lambda: browser.switch_to.alert is not None, "the start confirmation")
    browser.switch_to.alert.accept()
    until(lambda: "已完成" in by_css(browser, "#head").text, "the started campaign to finish", timeout=60)
    assert not by_css(browser, "#test-form").is_displayed()


def test_a_campaign_that_paused_itself_shows_why(stack: ApiStack, browser: Any) -> None:
    with httpx.Client(base_url=stack.sim.url) as admin:
        admin.post("/_sim/faults", json={"kind": "not_friend", "to": "wxid_console_gone", "times": 1})
    created = stack.http.post(
        "/v1/campaigns",
        json={
            "name": "自动暂停",
            "account": "shop",
            "recipients": [{"to": "wxid_console_gone"}, {"to": "wxid_console_after"}],
            "message": {"kind": "text", "text": "x"},
            "auto_pause": {"streak": 1},
        },
    ).json()
    wait_for(
        lambda: stack.http.get(f"/v1/campaigns/{created['id']}").json()["status"] == "paused",
        timeout=60,
        what="the campaign to pause itself",
    )
    open_page(browser, stack, f"campaign/{created['id']}")
    until(lambda: "对方不是你的好友 ×1" in by_css(browser, "#pause-reason").text, "the reason")
    screenshot(browser, "console", "06c-auto-paused")
    open_page(browser, stack, "campaigns")
    row = f"tr[data-campaign='{created['id']}']"
    until(lambda: all_css(browser, f"{row} .pause-reason"), "the campaign in the list")
    reason = by_css(browser, f"{row} .pause-reason")
    until(lambda: "出错过多，已自动暂停：连续 1 次失败" in reason.text, "the reason in the list, in Chinese")
    assert "error threshold" in (reason.get_attribute("title") or "")  # the stored words, on hover
    click(browser, f"{row} button[data-op='resume']")
    until(lambda: "已完成" in by_css(browser, f"{row} .status").text, "resumed and finished", timeout=60)
    assert by_css(browser, f"{row} .rate").text == "–"


def test_accounts_pause_resume_and_limits_with_a_write_only_token(stack: ApiStack, browser: Any) -> None:
    open_page(browser, stack, "accounts")
    row = "tr[data-account='shop']"
    until(lambda: "正常" in by_css(browser, f"{row} .status").text, "the accounts")
    today = stack.http.get("/v1/accounts/shop").json()["sent_today"]
    assert by_css(browser, f"{row} .today").text == f"{today} / 不限", "today's sends against the cap"
    click(browser, f"{row} button[data-op='pause']")
    until(lambda: "已暂停" in by_css(browser, f"{row} .status").text, "paused")
    assert by_css(browser, f"{row} .reason").text == "由操作员暂停"
    assert by_css(browser, f"{row} .reason").get_attribute("title") == "paused by operator"
    click(browser, f"{row} button[data-op='resume']")  # with the vendor's online check
    until(lambda: "正常" in by_css(browser, f"{row} .status").text, "resumed")

    click(browser, f"{row} button[data-action='edit-account']")
    cap = by_css(browser, "#acc-daily_cap")
    cap.clear()
    cap.send_keys("500")
    by_css(browser, "#acc-token").send_keys("a-new-secret-token")
    click(browser, "#account-form button[type='submit']")
    until(lambda: by_css(browser, f"{row} .today").text == f"{today} / 500", "the new cap")
    assert by_css(browser, "#acc-token").get_attribute("value") == ""
    assert "a-new-secret-token" not in browser.page_source
    screenshot(browser, "console", "06-accounts")
    # an API error shows its message and the field
    cap = by_css(browser, "#acc-per_minute")
    cap.clear()
    cap.send_keys("-5")
    browser.execute_script("document.querySelector('#acc-per_minute').removeAttribute('min')")
    click(browser, "#account-form button[type='submit']")
    until(lambda: "limits.per_minute" in by_css(browser, "#notice").text, "the field in the error")
    assert by_css(browser, "#notice").text.startswith("输入有误："), "a headline in the reader's language first"
    assert stack.http.get("/v1/accounts/shop").json()["limits"]["per_minute"] == 0


def test_schedules_create_list_next_firings_and_delete(stack: ApiStack, browser: Any) -> None:
    open_page(browser, stack, "schedules")
    until(lambda: "没有定时任务" in by_css(browser, "#list").text, "the empty list")
    by_css(browser, "#s-name").send_keys("工作日早报")
    by_css(browser, "#s-account").send_keys("shop")
    by_css(browser, "#s-to").send_keys("123@chatroom")
    by_css(browser, "#s-text").send_keys("早上好")
    click(browser, "#schedule-form button[type='submit']")
    until(lambda: "工作日早报" in by_css(browser, "#list").text, "the new schedule")
    [schedule] = stack.http.get("/v1/schedules").json()["schedules"]
    assert len(schedule["next_firings"]) == 3
    row = f"tr[data-schedule='{schedule['id']}']"
    assert by_css(browser, row).text.count(":") >= 3, "three firing times shown"
    screenshot(browser, "console", "07-schedules")

    by_css(browser, "#s-cron").clear()
    by_css(browser, "#s-cron").send_keys("not a cron")
    click(browser, "#schedule-form button[type='submit']")
    until(lambda: "cron" in by_css(browser, "#notice").text, "the cron error with its field")

    click(browser, f"{row} button[data-op='pause']")
    until(lambda: "已暂停" in by_css(browser, f"{row} .status").text, "the paused schedule")
    paused = stack.http.get(f"/v1/schedules/{schedule['id']}").json()
    assert paused["paused"] is True and paused["next_at"] is None
    assert stack.redis.zscore(f"{stack.prefix}:schedules", schedule["id"]) == float("inf"), "never due"
    click(browser, f"{row} button[data-op='resume']")
    until(lambda: "正常" in by_css(browser, f"{row} .status").text, "the resumed schedule")
    assert stack.http.get(f"/v1/schedules/{schedule['id']}").json()["next_at"] == schedule["next_at"]

    click(browser, f"{row} button[data-action='delete-schedule']")
    browser.switch_to.alert.accept()
    until(lambda: "没有定时任务" in by_css(browser, "#list").text, "the deletion")


def test_suppressions_are_added_shown_as_skipped_and_lifted(stack: ApiStack, browser: Any) -> None:
    # its own account: the accounts test gives `shop` a token the simulator does not know
    stack.add_account("hush", "gewe")
    open_page(browser, stack, "suppressions")  # other tests' not-a-friend answers may be listed already
    until(lambda: "加载" not in by_css(browser, "#list").text, "the list")
    by_css(browser, "#s-to").send_keys("wxid_noisy")
    by_css(browser, "#s-account").send_keys("hush")
    by_css(browser, "#s-note").send_keys("电话投诉")
    click(browser, "#supp-add button[type='submit']")
    row = "tr[data-supp='wxid_noisy']"
    until(lambda: "手动" in by_css(browser, row).text and "电话投诉" in by_css(browser, row).text, "the new entry")
    screenshot(browser, "console", "08-suppressions")
    body = {"name": "退订检查", "account": "hush", "message": {"kind": "text", "text": "你好"},
            "recipients": [{"to": "wxid_noisy"}, {"to": "wxid_quiet"}]}  # fmt: skip
    cid = stack.http.post("/v1/campaigns", json=body).json()["id"]
    open_page(browser, stack, f"campaign/{cid}")
    until(lambda: by_css(browser, "#stat-skipped").text == "1" and by_css(browser, "#stat-sent").text == "1",
          "one skipped, one sent")  # fmt: skip
    until(lambda: "在退订名单中" in by_css(browser, "#view").text, "the skipped delivery says why, in Chinese")
    # a refresh answered after the operator left the page stops there: no error about its vanished elements
    browser.execute_script("""
      window.__held = []; const real = window.fetch; window.__realFetch = real;
      window.fetch = (url, opts) => String(url).includes("/timeline")
        ? new Promise((done) => window.__held.push(() => done(real(url, opts)))) : real(url, opts);""")
    until(lambda: browser.execute_script("return window.__held.length") > 0, "a refresh waiting for its timeline")
    browser.execute_script("location.hash = '#campaigns'")
    row_skipped = f"tr[data-campaign='{cid}'] .skipped"
    until(lambda: by_css(browser, row_skipped).text == "1", "the list's skipped column")  # counts add up
    browser.execute_script("window.fetch = window.__realFetch; window.__held.forEach((go) => go())")
    time.sleep(1)  # the held refresh goes on (or, before the fix, wrote to the gone page and said so in #notice)
    notice = by_css(browser, "#notice")
    assert not notice.is_displayed() or "null" not in notice.text, notice.text
    open_page(browser, stack, "suppressions")
    until(lambda: by_css(browser, row).is_displayed(), "the entry")
    click(browser, f"{row} button[data-action='lift']")
    browser.switch_to.alert.accept()
    until(lambda: not all_css(browser, row), "the entry lifted")
    listed = stack.http.get("/v1/suppressions", params={"account": "hush"}).json()["suppressions"]
    assert "wxid_noisy" not in [s["to"] for s in listed]


def test_callback_changes_held_past_the_cap_are_shown_for_their_account_and_applied(
    stack: ApiStack, browser: Any
) -> None:
    from scheduler.intake.callbacks import HeldChanges

    stack.add_account("loud", "gewe")
    held = HeldChanges(stack.redis, stack.prefix)
    for n in range(2):  # what the callback processor keeps past BROADCAST_CALLBACK_CHANGES_PER_H
        held.hold("loud", reason="opted_out", who=f"wxid_held{n}", note="", digest="0" * 64, at=time.time())
    open_page(browser, stack, "suppressions")
    until(lambda: "加载" not in by_css(browser, "#list").text, "the list")
    assert by_css(browser, "#held").text == ""  # every account: no account's held changes
    by_css(browser, "#sf-account").send_keys("loud")
    click(browser, "#supp-filter button[type='submit']")
    until(lambda: "暂存的回调变更" in by_css(browser, "#held").text, "the held changes of the account")
    panel = by_css(browser, "#held").text
    assert "wxid_held0" in panel and "wxid_held1" in panel and "回复退订" in panel, panel
    screenshot(browser, "console", "08b-held-callback-changes")
    click(browser, "#held button[data-action='held-apply']")
    browser.switch_to.alert.accept()
    until(lambda: by_css(browser, "#held").text == "", "the panel gone once applied")
    until(lambda: all_css(browser, "tr[data-supp='wxid_held1']"), "the applied changes listed")
    author = by_css(browser, "tr[data-supp='wxid_held1'] td[data-label='来源']")
    assert author.text == "服务商回调" and author.get_attribute("title") == "callback"  # in words, the code on hover
    listed = stack.http.get("/v1/suppressions", params={"account": "loud"}).json()["suppressions"]
    assert sorted(s["to"] for s in listed) == ["wxid_held0", "wxid_held1"]
    assert {s["by"] for s in listed} == {"callback"}


def test_english_switch_and_phone_layout(stack: ApiStack, browser: Any) -> None:
    open_page(browser, stack, "campaigns")
    until(lambda: by_css(browser, "#view h1").text == "群发", "Chinese by default")
    click(browser, "#lang")
    until(lambda: by_css(browser, "#view h1").text == "Campaigns", "English")
    assert "Dead letters" in by_css(browser, "#nav").text and "Finished" not in by_css(browser, "#nav").text
    until(lambda: "finished" in text_of(browser, "#list .status"), "English statuses")
    screenshot(browser, "console", "08-campaigns-en")
    browser.refresh()
    until(lambda: by_css(browser, "#view h1").text == "Campaigns", "English kept after reload")

    browser.set_window_size(390, 844)
    try:
        until(lambda: by_css(browser, "#list table thead").is_displayed() is False, "the phone layout")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, f"no sideways scrolling on a phone ({width}px)"
        screenshot(browser, "console", "09-campaigns-phone")
    finally:
        browser.set_window_size(1280, 900)
        click(browser, "#lang")
        until(lambda: by_css(browser, "#view h1").text == "群发", "back to Chinese")


def test_logout_forgets_the_token(stack: ApiStack, browser: Any) -> None:
    open_page(browser, stack, "accounts")
    click(browser, "#logout")
    until(lambda: by_css(browser, "#login").is_displayed(), "the login form")
    assert browser.execute_script("return sessionStorage.getItem('broadcast.token')") is None
    assert not by_css(browser, "#view").is_displayed() and not by_css(browser, "#nav").is_displayed()
    time.sleep(2.5)  # a poll period: nothing polls without a token, so no refusal shows up
    assert not by_css(browser, "#notice").is_displayed() or "Token" not in by_css(browser, "#notice").text


def test_bidi_and_zero_width_characters_are_shown_escaped(stack: ApiStack, browser: Any) -> None:
    """Issue 24, item 9: ``invoice\\u202Egnp.exe`` must not pose as ``invoiceexe.png``; tag characters,
    Hangul fillers, line separators and variation selectors are shown too (escaped by Unicode category)."""
    name = "invoice\u202egnp.exe\u200b|\U000e0041\u3164\u2028\ufe0f\U000e0100\u034f\ue000"
    created = stack.http.post(
        "/v1/campaigns",
        json={
            "name": name,
            "account": "shop",
            "draft": True,
            "recipients": [{"to": "wxid_bidi"}],
            "message": {"kind": "text", "text": "x"},
        },
    )
    assert created.status_code == 202, created.text
    cid = created.json()["id"]
    open_page(browser, stack, "campaigns")
    cell = f"tr[data-campaign='{cid}'] td a"
    until(lambda: "invoice\\u202Egnp.exe\\u200B" in text_of(browser, cell), "the name, escaped")
    assert "\u202e" not in text_of(browser, cell) and "\u200b" not in text_of(browser, cell)
    hidden = "|\\uDB40\\uDC41\\u3164\\u2028\\uFE0F\\uDB40\\uDD00\\u034F\\uE000"
    assert hidden in text_of(browser, cell), text_of(browser, cell)
    open_page(browser, stack, f"campaign/{cid}")
    until(lambda: "invoice\\u202Egnp.exe" in text_of(browser, "#view"), "the name on its page, escaped")
    assert "\u202e" not in text_of(browser, "#view")


def shot(browser: Any, name: str, *, docs: str | None = None) -> None:
    """A screenshot in ``test-output/console/``, copied to ``docs/<docs or name>.png`` with
    ``BROADCAST_DOCS_SCREENSHOTS=1``."""
    path = screenshot(browser, "console", name)
    if os.environ.get("BROADCAST_DOCS_SCREENSHOTS") == "1":
        shutil.copy(path, ROOT / "docs" / f"{docs or name}.png")


# --- issue 23: pictures and roles ---------------------------------------------------------------------------


def test_charts_while_a_campaign_runs_then_the_audit(stack: ApiStack, browser: Any) -> None:
    # an account of its own, paced (4 sends/s) so the campaign is still running when the pictures are taken
    stack.add_account(
        "paced",
        "gewe",
        instance=f"paced-{stack.prefix}",
        per_minute=240,
        min_interval_s=0.25,
        jitter_s=0,
        daily_cap=500,
    )
    with httpx.Client(base_url=stack.sim.url) as admin:
        for i in (5, 17, 29):
            admin.post("/_sim/faults", json={"kind": "not_friend", "to": f"wxid_chart_{i:02d}", "times": 1})
    alice_key = stack.http.post("/v1/keys", json={"name": "alice", "role": "operator"}).json()["key"]
    alice = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {alice_key}"}, timeout=30)
    created = alice.post(
        "/v1/campaigns",
        json={
            "name": "双十二预热",
            "accounts": ["paced"],
            "recipients": [{"to": f"wxid_chart_{i:02d}"} for i in range(60)],
            "message": {"kind": "text", "text": "双十二见"},
        },
    )
    assert created.status_code == 202, created.text
    cid = created.json()["id"]
    requested_urls(browser)
    open_page(browser, stack, f"campaign/{cid}")
    # drawn while it runs: bars for sends and for the failures, from the API's per-minute counts
    until(lambda: len(all_css(browser, "#campaign-chart rect.c-sent")) >= 1, "the campaign chart")
    until(lambda: len(all_css(browser, "#campaign-chart rect.c-dead")) >= 1, "the failures in the chart", timeout=60)
    assert "发送中" in by_css(browser, "#head").text, "still running when the picture is taken"
    assert "每分钟发送与失败" in browser.page_source
    shot(browser, "console-campaign-chart")
    timeline = stack.http.get(f"/v1/campaigns/{cid}/timeline").json()["minutes"]
    drawn = sum(int(e.text.rsplit(" ", 1)[1]) for e in all_css(browser, ".legend") if "死信" in e.text)
    assert 1 <= drawn <= sum(m["dead"] for m in timeline) <= 3

    open_page(browser, stack, "overview")
    until(lambda: len(all_css(browser, "#fleet-sends rect.c-sent")) >= 1, "the fleet chart")
    # three hours of minutes: the time axis is labelled every half hour, on the hour and the half hour
    ticks = [e.get_attribute("textContent") for e in all_css(browser, "#fleet-sends text.tick")]
    assert 5 <= len(ticks) <= 7 and all(t.endswith((":00", ":30")) for t in ticks), ticks
    assert text_of(browser, "#fleet-sends + .row .chart-tz") == "横轴时间：UTC+8"  # the browser runs in Asia/Shanghai
    accounts = len(stack.http.get("/v1/accounts").json()["accounts"])
    until(lambda: len(all_css(browser, ".account-health")) == accounts, "a card for each account")
    paced = by_css(browser, ".account-health[data-account='paced']")
    assert "/ 500" in paced.text and "正常" in paced.text
    until(lambda: "对方不是你的好友" in paced_text(browser), "the account's latest errors")
    shot(browser, "console-overview")
    click(browser, "#lang")
    until(lambda: "Sends per minute" in by_css(browser, "#view").text, "the English overview")
    until(lambda: "Sent today" in paced_text(browser), "the English account cards")
    assert "Account health" in by_css(browser, "#view").text
    shot(browser, "console-overview-en")
    click(browser, "#lang")

    # the campaign's own history under its chart, and the audit page
    alice.post(f"/v1/campaigns/{cid}/pause")
    open_page(browser, stack, f"campaign/{cid}")
    until(lambda: "campaign.pause" in text_of(browser, "#history"), "the campaign's history")
    assert "campaign.create" in text_of(browser, "#history") and "alice" in text_of(browser, "#history")
    # each action in the reader's words, its code kept under it (and on hover)
    assert "暂停群发" in text_of(browser, "#history .audit-label") and "创建群发" in text_of(browser, "#history")
    assert "campaign.pause" in text_of(browser, "#history .audit-code")
    # what a vendor callback changed is on the record under the role "callback", as callbacks.py writes it
    AuditLog(stack.redis, stack.prefix, 86400).record(
        key="callback",
        role="callback",
        action="suppression.add_opted_out",
        target="suppression:paced/wxid_c",
        status=200,
    )
    open_page(browser, stack, "audit")
    until(lambda: len(all_css(browser, ".audit-entry")) >= 3, "the audit page")
    callback = next(e for e in all_css(browser, ".audit-entry") if "suppression:paced/wxid_c" in e.text)
    assert by_css(callback, ".audit-role").text == "服务商回调" and "role_" not in by_css(browser, "#view").text
    action = by_css(callback, ".audit-action")
    assert by_css(action, ".audit-label").text == "回复退订，加入退订名单"
    assert by_css(action, ".audit-code").text == "suppression.add_opted_out"
    assert action.get_attribute("title") == "suppression.add_opted_out"
    shot(browser, "console-audit")
    click(browser, "#lang")
    until(lambda: "Opted out: added to the suppression list" in text_of(browser, ".audit-label"), "the English audit")
    assert "vendor callback" in text_of(browser, ".audit-role") and "Pause campaign" in text_of(browser, ".audit-label")
    click(browser, "#lang")
    urls = [url for url, _ in requested_urls(browser)]
    assert all(url.startswith(stack.api_url) for url in urls), urls  # drawn here: no chart library from a CDN
    stack.http.post(f"/v1/campaigns/{cid}/resume")
    alice.close()


def paced_text(browser: Any) -> str:
    return str(by_css(browser, ".account-health[data-account='paced']").text)


def test_a_viewer_sees_everything_and_changes_nothing(stack: ApiStack, browser: Any) -> None:
    key = stack.http.post("/v1/keys", json={"name": "vivian", "role": "viewer"}).json()["key"]
    cid = stack.http.post(
        "/v1/campaigns",
        json={"name": "viewer", "accounts": ["backup"], "draft": True, "recipients": [{"to": "wxid_v"}],
              "message": {"kind": "text", "text": "hi"}},
    ).json()["id"]  # fmt: skip
    browser.get(f"{stack.api_url}/console")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{stack.api_url}/console#campaign/{cid}")
    until(lambda: by_css(browser, "#login").is_displayed(), "the login form")
    by_css(browser, "#token").send_keys(key)
    click(browser, "#login-form button")
    until(lambda: "vivian" in by_css(browser, "#me").text, "who is logged in")
    assert "只读" in by_css(browser, "#me").text
    until(lambda: by_css(browser, "button[data-action='start']").is_displayed(), "the draft's buttons")
    start = by_css(browser, "button[data-action='start']")
    assert start.get_attribute("disabled") is not None and "操作员" in start.get_attribute("title")
    assert start.get_attribute("title") == "需要“操作员”角色（当前密钥为“只读”）"  # no stray spaces
    assert by_css(browser, "#stat-rate").text == "–"  # a draft sent nothing: no "0.0"
    assert by_css(browser, "#stat-cancelled").text == "0"
    assert by_css(browser, "#test-submit").get_attribute("disabled") is not None
    # the API refuses it anyway, in both languages (a forced click through the page's own code path)
    answer = browser.execute_async_script(
        "const done = arguments[2]; fetch(arguments[0], {method: 'POST', headers: {Authorization: 'Bearer ' + arguments[1]}})"
        ".then(r => r.json().then(b => done([r.status, b.error.message])))",
        f"/v1/campaigns/{cid}/start",
        key,
    )
    assert answer[0] == 403 and "operator" in answer[1] and "需要“操作员”角色" in answer[1]
    assert stack.http.get(f"/v1/campaigns/{cid}").json()["status"] == "draft"
    shot(browser, "console-viewer")
    open_page(browser, stack, "accounts")
    accounts = len(stack.http.get("/v1/accounts").json()["accounts"])
    until(lambda: len(all_css(browser, "button[data-action='edit-account']")) == accounts, "the accounts")
    assert all(b.get_attribute("disabled") is not None for b in all_css(browser, "button[data-action='edit-account']"))
    browser.execute_script("sessionStorage.setItem('broadcast.token', arguments[0])", API_TOKEN)


def test_contacts_sync_from_the_accounts_page_then_a_campaign_for_ticked_labels(stack: ApiStack, browser: Any) -> None:
    """Last in the module: it adds an account the other pages would count."""
    instance = f"{stack.prefix}-crm"
    stack.add_account("crm", "gewe", instance=instance)
    with httpx.Client(base_url=stack.sim.url) as admin:
        body = {"vendor": "gewe", "instance": instance, "friends": 40, "chatrooms": 2}
        admin.post("/_sim/contacts", json=body).raise_for_status()
    open_page(browser, stack, "accounts")
    browser.execute_script("localStorage.setItem('broadcast.lang', 'zh')")  # whatever an earlier test left
    open_page(browser, stack, "accounts")
    browser.refresh()
    row = "tr[data-account='crm']"
    until(lambda: "未同步" in by_css(browser, f"{row} .contacts").text, "the contacts column")
    click(browser, f"{row} button[data-action='sync-contacts']")
    until(lambda: "已同步" in by_css(browser, f"{row} .contacts").text, "the finished sync", timeout=90)
    assert "40 好友 · 2 群" in by_css(browser, f"{row} .contacts").text
    screenshot(browser, "console", "09-contacts-synced")

    open_page(browser, stack, "new")
    until(lambda: len(all_css(browser, "#c-accounts input[value='crm']")) == 1, "the account choices")
    by_css(browser, "#c-name").send_keys("标签群发 console")
    click(browser, "#c-accounts input[value='crm']")
    click(browser, "#c-src-audience")  # before any text: the audience preview does not need the message
    until(lambda: "将发送给 40 人" in by_css(browser, "#c-audience").text, "the preview without a message")
    empty = {"audience": {"accounts": ["crm"]}, "message": {"kind": "text", "text": ""}}
    previewed = stack.http.post("/v1/audiences/preview", json=empty).json()
    assert (previewed["total"], previewed["message_checked"]) == (40, False), previewed
    type_into(browser, "#c-text", "{code} 你好")  # a placeholder no contact fills: said in Chinese
    until(lambda: "占位符" in by_css(browser, "#c-aud-error").text, "the translated preview error")
    by_css(browser, "#c-text").clear()
    by_css(browser, "#c-text").send_keys("{name} 你好")
    until(lambda: len(all_css(browser, "#c-labels-any input")) == 4, "the account's labels")
    click(browser, "#c-labels-any input[value='VIP']")
    click(browser, "#c-labels-excl input[value='同事']")
    # VIP every 4th friend (10 of 40), but colleagues (every 7th: 28), no groups: 9
    until(lambda: "将发送给 9 人" in by_css(browser, "#c-audience").text, "the resolved count")
    assert (
        "已排除 1 人" in by_css(browser, "#c-audience").text and "通讯录同步于" in by_css(browser, "#c-audience").text
    )
    screenshot(browser, "console", "10-audience-preview")
    click(browser, "#c-draft")
    click(browser, "#c-submit")
    until(lambda: "#campaign/" in browser.current_url, "the campaign page")
    campaign_id = browser.current_url.split("#campaign/")[1]
    created = stack.http.get(f"/v1/campaigns/{campaign_id}").json()
    assert (created["status"], created["total"]) == ("draft", 9)
    assert created["audience"]["selector"]["labels_any"] == ["VIP"]
