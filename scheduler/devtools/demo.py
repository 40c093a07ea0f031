"""``broadcast demo``: one small campaign per message kind through the API, watched until every
delivery has its vendor ids. Talks only HTTP, so it works against any running API."""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

DEMO_ACCOUNTS = ["demo-gewe", "demo-gewe-legacy", "demo-ecloud", "demo-ohwxapi"]
MINI_XML = (
    '<appmsg appid="" sdkver="0"><title>{name}, 今日特价</title><des>百果园+</des><type>33</type>'
    "<sourceusername>gh_690acf47ea05@app</sourceusername><sourcedisplayname>百果园+</sourcedisplayname>"
    "<weappinfo><username><![CDATA[gh_690acf47ea05@app]]></username><appid><![CDATA[wx1f9ea355b47256dd]]></appid>"
    "<type>2</type><version>1</version><pagepath><![CDATA[pages/homeDelivery/index.html]]></pagepath></weappinfo></appmsg>"
)
LINK_XML = (
    '<appmsg appid="" sdkver="0"><title>{name}: 双十一攻略</title><des>点开看看</des><type>5</type>'
    "<url>https://example.com/guide?u={name}</url></appmsg>"
)
MESSAGES: dict[str, dict[str, Any]] = {
    "text": {"kind": "text", "text": "{name} 你好, 周末大促开始了 / the weekend sale has started"},
    "mini": {
        "kind": "miniprogram",
        "app_id": "wx1f9ea355b47256dd",
        "username": "gh_690acf47ea05@app",
        "title": "{name}, 最快29分钟 好吃水果送到家",
        "page_path": "pages/homeDelivery/index.html",
        "cover_url": "https://example.com/cover.jpg",
        "display_name": "百果园+",
        "icon_url": "https://example.com/icon.png",
    },
    "mini-xml": {"kind": "miniprogram", "xml": MINI_XML, "cover_url": "https://example.com/fresh.jpg"},
    "appmsg-link": {"kind": "appmsg", "xml": LINK_XML},
    # a link card every vendor carries (postLink, sendUrl, generated type-5 XML elsewhere), then as the last
    # part of a sequence: the line of text first, the card after the account's gap
    "link": {
        "kind": "link",
        "title": "{name}: 双十一攻略",
        "description": "点开看看",
        "url": "https://example.com/guide",
        "thumb_url": "https://example.com/thumb.jpg",
    },
    "sequence": {
        "kind": "sequence",
        "parts": [
            {"kind": "text", "text": "{name}，双十一攻略来了"},
            {
                "kind": "link",
                "title": "双十一攻略",
                "url": "https://example.com/guide",
                "thumb_url": "https://example.com/thumb.jpg",
            },
        ],
    },
}


def run_demo(
    url: str,
    token: str,
    *,
    say: Callable[[str], None] = print,
    stop: threading.Event | None = None,
    timeout: float = 120,
) -> list[dict[str, Any]]:
    """Send the demo campaigns and print each delivery with its ids; returns the deliveries."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS"):  # `make dev > file`: no 80-column folding
        console.width = 200
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    # one recipient per demo account, so every vendor's protocol carries every kind
    names = ["小王", "小李", "Alice", "Bob"]
    recipients = [
        {"to": f"wxid_demo_{i:02d}", "account": account, "vars": {"name": name}}
        for i, (account, name) in enumerate(zip(DEMO_ACCOUNTS, names, strict=True))
    ]
    campaigns: dict[str, str] = {}
    for kind, message in MESSAGES.items():
        answer = client.post(
            "/v1/campaigns",
            json={"name": f"demo {kind}", "accounts": DEMO_ACCOUNTS, "recipients": recipients, "message": message},
        )
        answer.raise_for_status()
        campaigns[kind] = answer.json()["id"]
    say(
        f"demo: {len(campaigns)} campaigns × {len(recipients)} recipients submitted"
        f" / 已提交 {len(campaigns)} 个群发 × {len(recipients)} 个接收人"
    )
    total = len(campaigns) * len(recipients)
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("sending / 发送中"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
        console=console, transient=False,
    ) as progress:  # fmt: skip
        task = progress.add_task("demo", total=total, rate="")
        started = time.monotonic()
        while True:
            states = [client.get(f"/v1/campaigns/{cid}").json() for cid in campaigns.values()]
            done = sum(sum(s["counts"][k] for k in ("sent", "dead", "cancelled", "skipped")) for s in states)
            rate = done / max(0.001, time.monotonic() - started)
            progress.update(task, completed=done, rate=f"{rate:.1f}/s")
            if all(s["finished"] for s in states) or (stop and stop.is_set()) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    table = Table(title="demo deliveries / 发送结果")
    for column in ("kind / 类型", "vendor / 服务商", "to / 接收人", "status / 状态", "new_msg_id", "create_time"):
        # ids are never cut (they are exact, and copied into revokes); the other columns may fold. The ids keep
        # their field names: that is how the API and the CLI's --json spell them
        ids = column in ("new_msg_id", "create_time")
        table.add_column(column, no_wrap=ids, min_width=19 if column == "new_msg_id" else None, overflow="fold")
    deliveries: list[dict[str, Any]] = []
    for kind, cid in campaigns.items():
        for d in client.get(f"/v1/campaigns/{cid}/deliveries").json()["deliveries"]:
            result = d.get("result") or {}
            deliveries.append({**d, "kind": kind})
            status = d["status"] + (f" ({d['skip_reason']})" if d.get("skip_reason") else "")
            table.add_row(
                kind, d["account"].removeprefix("demo-"), d["to"], status, result.get("new_msg_id") or "-",
                result.get("create_time") or "-",
            )  # fmt: skip
    console.print(table)
    sent = sum(1 for d in deliveries if d["status"] == "sent")
    say(
        f"demo finished: {sent}/{total} sent, every id exact (64-bit, as strings)"
        f" / 演示完成：已发送 {sent}/{total}，每个 id 都是精确值（64 位，以字符串保存）"
    )
    skipped = collections.Counter(d.get("skip_reason") or "?" for d in deliveries if d["status"] == "skipped")
    if skipped:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        say(
            f"skipped, not sent: {why} (suppression list or frequency cap: `broadcast suppressions list`,"
            f" an account's --recipient-cap) / 跳过未发: {why}（退订名单或频率上限）"
        )
    return deliveries
