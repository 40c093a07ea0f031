"""The four vendor dialects: request validation, fault injection and the vendors' own envelopes.

Every handler follows the order a real vendor does: authenticate (token first, then the account id),
validate the body, and only then consult the fault rules; so a bad token or a malformed request is
rejected the same way whatever faults are installed. A send is recorded only when it "went out":
after the faults that fail before sending, before the ones (`timeout_after`) that fail after.

Vendors answer HTTP 200 for nearly every failure and put the verdict in the JSON envelope; each
`Dialect` knows how its vendor spells an error. Only the transport faults (`http_500` = 502, `http_503`, `http_429`)
answer with a non-200 status and a non-JSON body.

The handlers are deliberately plain (no validation library, orjson when available, no logging) so a
single core serves thousands of requests a second.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from starlette.requests import Request
from starlette.responses import Response

from simulator.state import ACCOUNT_FAULT_KINDS, FAULT_KINDS, Fault, JSONDict, SendRecord, SimAccount, SimState

try:
    import orjson

    def dumps(obj: Any) -> bytes:
        """Serialise to compact UTF-8 JSON (ints stay exact)."""
        return orjson.dumps(obj)

    def loads(data: bytes) -> Any:
        """Parse JSON; raises ValueError on bad input."""
        return orjson.loads(data)

except ImportError:  # pragma: no cover - orjson is optional
    import json

    def dumps(obj: Any) -> bytes:
        """Serialise to compact UTF-8 JSON (ints stay exact)."""
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

    def loads(data: bytes) -> Any:
        """Parse JSON; raises ValueError on bad input."""
        return json.loads(data)


class JSONResponse(Response):
    """A JSON response rendered with `dumps` (orjson when installed)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Encode the content."""
        return dumps(content)


def bad_gateway() -> Response:
    """What an nginx in front of a dead vendor backend answers."""
    return Response(b"<html>Bad Gateway</html>", status_code=502, media_type="text/html")


def service_unavailable() -> Response:
    """What a proxy answers when it cannot reach the vendor at all: the request was never passed on."""
    return Response(b"<html>503 Service Unavailable</html>", status_code=503, media_type="text/html")


def too_many_requests() -> Response:
    """A bare HTTP 429 from the vendor's gateway."""
    return Response(b"Too Many Requests", status_code=429, media_type="text/plain", headers={"Retry-After": "1"})


async def read_json_object(request: Request) -> JSONDict | None:
    """The request body as a JSON object, or None when it is not one."""
    raw = await request.body()
    try:
        data = loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# -- error texts -------------------------------------------------------------------------------
# Sources (docs/vendors.md has the full table): the steering vendors.md error list for 设备不存在, 微信已离线
# (also Devo919/Gewechat#36), 发送频率过快 and a not-a-friend answer. The vendors document no text for a
# failed revoke or a malformed parameter: 撤回失败 and the 参数错误 texts are the simulator's own wording,
# only ever used for requests the vendor would also refuse.

TEXT_DEVICE: Final = "设备不存在"
TEXT_REVOKE_FAILED: Final = "撤回失败"
TEXT_OFFLINE: Final = "微信已离线"
TEXT_NOT_FRIEND: Final = "对方不是你的好友"
#: Not a friend yet, though it reads like throttling (youfou/wxpy#21; 接收 in the steering table).
TEXT_FRIEND_PENDING: Final = "发送消息过于频繁，等待对方接受你的好友请求后再发"
TEXT_THROTTLED: Final = "发送频率过快"
TEXT_BAD_BODY: Final = "参数错误: 请求体必须是 JSON 对象"
#: GeWe's mini-program failure; with `data.code "-2"` it is tied to the cover image (Devo919/Gewechat#176,
#: #182: the maintainer answers "cover under 50 KB"), not to a daily cap.
TEXT_MINI_APP_FAILED: Final = "发送小程序失败"
#: WeChat's own words once an account hit the mini-program cap (wechaty/python-wechaty#133).
TEXT_TOO_MANY_ATTEMPTS: Final = "Too many attempts. Try again later"

Reason = Literal[
    "param",
    "token",
    "device",
    "revoke",
    "throttled",
    "offline",
    "not_friend",
    "friend_pending",
    "daily_cap",
    "cover",
    "generic",
]


def missing_text(name: str) -> str:
    """The vendors' message for a missing or empty required field."""
    return f"参数错误: {name} 不能为空"


def check_strings(body: JSONDict, names: tuple[str, ...]) -> str | None:
    """Error text for the first required field that is not a non-empty string, else None."""
    for name in names:
        value = body.get(name)
        if value is None or value == "":
            return missing_text(name)
        if not isinstance(value, str):
            return f"参数错误: {name} 类型错误"
    return None


def check_optional_string(body: JSONDict, name: str) -> str | None:
    """Error text when an optional field is present but not a string."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        return f"参数错误: {name} 类型错误"
    return None


def check_xml(body: JSONDict, name: str, prefix: str) -> str | None:
    """Error text when an XML field does not start with `prefix` (after leading whitespace)."""
    value = body[name]
    if isinstance(value, str) and value.lstrip().startswith(prefix):
        return None
    return f"参数错误: {name} 必须以 {prefix} 开头"


_XML_DECLARATION: Final = re.compile(r"^\s*<\?xml[^>]*\?>")


def check_msg_document(body: JSONDict, name: str) -> str | None:
    """Error text unless the field is a whole `<msg>` callback document holding an `<appmsg>`.

    The vendor's own example (GeweAPI-Official/消息模块/转发小程序.md) starts with `<?xml version="1.0"?>`.
    """
    value = body[name]
    rest = _XML_DECLARATION.sub("", value, count=1).lstrip() if isinstance(value, str) else ""
    if rest.startswith("<msg") and "<appmsg" in rest and rest.rstrip().endswith("</msg>"):
        return None
    return f"参数错误: {name} 必须是完整的 <msg> 文档"


def parse_id(body: JSONDict, name: str) -> int | str:
    """An id field given as an integer or a decimal string; returns the int or an error text."""
    value = body.get(name)
    if value is None or value == "":
        return missing_text(name)
    if isinstance(value, bool):
        return f"参数错误: {name} 格式错误"
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdecimal():
        return int(value)
    return f"参数错误: {name} 格式错误"


_APPMSG_TYPE: Final = re.compile(r"<type>\s*(\d+)\s*</type>")


def appmsg_kind(xml: str) -> str:
    """`miniapp` when the appmsg's first `<type>` is a mini-program (33/36), else `app`."""
    match = _APPMSG_TYPE.search(xml)
    return "miniapp" if match is not None and match.group(1) in ("33", "36") else "app"


# -- dialects ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one vendor authenticates and spells its answers."""

    vendor: str
    instance_field: str  # the body field naming the account ("" for ohwxapi: a query parameter)
    token_header: str  # lower-case header carrying the token ("" for ohwxapi: Bearer, optional)
    token_text: str  # the message for an invalid or expired token
    throttled_text: str

    def error(self, reason: Reason, text: str = "") -> Response:
        """The vendor's failure envelope for `reason` (`text`: the message for `param`, the token for `token`)."""
        raise NotImplementedError

    def fault_reason_text(self, reason: Reason, text: str) -> str:
        """The message text for a reason."""
        if reason == "token":
            return self.token_text
        if reason == "device":
            return TEXT_DEVICE
        if reason == "revoke":
            return TEXT_REVOKE_FAILED
        if reason == "throttled":
            return self.throttled_text
        if reason == "offline":
            return TEXT_OFFLINE
        if reason == "not_friend":
            return TEXT_NOT_FRIEND
        if reason == "friend_pending":
            return TEXT_FRIEND_PENDING
        if reason == "daily_cap":
            return TEXT_TOO_MANY_ATTEMPTS
        if reason == "cover":
            return TEXT_MINI_APP_FAILED
        return text


@dataclass(frozen=True, slots=True)
class GeweDialect(Dialect):
    """GeWe v2: `ret` 200 on success, 500 with `msg` (and sometimes `data.msg`) on failure."""

    def error(self, reason: Reason, text: str = "") -> Response:
        """GeWe failure envelope.

        The token error echoes the header's value and has no `data` (Devo919/Gewechat#263, #234); a missing
        header is `header:X-GEWE-TOKEN 不可为空` (hanfangyuan4396/dify-on-wechat#340). A mini-program
        refused for its cover is `发送小程序失败` with `data: {"code": "-2", "msg": null}` (Devo919/Gewechat#176,
        #182); the daily cap is WeChat's "Too many attempts. Try again later" (wechaty/python-wechaty#133).
        """
        if reason == "token":
            msg = f"HTTP HEADER: X-GEWE-TOKEN={text} 不可用或已过期" if text else "header:X-GEWE-TOKEN 不可为空"
            return JSONResponse({"ret": 500, "msg": msg})
        if reason == "cover":
            return JSONResponse({"ret": 500, "msg": TEXT_MINI_APP_FAILED, "data": {"code": "-2", "msg": None}})
        if reason == "daily_cap":
            return JSONResponse({"ret": 500, "msg": TEXT_TOO_MANY_ATTEMPTS, "data": None})
        if reason in ("offline", "not_friend", "friend_pending", "throttled"):
            detail = {"code": "-1", "msg": self.fault_reason_text(reason, text)}
            return JSONResponse({"ret": 500, "msg": "发送消息失败", "data": detail})
        if reason == "generic":
            return JSONResponse({"ret": 500, "msg": "发送消息失败", "data": None})
        if reason == "revoke":
            return JSONResponse({"ret": 500, "msg": TEXT_REVOKE_FAILED})
        return JSONResponse({"ret": 500, "msg": self.fault_reason_text(reason, text), "data": None})


@dataclass(frozen=True, slots=True)
class LegacyDialect(Dialect):
    """GeWe legacy: `ret` 0 on success, `{"ret": -1, "msg_err": ...}` on failure."""

    def error(self, reason: Reason, text: str = "") -> Response:
        """Legacy failure envelope."""
        message = "失败" if reason == "generic" else self.fault_reason_text(reason, text)
        return JSONResponse({"ret": -1, "msg_err": message})


@dataclass(frozen=True, slots=True)
class EcloudDialect(Dialect):
    """E云管家: string `code` "1000" on success, "1001" on failure."""

    def error(self, reason: Reason, text: str = "") -> Response:
        """E云 failure envelope."""
        message = "失败" if reason == "generic" else self.fault_reason_text(reason, text)
        return JSONResponse({"code": "1001", "message": message, "data": None})


@dataclass(frozen=True, slots=True)
class OhwxDialect(Dialect):
    """OHwxapi MagicCgi: `CgiBaseResponse.Ret` 0 on success, -1 with `ErrMsg` on failure."""

    def error(self, reason: Reason, text: str = "") -> Response:
        """MagicCgi failure envelope. "Too fast" is `Ret` 241 with an empty `ErrMsg`, as SZUEA/AJBot
        (`EAbotoy`) reads the gateway's answers; other refusals carry `Ret` -1 and a text."""
        if reason == "throttled":
            return JSONResponse({"CgiBaseResponse": {"ErrMsg": "", "Ret": 241}, "ResponseData": None})
        message = "" if reason == "generic" else self.fault_reason_text(reason, text)
        return JSONResponse({"CgiBaseResponse": {"ErrMsg": message, "Ret": -1}, "ResponseData": None})


GEWE: Final = GeweDialect("gewe", "appId", "x-gewe-token", "X-GEWE-TOKEN 不可用或已过期", TEXT_THROTTLED)
LEGACY: Final = LegacyDialect("gewe-legacy", "appid", "x-gewe-token", "X-GEWE-TOKEN 不可用或已过期", TEXT_THROTTLED)
ECLOUD: Final = EcloudDialect("ecloud", "wId", "authorization", "Authorization 不可用或已过期", TEXT_THROTTLED)
OHWX: Final = OhwxDialect("ohwxapi", "", "", "token 不可用或已过期", "发送消息过于频繁")

#: Fault kinds answered with the vendor's error envelope, mapped to the error reason.
_ENVELOPE_FAULTS: Final[dict[str, Reason]] = {
    "throttled": "throttled",
    "offline": "offline",
    "token_invalid": "token",
    "not_friend": "not_friend",
    "generic": "generic",
    "offline_hidden": "offline",
    "daily_cap": "daily_cap",
    "cover_refused": "cover",
    "friend_pending": "friend_pending",
}

#: Kinds a send that is not a mini-program can hit: the daily cap and the cover refusal only hit mini-programs.
_NOT_MINIAPP_FAULTS: Final = FAULT_KINDS - {"daily_cap", "cover_refused"}
#: Kinds of send whose media the vendor fetches by URL before answering (the configurable media time).
_MEDIA_KINDS: Final = frozenset({"image", "file"})


@dataclass(frozen=True, slots=True)
class Send:
    """A validated send, ready for fault injection and recording."""

    account: SimAccount
    endpoint: str
    to: str
    kind: str
    body: JSONDict
    msg_type: int  # the type the vendor answers with
    msg_id: Literal["zero", "random", "none"] = "random"
    client_msg_id: bool = False
    with_ids: bool = True  # False: the vendor answers no ids (E云 /sendApp), record none


Success = Callable[[SendRecord, Send], Response]


class Handlers:
    """The vendor endpoints, bound to one `SimState`."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    # -- shared machinery -----------------------------------------------------------------------

    def record(self, send: Send, received_at: float) -> SendRecord:
        """Record an accepted send with fresh ids shaped like the vendor's."""
        st = self.state
        msg_id: int | None = None
        new_msg_id: int | None = None
        client_msg_id: int | None = None
        create_time: int | None = None
        if send.with_ids:
            if send.msg_id == "zero":
                msg_id = 0
            elif send.msg_id == "random":
                msg_id = st.msg_id()
            new_msg_id = st.new_msg_id()
            if send.client_msg_id:
                client_msg_id = st.client_msg_id()
            # GeWe's postImage answers createTime 0 (its doc's example): the record says what the vendor said
            create_time = 0 if send.endpoint == "postImage" else int(time.time())
        return st.record_send(
            vendor=send.account.vendor,
            instance=send.account.instance,
            endpoint=send.endpoint,
            to=send.to,
            kind=send.kind,
            body=send.body,
            msg_id=msg_id,
            new_msg_id=new_msg_id,
            client_msg_id=client_msg_id,
            create_time=create_time,
            received_at=received_at,
        )

    async def deliver(self, dialect: Dialect, send: Send, received_at: float, ok: Success) -> Response:
        """Apply at most one fault to a validated send, record it if it went out, and answer."""
        await self.vendor_time()
        if send.kind in _MEDIA_KINDS:
            fetch = self.state.draw_media_latency()
            if fetch > 0:
                await asyncio.sleep(fetch)
        kinds = None if send.kind == "miniapp" else _NOT_MINIAPP_FAULTS
        fault = self.state.take_fault(dialect.vendor, send.account.instance, send.to, kinds)
        if fault is None:
            return ok(self.record(send, received_at), send)
        kind = fault.kind
        if kind == "http_500":
            return bad_gateway()
        if kind == "http_503":
            return service_unavailable()
        if kind == "http_429":
            return too_many_requests()
        if kind == "slow":
            await asyncio.sleep(fault.delay)
            return ok(self.record(send, received_at), send)
        if kind == "timeout_before":
            await asyncio.sleep(fault.delay)
            return dialect.error("generic")
        if kind == "timeout_after":
            record = self.record(send, received_at)
            await asyncio.sleep(fault.delay)
            return ok(record, send)
        return dialect.error(_ENVELOPE_FAULTS[kind], send.account.token)

    async def vendor_time(self) -> None:
        """Hold the answer for the configured latency; asyncio.sleep, so other requests proceed meanwhile."""
        delay = self.state.draw_latency()
        if delay > 0:
            await asyncio.sleep(delay)

    def account_fault(self, account: SimAccount, to: str | None) -> Fault | None:
        """The account-level fault (offline / token_invalid) hitting a revoke or online check."""
        return self.state.take_fault(account.vendor, account.instance, to, ACCOUNT_FAULT_KINDS)

    async def authenticate(
        self, dialect: Dialect, request: Request, fields: tuple[str, ...]
    ) -> tuple[SimAccount, JSONDict] | Response:
        """Token, then body and required string fields, then the account (GeWe, legacy, E云)."""
        token = request.headers.get(dialect.token_header)
        if not self.state.token_known(dialect.vendor, token):
            return dialect.error("token", token or "")
        body = await read_json_object(request)
        if body is None:
            return dialect.error("param", TEXT_BAD_BODY)
        problem = check_strings(body, fields)
        if problem is not None:
            return dialect.error("param", problem)
        account = self.state.account(dialect.vendor, body[dialect.instance_field])
        if account is None or account.token != token:
            return dialect.error("device")
        return account, body

    # -- GeWe v2 --------------------------------------------------------------------------------

    @staticmethod
    def gewe_ok(record: SendRecord, send: Send) -> Response:
        """GeWe send success envelope."""
        data = {
            "toWxid": record.to,
            "createTime": record.create_time,
            "msgId": record.msg_id,
            "newMsgId": record.new_msg_id,
            "type": send.msg_type,
        }
        return JSONResponse({"ret": 200, "msg": "操作成功", "data": data})

    async def gewe_post_text(self, request: Request) -> Response:
        """POST /message/postText."""
        received_at = time.time()
        auth = await self.authenticate(GEWE, request, ("appId", "toWxid", "content"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        problem = check_optional_string(body, "ats")
        if problem is not None:
            return GEWE.error("param", problem)
        send = Send(account, "postText", body["toWxid"], "text", body, 1, msg_id="zero")
        return await self.deliver(GEWE, send, received_at, self.gewe_ok)

    async def gewe_post_app_msg(self, request: Request) -> Response:
        """POST /message/postAppMsg."""
        received_at = time.time()
        auth = await self.authenticate(GEWE, request, ("appId", "toWxid", "appmsg"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        problem = check_xml(body, "appmsg", "<appmsg")
        if problem is not None:
            return GEWE.error("param", problem)
        # the documented answer's `type` is 0 (GeweAPI-Official/消息模块/发送appmsg消息.md)
        send = Send(account, "postAppMsg", body["toWxid"], appmsg_kind(body["appmsg"]), body, 0)
        return await self.deliver(GEWE, send, received_at, self.gewe_ok)

    async def gewe_post_mini_app(self, request: Request) -> Response:
        """POST /message/postMiniApp (structured mini-program card)."""
        received_at = time.time()
        fields = ("appId", "toWxid", "miniAppId", "displayName", "pagePath", "coverImgUrl", "title", "userName")
        auth = await self.authenticate(GEWE, request, fields)
        if isinstance(auth, Response):
            return auth
        account, body = auth
        send = Send(account, "postMiniApp", body["toWxid"], "miniapp", body, 33)
        return await self.deliver(GEWE, send, received_at, self.gewe_ok)

    async def gewe_forward_mini_app(self, request: Request) -> Response:
        """POST /message/forwardMiniApp (the whole callback `<msg>` document)."""
        received_at = time.time()
        auth = await self.authenticate(GEWE, request, ("appId", "toWxid", "xml", "coverImgUrl"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        problem = check_msg_document(body, "xml")
        if problem is not None:
            return GEWE.error("param", problem)
        send = Send(account, "forwardMiniApp", body["toWxid"], "miniapp", body, 33)
        return await self.deliver(GEWE, send, received_at, self.gewe_ok)

    @staticmethod
    def gewe_image_ok(record: SendRecord, send: Send) -> Response:
        """postImage success: the doc's example answers ``createTime`` 0 and ``type`` null, with the CDN facts
        a later forwardImage needs (GeweAPI-Official/消息模块/发送图片消息.md)."""
        seed = record.new_msg_id or 0
        data = {
            "toWxid": record.to,
            "createTime": 0,
            "msgId": record.msg_id,
            "newMsgId": record.new_msg_id,
            "type": None,
            "aesKey": f"{seed:032x}"[-32:],
            "fileId": f"3052020100044b3049020100{seed:040x}",
            "length": 1096,
            "width": 400,
            "height": 400,
            "md5": f"{seed * 7919:032x}"[-32:],
        }
        return JSONResponse({"ret": 200, "msg": "操作成功", "data": data})

    async def gewe_post_image(self, request: Request) -> Response:
        """POST /message/postImage {appId, toWxid, imgUrl} (发送图片消息.md)."""
        received_at = time.time()
        auth = await self.authenticate(GEWE, request, ("appId", "toWxid", "imgUrl"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        send = Send(account, "postImage", body["toWxid"], "image", body, 3)
        return await self.deliver(GEWE, send, received_at, self.gewe_image_ok)

    async def gewe_post_file(self, request: Request) -> Response:
        """POST /message/postFile {appId, toWxid, fileUrl, fileName} → ``type`` 6 (发送文件消息.md)."""
        received_at = time.time()
        auth = await self.authenticate(GEWE, request, ("appId", "toWxid", "fileUrl", "fileName"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        send = Send(account, "postFile", body["toWxid"], "file", body, 6)
        return await self.deliver(GEWE, send, received_at, self.gewe_ok)

    async def gewe_post_link(self, request: Request) -> Response:
        """POST /message/postLink {appId, toWxid, title, desc, linkUrl, thumbUrl}: the fields public GeWe
        clients send (the mirror has no page for it); answered like the other sends, ``type`` 5 (a link)."""
        received_at = time.time()
        auth = await self.authenticate(GEWE, request, ("appId", "toWxid", "title", "linkUrl", "thumbUrl"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        problem = check_optional_string(body, "desc")
        if problem is not None:
            return GEWE.error("param", problem)
        send = Send(account, "postLink", body["toWxid"], "link", body, 5)
        return await self.deliver(GEWE, send, received_at, self.gewe_ok)

    async def gewe_revoke(self, request: Request) -> Response:
        """POST /message/revokeMsg: ids as the send returned them (strings).

        Like the vendor, a revoke with a wrong or rounded id answers "操作成功" and revokes nothing
        (Devo919/Gewechat#70, #166): only the record's `revoked` flag (and the revoke records) tell. A revoke
        past the window (two minutes after createTime) fails with the simulator's 撤回失败.
        """
        ok = JSONResponse({"ret": 200, "msg": "操作成功"})
        return await self.revoke_recorded(GEWE, "gewe", request, ("appId", "toWxid"), "toWxid", ok, mismatch=ok)

    async def revoke_recorded(
        self,
        dialect: Dialect,
        vendor: str,
        request: Request,
        required: tuple[str, ...],
        to_field: str,
        ok: Response,
        mismatch: Response | None = None,
    ) -> Response:
        """Revoke a recorded send, matching every id exactly (a rounded id is refused, not "revoked")."""
        received_at = time.time()
        auth = await self.authenticate(dialect, request, required)
        if isinstance(auth, Response):
            return auth
        account, body = auth
        ids: list[int] = []
        for name in ("msgId", "newMsgId", "createTime"):
            value = parse_id(body, name)
            if isinstance(value, str):
                return dialect.error("param", value)
            ids.append(value)
        msg_id, new_msg_id, create_time = ids
        fault = self.account_fault(account, body[to_field])
        if fault is not None:
            return dialect.error(_ENVELOPE_FAULTS[fault.kind], account.token)
        await self.vendor_time()
        record = self.state.find_send(vendor, account.instance, new_msg_id)
        if record is not None and (
            record.to != body[to_field] or record.msg_id != msg_id or record.create_time != create_time
        ):
            record = None
        named = {"msgId": msg_id, "newMsgId": new_msg_id, "createTime": create_time}
        outcome = self.state.revoke(
            record, vendor=vendor, instance=account.instance, to=body[to_field], ids=named, received_at=received_at
        )
        if outcome == "revoked":
            return ok
        if outcome == "no_match" and mismatch is not None:
            return mismatch
        return dialect.error("revoke")

    async def gewe_check_online(self, request: Request) -> Response:
        """POST /login/checkOnline: `data` true, or false under an `offline` fault."""
        auth = await self.authenticate(GEWE, request, ("appId",))
        if isinstance(auth, Response):
            return auth
        account, _ = auth
        fault = self.account_fault(account, None)
        if fault is not None and fault.kind == "token_invalid":
            return GEWE.error("token", account.token)
        # an `offline_hidden` fault is not seen here: checkOnline says true while sends fail with 微信已离线
        # (Devo919/Gewechat#36, #224)
        return JSONResponse({"ret": 200, "msg": "操作成功", "data": fault is None})

    # -- GeWe legacy ----------------------------------------------------------------------------

    async def legacy_send_app(self, request: Request) -> Response:
        """POST /api/message/sendapp."""
        received_at = time.time()
        auth = await self.authenticate(LEGACY, request, ("appid", "to_wxid", "xml"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        problem = check_xml(body, "xml", "<appmsg")
        if problem is not None:
            return LEGACY.error("param", problem)
        # seed 004's answer: MsgId 0 and Type 1 (sic, also for sendapp)
        kind = appmsg_kind(body["xml"])
        send = Send(account, "sendapp", body["to_wxid"], kind, body, 1, msg_id="zero", client_msg_id=True)
        return await self.deliver(
            LEGACY, send, received_at, lambda record, s: self.legacy_ok([self.legacy_entry(record, s)])
        )

    @staticmethod
    def legacy_entry(record: SendRecord, send: Send) -> JSONDict:
        """One successful `data.List` entry."""
        return {
            "Ret": 0,
            "ToUsetName": {"string": record.to},
            "MsgId": record.msg_id,
            "NewClientMsgid": record.client_msg_id,
            "Createtime": record.create_time,
            "servertime": int(record.sent_at),
            "Type": send.msg_type,
            "NewMsgId": record.new_msg_id,
        }

    @staticmethod
    def legacy_failed_entry(to: str, text: str) -> JSONDict:
        """One failed `data.List` entry (no ids)."""
        return {
            "Ret": -1,
            "ToUsetName": {"string": to},
            "MsgId": 0,
            "NewClientMsgid": 0,
            "Createtime": 0,
            "servertime": int(time.time()),
            "Type": 1,
            "NewMsgId": 0,
            "ErrMsg": text,
        }

    @staticmethod
    def legacy_ok(entries: list[JSONDict]) -> Response:
        """Legacy success envelope around `data.List`."""
        data = {
            "BaseResponse": {"ret": 0, "errMsg": {}},
            "Count": len(entries),
            "List": entries,
            "NoKnow": 0,
        }
        return JSONResponse({"ret": 0, "msg": "success", "data": data})

    async def legacy_send_msg(self, request: Request) -> Response:
        """POST /api/message/sendmsg: several recipients, each with its own result entry.

        A fault selecting one recipient (`to`) of kind not_friend / throttled / generic, or any
        not_friend fault, fails only that entry; every other fault applies to the whole call.
        """
        received_at = time.time()
        auth = await self.authenticate(LEGACY, request, ("appid",))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        entries = body.get("to_wxid_list")
        if not isinstance(entries, list) or not entries:
            return LEGACY.error("param", missing_text("to_wxid_list"))
        for entry in entries:
            if not isinstance(entry, dict):
                return LEGACY.error("param", "参数错误: to_wxid_list 类型错误")
            problem = check_strings(entry, ("to_wxid", "content"))
            if problem is not None:
                return LEGACY.error("param", problem)
            at = entry.get("at")
            if at is not None and not (isinstance(at, list) and all(isinstance(a, str) for a in at)):
                return LEGACY.error("param", "参数错误: at 类型错误")

        await self.vendor_time()
        state = self.state
        entry_faults: list[Fault | None] = []
        call_fault: Fault | None = None  # ends the call without sending
        delay_fault: Fault | None = None  # slow / timeout_after: still sends
        for entry in entries:
            fault = state.take_fault(LEGACY.vendor, account.instance, entry["to_wxid"], _NOT_MINIAPP_FAULTS)
            if fault is None:
                entry_faults.append(None)
            elif fault.kind == "not_friend" or (fault.kind in ("throttled", "generic") and fault.to):
                entry_faults.append(fault)
            elif fault.kind in ("slow", "timeout_after"):
                delay_fault = delay_fault or fault
                entry_faults.append(None)
            else:
                call_fault = fault
                break

        if call_fault is not None:
            kind = call_fault.kind
            if kind == "http_500":
                return bad_gateway()
            if kind == "http_503":
                return service_unavailable()
            if kind == "http_429":
                return too_many_requests()
            if kind == "timeout_before":
                await asyncio.sleep(call_fault.delay)
                return LEGACY.error("generic")
            return LEGACY.error(_ENVELOPE_FAULTS[kind])
        if delay_fault is not None and delay_fault.kind == "slow":
            await asyncio.sleep(delay_fault.delay)

        results: list[JSONDict] = []
        for entry, fault in zip(entries, entry_faults, strict=True):
            to = entry["to_wxid"]
            if fault is not None:
                text = "失败" if fault.kind == "generic" else LEGACY.fault_reason_text(_ENVELOPE_FAULTS[fault.kind], "")
                results.append(self.legacy_failed_entry(to, text))
                continue
            send = Send(account, "sendmsg", to, "text", body, 1, msg_id="zero", client_msg_id=True)  # seed 004
            results.append(self.legacy_entry(self.record(send, received_at), send))
        if delay_fault is not None and delay_fault.kind == "timeout_after":
            await asyncio.sleep(delay_fault.delay)
        return self.legacy_ok(results)

    # -- E云管家 ---------------------------------------------------------------------------------

    @staticmethod
    def ecloud_ok(message: str) -> Success:
        """E云 success envelope with the ids in `data`."""

        def ok(record: SendRecord, send: Send) -> Response:
            data = {
                "type": send.msg_type,
                "msgId": record.msg_id,
                "newMsgId": record.new_msg_id,
                "createTime": record.create_time,
                "wcId": record.to,
            }
            return JSONResponse({"code": "1000", "message": message, "data": data})

        return ok

    @staticmethod
    def ecloud_ok_no_data(record: SendRecord, send: Send) -> Response:
        """E云 /sendApp success: `data` is null (seed 000)."""
        return JSONResponse({"message": "发送成功", "code": "1000", "data": None})

    async def ecloud_send_text(self, request: Request) -> Response:
        """POST /sendText."""
        received_at = time.time()
        auth = await self.authenticate(ECLOUD, request, ("wId", "wcId", "content"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        problem = check_optional_string(body, "at")
        if problem is not None:
            return ECLOUD.error("param", problem)
        send = Send(account, "sendText", body["wcId"], "text", body, 1)
        return await self.deliver(ECLOUD, send, received_at, self.ecloud_ok("发送成功"))

    async def ecloud_send_app(self, request: Request) -> Response:
        """POST /sendApp (older): success without ids."""
        received_at = time.time()
        auth = await self.authenticate(ECLOUD, request, ("wId", "wcId", "content"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        problem = check_xml(body, "content", "<appmsg")
        if problem is not None:
            return ECLOUD.error("param", problem)
        kind = appmsg_kind(body["content"])
        send = Send(account, "sendApp", body["wcId"], kind, body, 49, msg_id="none", with_ids=False)
        return await self.deliver(ECLOUD, send, received_at, self.ecloud_ok_no_data)

    async def ecloud_send_applet(self, request: Request) -> Response:
        """POST /sendApplet: app / mini-program XML with an optional fresh cover."""
        received_at = time.time()
        auth = await self.authenticate(ECLOUD, request, ("wId", "wcId", "content"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        problem = check_optional_string(body, "imgUrl") or check_xml(body, "content", "<appmsg")
        kind = appmsg_kind(body["content"]) if problem is None else "app"
        if problem is None and kind == "miniapp" and not body.get("imgUrl"):
            problem = missing_text("imgUrl")  # the mini-program cover (seed 001)
        if problem is not None:
            return ECLOUD.error("param", problem)
        send = Send(account, "sendApplet", body["wcId"], kind, body, 0)
        return await self.deliver(ECLOUD, send, received_at, self.ecloud_ok("发送小程序成功"))

    async def ecloud_send_applets(self, request: Request) -> Response:
        """POST /sendApplets: structured mini-program card."""
        received_at = time.time()
        # iconUrl is marked required by the vendor's doc (wkteam.cn 发送小程序; issue 20's reading)
        fields = ("wId", "wcId", "displayName", "iconUrl", "appId", "pagePath", "thumbUrl", "title", "userName")
        auth = await self.authenticate(ECLOUD, request, fields)
        if isinstance(auth, Response):
            return auth
        account, body = auth
        send = Send(account, "sendApplets", body["wcId"], "miniapp", body, 33)
        return await self.deliver(ECLOUD, send, received_at, self.ecloud_ok("发送成功"))

    async def ecloud_send_image(self, request: Request) -> Response:
        """POST /sendImage2 {wId, wcId, content: image URL} (WkApi 发送图片消息; fangchaogang/webot-sdk)."""
        received_at = time.time()
        auth = await self.authenticate(ECLOUD, request, ("wId", "wcId", "content"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        send = Send(account, "sendImage2", body["wcId"], "image", body, 3)
        return await self.deliver(ECLOUD, send, received_at, self.ecloud_ok("发送成功"))

    async def ecloud_send_file(self, request: Request) -> Response:
        """POST /sendFile {wId, wcId, path, fileName} (WkApi 发送文件消息)."""
        received_at = time.time()
        auth = await self.authenticate(ECLOUD, request, ("wId", "wcId", "path", "fileName"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        send = Send(account, "sendFile", body["wcId"], "file", body, 6)
        return await self.deliver(ECLOUD, send, received_at, self.ecloud_ok("成功"))

    async def ecloud_send_url(self, request: Request) -> Response:
        """POST /sendUrl {wId, wcId, title, url, description, thumbUrl} (WkApi 发送链接消息; its example sends
        an empty description, so that one may be empty)."""
        received_at = time.time()
        auth = await self.authenticate(ECLOUD, request, ("wId", "wcId", "title", "url", "thumbUrl"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        problem = None if isinstance(body.get("description"), str) else missing_text("description")
        if problem is not None:
            return ECLOUD.error("param", problem)
        send = Send(account, "sendUrl", body["wcId"], "link", body, 5)
        return await self.deliver(ECLOUD, send, received_at, self.ecloud_ok("发送成功"))

    async def ecloud_revoke(self, request: Request) -> Response:
        """POST /revokeMsg: integer ids, must match a recorded send."""
        ok = JSONResponse({"code": "1000", "message": "撤回成功", "data": None})
        return await self.revoke_recorded(ECLOUD, "ecloud", request, ("wId", "wcId"), "wcId", ok)

    async def ecloud_is_online(self, request: Request) -> Response:
        """POST /isOnline: code "1000" with `data.isOnline` true when online; offline answers the failure code
        of the page's table ("1000成功（在线），10001失败（离线）", the envelope's 1001 elsewhere) — its example
        also shows `isOnline: false` under 1000, which the backend reads the same.

        2048537793/WkApi `api-wen-dang/wei-xin-guan-li/cha-xun-wei-xin-shi-fou-zai-xian.md`.
        """
        auth = await self.authenticate(ECLOUD, request, ("wId",))
        if isinstance(auth, Response):
            return auth
        account, _ = auth
        fault = self.account_fault(account, None)
        if fault is not None and fault.kind == "token_invalid":
            return ECLOUD.error("token", account.token)
        if fault is not None:
            return JSONResponse({"message": "失败", "code": "1001", "data": None})
        return JSONResponse({"message": "成功", "code": "1000", "data": {"isOnline": True}})

    # -- OHwxapi MagicCgi -----------------------------------------------------------------------

    @staticmethod
    def ohwx_ok(record: SendRecord, send: Send) -> Response:
        """MagicCgi send success: only `NewMsgId` and `ClientMsgId` (a string), as seed 002 documents."""
        data = {"NewMsgId": record.new_msg_id, "ClientMsgId": str(record.client_msg_id)}
        return JSONResponse({"CgiBaseResponse": {"ErrMsg": "", "Ret": 0}, "ResponseData": data})

    async def ohwx_magic_cgi(self, request: Request) -> Response:
        """POST /v2/api?funcname=MagicCgi&timeout=N&wxid=W with `{CgiCmd, CgiRequest}`."""
        received_at = time.time()
        query = request.query_params
        for name in ("funcname", "timeout", "wxid"):
            if not query.get(name):
                return OHWX.error("param", f"参数错误: missing query parameter {name}")
        if query["funcname"] != "MagicCgi":
            return OHWX.error("param", f"参数错误: unknown funcname {query['funcname']}")
        account = self.state.account("ohwxapi", query["wxid"])
        if account is None:
            return OHWX.error("device")
        if account.token and request.headers.get("authorization") != f"Bearer {account.token}":
            return OHWX.error("token", request.headers.get("authorization") or "")
        body = await read_json_object(request)
        if body is None:
            return OHWX.error("param", TEXT_BAD_BODY)
        cmd = body.get("CgiCmd")
        if isinstance(cmd, bool) or not isinstance(cmd, int):
            return OHWX.error("param", missing_text("CgiCmd"))
        cgi = body.get("CgiRequest")
        if not isinstance(cgi, dict):
            return OHWX.error("param", missing_text("CgiRequest"))
        if cmd == 522:
            problem = check_strings(cgi, ("ToUserName", "Content")) or check_optional_string(cgi, "AtUsers")
            problem = problem or self.ohwx_check_type(cgi, 1)
            if problem is not None:
                return OHWX.error("param", problem)
            send = Send(account, "CgiCmd522", cgi["ToUserName"], "text", body, 1, msg_id="none", client_msg_id=True)
            return await self.deliver(OHWX, send, received_at, self.ohwx_ok)
        if cmd == 222:
            problem = check_strings(cgi, ("ToUserName", "AppMsgXml"))
            problem = problem or check_xml(cgi, "AppMsgXml", "<appmsg") or self.ohwx_check_type(cgi, 49)
            if problem is not None:
                return OHWX.error("param", problem)
            kind = appmsg_kind(cgi["AppMsgXml"])
            send = Send(account, "CgiCmd222", cgi["ToUserName"], kind, body, 49, msg_id="none", client_msg_id=True)
            return await self.deliver(OHWX, send, received_at, self.ohwx_ok)
        if cmd == 594:
            return await self.ohwx_revoke(account, cgi, received_at)
        return OHWX.error("param", f"参数错误: unsupported CgiCmd {cmd}")

    @staticmethod
    def ohwx_check_type(cgi: JSONDict, expected: int) -> str | None:
        """Error text unless `MsgType` is `expected`."""
        value = cgi.get("MsgType")
        if value is None:
            return missing_text("MsgType")
        if isinstance(value, bool) or value != expected:
            return f"参数错误: MsgType 必须为 {expected}"
        return None

    async def ohwx_revoke(self, account: SimAccount, cgi: JSONDict, received_at: float) -> Response:
        """CgiCmd 594, undocumented by the vendor: the fields SZUEA/AJBot `EAbotoy/action.py` sends.

        `{OpCode: 0, MsgId, NewMsgId, ToUserName}`; `NewMsgId` finds the send, `MsgId` must match it when
        given (sends answer none, seed 002). Other fields are refused so tests prove what the backend sends.
        """
        unknown = set(cgi) - {"OpCode", "MsgId", "NewMsgId", "ToUserName"}
        if unknown:
            return OHWX.error("param", f"参数错误: unknown field(s) {', '.join(sorted(unknown))}")
        op_code = cgi.get("OpCode")
        if isinstance(op_code, bool) or op_code != 0:
            return OHWX.error("param", "参数错误: OpCode 必须为 0")
        problem = check_strings(cgi, ("ToUserName",))
        if problem is not None:
            return OHWX.error("param", problem)
        new_msg_id = parse_id(cgi, "NewMsgId")
        if isinstance(new_msg_id, str):
            return OHWX.error("param", new_msg_id)
        msg_id: int | None = None
        if cgi.get("MsgId") is not None:
            parsed = parse_id(cgi, "MsgId")
            if isinstance(parsed, str):
                return OHWX.error("param", parsed)
            msg_id = parsed
        fault = self.account_fault(account, cgi["ToUserName"])
        if fault is not None:
            return OHWX.error(_ENVELOPE_FAULTS[fault.kind], account.token)
        await self.vendor_time()
        record = self.state.find_send("ohwxapi", account.instance, new_msg_id)
        if record is not None and (record.to != cgi["ToUserName"] or (msg_id is not None and msg_id != record.msg_id)):
            record = None
        named = {"MsgId": msg_id, "NewMsgId": new_msg_id}
        outcome = self.state.revoke(
            record,
            vendor="ohwxapi",
            instance=account.instance,
            to=cgi["ToUserName"],
            ids=named,
            received_at=received_at,
        )
        if outcome != "revoked":
            return OHWX.error("revoke")
        return JSONResponse({"CgiBaseResponse": {"ErrMsg": "", "Ret": 0}, "ResponseData": None})
