"""E云管家 / wkteam (``ecloud``, seeds 000 and 001).

Auth is the raw ``Authorization`` value from ``/member/login``; ``wId`` changes on every re-login, so it is
account configuration. Success iff ``code == "1000"``, compared as a string (some deployments answer an
int). ``data`` may be ``null`` on success (``/sendApp``, older ``/sendText``): that is a success without
ids, recorded as such. Structured mini-programs use ``/sendApplets`` when an icon URL is given (the
endpoint requires it), else the card is converted to XML for ``/sendApplet`` with the cover as ``imgUrl``.
"""

from __future__ import annotations

from typing import Any

from worker.messages import MiniProgramMessage, TextMessage
from worker.vendors.base import AnyMessage, HttpBackend, SendResult, register

SUCCESS = "1000"


@register("ecloud")
class ECloudBackend(HttpBackend):
    """E云管家 protocol."""

    envelope_key = "code"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self.account.token.get_secret_value()}

    def _call(self, path: str, body: dict[str, Any]) -> Any:
        envelope = self.post(path, body)
        if str(envelope.get("code")) != SUCCESS:
            text = str(envelope.get("message") or envelope.get("msg") or "")
            raise self.failure(text, code=str(envelope.get("code")))
        return envelope.get("data")

    def send(self, to: str, message: AnyMessage) -> SendResult:
        """sendText, sendApplets (structured card with icon) or sendApplet/sendApp (XML)."""
        w_id = self.account.instance
        body: dict[str, Any]
        if isinstance(message, TextMessage):
            endpoint = "sendText"
            body = {"wId": w_id, "wcId": to, "content": message.text}
            at = ["notify@all"] if message.mention_all else list(message.mentions)
            if at:
                body["at"] = ",".join(at)
        elif isinstance(message, MiniProgramMessage) and message.is_structured and message.icon_url:
            endpoint = "sendApplets"
            body = {
                "wId": w_id,
                "wcId": to,
                "displayName": message.display_name,
                "iconUrl": message.icon_url,
                "appId": message.app_id,
                "pagePath": message.page_path,
                "thumbUrl": message.cover_url,
                "title": message.title,
                "userName": message.username,
            }
        else:
            endpoint = self.account.options.get("ecloud_app_endpoint", "sendApplet")
            body = {"wId": w_id, "wcId": to, "content": message.appmsg_xml()}
            cover = message.cover_url if isinstance(message, MiniProgramMessage) else None
            if cover and endpoint == "sendApplet":
                body["imgUrl"] = cover
        return self.camel_case_result(self._call(f"/{endpoint}", body), to=to, to_key="wcId", endpoint=endpoint)

    def revoke(self, sent: SendResult) -> None:
        """``/revokeMsg`` takes the ids as integers."""
        self._call(
            "/revokeMsg",
            {
                "wId": self.account.instance,
                "wcId": sent.to,
                "msgId": sent.msg_id,
                "newMsgId": sent.new_msg_id,
                "createTime": sent.create_time,
            },
        )

    def check_online(self) -> bool | None:
        """``/isOnline``: code 1000 online, 1001 offline (a failure code here means "no", not an error)."""
        envelope = self.post("/isOnline", {"wId": self.account.instance})
        code = str(envelope.get("code"))
        if code == SUCCESS:
            return True
        text = str(envelope.get("message") or "")
        if code == "1001" and not any(m in text for m in ("不可用或已过期", "设备不存在")):
            return False
        raise self.failure(text, code=code)
