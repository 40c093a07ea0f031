"""Vendor callbacks in the simulator: registering a URL, and posting callbacks to it on demand.

- GeWe ``/login/setCallback {token, callbackUrl}`` and E云 ``/setHttpCallbackUrl {httpUrl, type}`` remember
  the URL per token (docs/vendors.md, "Callbacks").
- ``POST /_sim/callbacks`` makes the simulator post a callback as the vendor would: a friend's private text
  (``event`` ``text``, e.g. 退订), a removed contact (``contact_removed``, GeWe DelContacts) or an offline
  notice (``offline``, GeWe Offline). Body: ``{"vendor": "gewe"|"ecloud", "instance", "event", "from",
  "text", "times": 1, "msg_id", "url"}``; ``url`` defaults to the one the account's token registered.
  ``times`` > 1 repeats the very same body (vendors repeat deliveries). Answers the HTTP statuses received.

Shapes follow GeWe's 回调消息详解 (``Wangnov/gewe-rs`` ``docs/GeweAPI-Official/消息模块/回调消息详解.md``) and
E云's private text (``messageType`` 60001, ``data.fromUser/toUser/content/newMsgId/self``).
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from simulator.protocols import JSONResponse, read_json_object
from simulator.state import SimState

_ids = itertools.count(7_700_000_000_000_000_000)


class Callbacks:
    """The callback URLs registered per (vendor, token), and the admin endpoint that posts callbacks."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._urls: dict[tuple[str, str], str] = {}

    def url_for(self, vendor: str, instance: str) -> str | None:
        account = self.state.account(vendor, instance)
        if account is None:
            return None
        with self._lock:
            return self._urls.get((vendor, account.token))

    async def gewe_set_callback(self, request: Request) -> Response:
        """POST /login/setCallback {token, callbackUrl}."""
        token = request.headers.get("X-GEWE-TOKEN") or ""
        body = await read_json_object(request)
        if not self.state.token_known("gewe", token) or body is None or body.get("token") != token:
            return JSONResponse({"ret": 500, "msg": f"HTTP HEADER: X-GEWE-TOKEN={token} 不可用或已过期"})
        url = body.get("callbackUrl")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return JSONResponse({"ret": 500, "msg": "callbackUrl 参数错误", "data": None})
        with self._lock:
            self._urls[("gewe", token)] = url
        return JSONResponse({"ret": 200, "msg": "操作成功", "data": None})

    async def ecloud_set_callback(self, request: Request) -> Response:
        """POST /setHttpCallbackUrl {httpUrl, type}."""
        token = request.headers.get("Authorization") or ""
        body = await read_json_object(request)
        if not self.state.token_known("ecloud", token) or body is None:
            return JSONResponse({"code": "1001", "message": "授权失败", "data": None})
        url = body.get("httpUrl")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return JSONResponse({"code": "1001", "message": "httpUrl 参数错误", "data": None})
        with self._lock:
            self._urls[("ecloud", token)] = url
        return JSONResponse({"code": "1000", "message": "设置成功", "data": None})

    async def post_callbacks(self, request: Request) -> Response:
        """POST /_sim/callbacks: post a vendor callback to a URL (see the module docstring)."""
        body = await read_json_object(request)
        if body is None:
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        vendor, instance = str(body.get("vendor", "gewe")), str(body.get("instance", ""))
        event, sender = str(body.get("event", "text")), str(body.get("from", ""))
        times = body.get("times", 1)
        if vendor not in ("gewe", "ecloud") or event not in ("text", "contact_removed", "offline"):
            return JSONResponse({"error": "vendor: gewe|ecloud; event: text|contact_removed|offline"}, status_code=400)
        if not isinstance(times, int) or not 1 <= times <= 20:
            return JSONResponse({"error": "times: 1..20"}, status_code=400)
        if vendor == "ecloud" and event != "text":
            return JSONResponse({"error": "ecloud: only text callbacks are simulated"}, status_code=400)
        if event != "offline" and not sender:
            return JSONResponse({"error": "from: the wxid of the friend"}, status_code=400)
        url = body.get("url") or self.url_for(vendor, instance)
        if not isinstance(url, str) or not url:
            return JSONResponse({"error": "no url given and none registered for this account"}, status_code=400)
        msg_id = body.get("msg_id") or next(_ids)
        payload = _payload(vendor, instance, event, sender, str(body.get("text", "")), int(msg_id))
        statuses: list[int] = []
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(times):
                try:
                    statuses.append((await client.post(url, json=payload)).status_code)
                except httpx.HTTPError:
                    statuses.append(0)
        return JSONResponse({"posted": times, "statuses": statuses, "msg_id": str(msg_id)})


def _payload(vendor: str, instance: str, event: str, sender: str, text: str, msg_id: int) -> dict[str, Any]:
    own = f"wxid_sim_{instance}"
    if vendor == "ecloud":
        data = {"wId": instance, "fromUser": sender, "toUser": own, "content": text, "newMsgId": msg_id,
                "msgId": msg_id % 2_000_000_000, "self": False, "timestamp": int(time.time())}  # fmt: skip
        return {"wcId": own, "account": own, "messageType": "60001", "data": data}
    if event == "offline":
        return {"TypeName": "Offline", "Appid": instance, "Wxid": own}
    if event == "contact_removed":
        return {"TypeName": "DelContacts", "Appid": instance, "Wxid": own,
                "Data": {"UserName": {"string": sender}, "DeleteContactScen": 0}}  # fmt: skip
    data = {
        "MsgId": msg_id % 2_000_000_000,
        "FromUserName": {"string": sender},
        "ToUserName": {"string": own},
        "MsgType": 1,
        "Content": {"string": text},
        "CreateTime": int(time.time()),
        "NewMsgId": msg_id,
    }
    return {"TypeName": "AddMsg", "Appid": instance, "Wxid": own, "Data": data}
