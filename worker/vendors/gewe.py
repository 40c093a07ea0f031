"""GeWe v2 (``gewe``): hosted ``…/gewe/v2/api`` or self-hosted Gewechat ``…/v2/api`` (seed 003).

Auth is the raw ``X-GEWE-TOKEN`` header; success iff ``ret == 200``. Structured mini-programs go to
``postMiniApp``; pasted mini-program XML goes to ``forwardMiniApp`` (which wants the whole ``<msg>`` and
takes a fresh cover) when a cover URL is given, else to ``postAppMsg`` with the bare ``<appmsg>``.
"""

from __future__ import annotations

from typing import Any

from worker.errors import VendorError
from worker.messages import AppMsgMessage, MiniProgramMessage, TextMessage
from worker.vendors.base import AnyMessage, HttpBackend, SendResult, register
from worker.xmlsafe import wrap_msg

MENTION_ALL = "notify@all"


@register("gewe")
class GeweBackend(HttpBackend):
    """GeWe v2 protocol."""

    envelope_key = "ret"

    def _headers(self) -> dict[str, str]:
        return {"X-GEWE-TOKEN": self.account.token.get_secret_value()}

    def _call(self, path: str, body: dict[str, Any]) -> Any:
        envelope = self.post(path, body)
        if envelope.get("ret") != 200 and str(envelope.get("ret")) != "200":
            raise self._error(envelope)
        return envelope.get("data")

    def _error(self, envelope: dict[str, Any]) -> VendorError:
        data = envelope.get("data")
        detail = data.get("msg") if isinstance(data, dict) else None
        code = data.get("code") if isinstance(data, dict) else None
        text = " / ".join(str(part) for part in (envelope.get("msg"), detail) if part)
        return self.failure(text, code=str(code if code is not None else envelope.get("ret")))

    def send(self, to: str, message: AnyMessage) -> SendResult:
        """Map the message kind to its GeWe endpoint and read back the ids."""
        app_id = self.account.instance
        if isinstance(message, TextMessage):
            endpoint = "postText"
            body: dict[str, Any] = {"appId": app_id, "toWxid": to, "content": message.text}
            ats = [MENTION_ALL] if message.mention_all else list(message.mentions)
            if ats:
                body["ats"] = ",".join(ats)
        elif isinstance(message, MiniProgramMessage) and message.is_structured:
            endpoint = "postMiniApp"
            body = {
                "appId": app_id,
                "toWxid": to,
                "miniAppId": message.app_id,
                "displayName": message.display_name,
                "pagePath": message.page_path,
                "coverImgUrl": message.cover_url,
                "title": message.title,
                "userName": message.username,
            }
        elif isinstance(message, MiniProgramMessage) and message.cover_url:
            endpoint = "forwardMiniApp"
            body = {
                "appId": app_id,
                "toWxid": to,
                "xml": wrap_msg(message.appmsg_xml()),
                "coverImgUrl": message.cover_url,
            }
        else:
            assert isinstance(message, MiniProgramMessage | AppMsgMessage)
            endpoint = "postAppMsg"
            body = {"appId": app_id, "toWxid": to, "appmsg": message.appmsg_xml()}
        return self.camel_case_result(
            self._call(f"/message/{endpoint}", body), to=to, to_key="toWxid", endpoint=endpoint
        )

    def revoke(self, sent: SendResult) -> None:
        """``revokeMsg`` wants the ids as strings, exactly as the send returned them."""
        self._call(
            "/message/revokeMsg",
            {
                "appId": self.account.instance,
                "toWxid": sent.to,
                "msgId": str(sent.msg_id if sent.msg_id is not None else 0),
                "newMsgId": str(sent.new_msg_id),
                "createTime": str(sent.create_time),
            },
        )

    def check_online(self) -> bool | None:
        """``/login/checkOnline`` answers ``data: true|false``."""
        return bool(self._call("/login/checkOnline", {"appId": self.account.instance}))
