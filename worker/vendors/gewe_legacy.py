"""GeWe legacy API (``gewe-legacy``, seed 004): ``/api/message/sendmsg`` and ``/api/message/sendapp``.

Success needs ``ret == 0`` *and* the recipient's own ``data.List[i].Ret == 0``; ids come per recipient
(``MsgId``, ``NewClientMsgid``, ``Createtime``, ``NewMsgId``, recipient in ``ToUsetName.string``, sic).
This API takes only XML for app messages, so structured mini-programs are converted to a type-33
appmsg and link cards to type-5 app XML. No revoke, no online check, no image or file send are documented.
"""

from __future__ import annotations

from typing import Any

from worker.errors import MessageError, UnsupportedError
from worker.messages import AppMsgMessage, LinkMessage, MiniProgramMessage, SingleMessage, TextMessage
from worker.vendors.base import HttpBackend, SendResult, as_int, register


@register("gewe-legacy")
class GeweLegacyBackend(HttpBackend):
    """GeWe legacy protocol."""

    envelope_key = "ret"
    can_revoke = False

    def _headers(self) -> dict[str, str]:
        return {"X-GEWE-TOKEN": self.account.token.get_secret_value()}

    def send(self, to: str, message: SingleMessage) -> SendResult:
        """sendmsg for text (one recipient per call), sendapp for every XML kind."""
        appid = self.account.instance
        if isinstance(message, TextMessage):
            endpoint = "sendmsg"
            at = message.mention_ids()
            body: dict[str, Any] = {
                "appid": appid,
                "to_wxid_list": [{"to_wxid": to, "content": message.text, "msg_type": 1, "msg_source": "", "at": at}],
            }
        else:
            endpoint = "sendapp"
            if not isinstance(message, MiniProgramMessage | AppMsgMessage | LinkMessage):
                raise MessageError(
                    f"message.kind: {self.name} cannot send {message.kind!r} messages", field="message.kind"
                )
            body = {"appid": appid, "to_wxid": to, "xml": message.appmsg_xml()}
        envelope = self.post(f"/api/message/{endpoint}", body)
        if envelope.get("ret") != 0 and str(envelope.get("ret")) != "0":
            text = str(envelope.get("msg_err") or envelope.get("msg") or "")
            raise self.failure(text, code=str(envelope.get("ret")))
        data = envelope.get("data")
        entries = data.get("List") if isinstance(data, dict) else None
        entry = self._entry_for(to, entries)
        if entry is None:
            return SendResult(vendor=self.name, to=to, endpoint=endpoint)
        if as_int(entry.get("Ret")) not in (0, None):
            text = str(entry.get("ErrMsg") or entry.get("msg") or "recipient failed")
            raise self.failure(text, code=str(entry.get("Ret")))
        return SendResult(
            vendor=self.name,
            to=to,
            endpoint=endpoint,
            msg_id=as_int(entry.get("MsgId")),
            new_msg_id=as_int(entry.get("NewMsgId")),
            client_msg_id=None if entry.get("NewClientMsgid") is None else str(entry["NewClientMsgid"]),
            create_time=as_int(entry.get("Createtime")),
            msg_type=as_int(entry.get("Type")),
        )

    @staticmethod
    def _entry_for(to: str, entries: Any) -> dict[str, Any] | None:
        if not isinstance(entries, list) or not entries:
            return None
        candidates: list[dict[str, Any]] = [entry for entry in entries if isinstance(entry, dict)]
        for entry in candidates:
            name = entry.get("ToUsetName")
            if isinstance(name, dict) and name.get("string") == to:
                return entry
        return candidates[0] if candidates else None

    def revoke(self, sent: SendResult) -> None:
        """Not documented by the vendor."""
        raise UnsupportedError("gewe-legacy has no documented revoke", vendor=self.name)

    def check_online(self) -> bool | None:
        """Not documented by the vendor."""
        return None
