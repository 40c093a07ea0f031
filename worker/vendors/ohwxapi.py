"""OHwxapi "MagicCgi" gateways (``ohwxapi``, seed 002).

Every call is ``POST /v2/api?funcname=MagicCgi&timeout=N&wxid=<sender>`` with ``{"CgiCmd": N,
"CgiRequest": {...}}``; the numbers are WeChat's internal command ids: 522 text, 222 app message (links,
files, video channel, mini-programs: structured cards are converted to type-33 XML; seed 002 and
channg.gitbook.io/ohwxapi 发送APP消息), 594 revoke. CgiCmd 594 is undocumented by the vendor: the one public
client that uses it (SZUEA/AJBot ``EAbotoy/action.py``) sends ``{OpCode: 0, MsgId, NewMsgId, ToUserName}``,
and so do we. Sends answer only ``NewMsgId`` and ``ClientMsgId`` (seed 002), so ``MsgId`` is sent when a
send returned one and left out otherwise, never guessed. No auth header is documented; a deployment that
adds one sets the token, sent as ``Authorization: Bearer``. Success iff ``CgiBaseResponse.Ret == 0``.
No online check is documented. Link cards go as type-5 app XML through 222; images and files have no
documented command (refused at submission).
"""

from __future__ import annotations

from typing import Any

from worker.errors import MessageError, PermanentError, ThrottledError, VendorError
from worker.messages import AppMsgMessage, LinkMessage, MiniProgramMessage, SingleMessage, TextMessage
from worker.vendors.base import HttpBackend, SendResult, as_int, register, require_revoke_ids

CGI_SEND_APP = 222
CGI_SEND_TEXT = 522
CGI_REVOKE = 594

#: ``CgiBaseResponse.Ret`` codes that say what happened even with an empty ``ErrMsg``, as SZUEA/AJBot
#: (``EAbotoy``) maps them: 110 removed from the group, 120 muted, 241 too fast, 299 group rate limit.
RET_CODES: dict[int, tuple[type[VendorError], str]] = {
    110: (PermanentError, "removed from the group / 已被移出该群"),
    120: (PermanentError, "muted in the group / 已被禁言"),
    241: (ThrottledError, "sending too fast / 发送频率过快"),
    299: (ThrottledError, "group rate limit / 超过群发言频率限制"),
}


@register("ohwxapi")
class OhwxapiBackend(HttpBackend):
    """MagicCgi protocol."""

    envelope_key = "CgiBaseResponse"

    def _headers(self) -> dict[str, str]:
        token = self.account.token.get_secret_value()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _cgi(self, cmd: int, request: dict[str, Any]) -> dict[str, Any]:
        timeout = self.account.options.get("cgi_timeout", "10")
        params = {"funcname": "MagicCgi", "timeout": timeout, "wxid": self.account.instance}
        envelope = self.post("/v2/api", {"CgiCmd": cmd, "CgiRequest": request}, params=params)
        base = envelope.get("CgiBaseResponse")
        ret = as_int(base.get("Ret")) if isinstance(base, dict) else None
        if ret != 0:
            text = str(base.get("ErrMsg") or "") if isinstance(base, dict) else "no CgiBaseResponse"
            known = RET_CODES.get(ret) if ret is not None else None
            if known is not None:
                cls, meaning = known
                raise self.failure(f"{text} ({meaning})" if text else meaning, code=str(ret), cls=cls)
            raise self.failure(text, code=str(ret))
        data = envelope.get("ResponseData")
        return data if isinstance(data, dict) else {}

    def send(self, to: str, message: SingleMessage) -> SendResult:
        """CgiCmd 522 for text, 222 for every XML kind."""
        if isinstance(message, TextMessage):
            cmd = CGI_SEND_TEXT
            request: dict[str, Any] = {"ToUserName": to, "Content": message.text, "MsgType": 1}
            at = message.mention_ids()
            if at:
                request["AtUsers"] = ",".join(at)
        else:
            cmd = CGI_SEND_APP
            if not isinstance(message, MiniProgramMessage | AppMsgMessage | LinkMessage):
                raise MessageError(
                    f"message.kind: {self.name} cannot send {message.kind!r} messages", field="message.kind"
                )
            request = {"ToUserName": to, "AppMsgXml": message.appmsg_xml(), "MsgType": 49}
        data = self._cgi(cmd, request)
        client_msg_id = data.get("ClientMsgId")
        return SendResult(
            vendor=self.name,
            to=to,
            endpoint=f"CgiCmd{cmd}",
            msg_id=as_int(data.get("MsgId")),
            new_msg_id=as_int(data.get("NewMsgId")),
            client_msg_id=None if client_msg_id in (None, "") else str(client_msg_id),
            create_time=as_int(data.get("CreateTime")),
            msg_type=1 if cmd == CGI_SEND_TEXT else 49,
        )

    def revoke(self, sent: SendResult) -> None:
        """CgiCmd 594 as SZUEA/AJBot sends it: ``{OpCode: 0, MsgId, NewMsgId, ToUserName}``; needs NewMsgId."""
        require_revoke_ids(self.name, {"NewMsgId": sent.new_msg_id})
        request: dict[str, Any] = {"OpCode": 0}
        if sent.msg_id:
            request["MsgId"] = sent.msg_id
        request.update(NewMsgId=sent.new_msg_id, ToUserName=sent.to)
        self._cgi(CGI_REVOKE, request)

    def check_online(self) -> bool | None:
        """Not documented by the gateway."""
        return None
