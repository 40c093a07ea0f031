"""E云管家 / wkteam (``ecloud``, seeds 000 and 001).

Auth is the raw ``Authorization`` value from ``/member/login``; ``wId`` changes on every re-login, so it is
account configuration. Success iff ``code == "1000"``, compared as a string (some deployments answer an
int). ``data`` may be ``null`` on success (``/sendApp``, older ``/sendText``): that is a success without
ids, recorded as such.

Mini-programs: structured cards always use ``/sendApplets``; its ``iconUrl`` is marked required, so it is
never sent empty: the card's icon, else its cover. Pasted XML goes to
``/sendApplet`` (seed 001), which needs the cover as ``imgUrl``: :func:`check_message` refuses a pasted
mini-program without ``cover_url`` at the door instead of sending an incomplete request.

Media: ``/sendImage2 {wId, wcId, content: url}``, ``/sendFile {wId, wcId, path, fileName}``, ``/sendUrl
{wId, wcId, title, url, description, thumbUrl}`` (2048537793/WkApi ``api-wen-dang/fa-song/``; sendImage2 as
fangchaogang/webot-sdk's YCloud channel calls it). ``/isOnline`` answering ``1001`` means offline (the WkApi
table: "1000成功（在线），1001失败（离线）").
Contacts (2048537793/WkApi ``api-wen-dang/``): ``/getContactLabelList {wId}`` → ``data[{labelId, labelName}]``
(``biao-qian/huo-qu-biao-qian-lie-biao.md``); ``/initAddressList {wId}`` then ``/getAddressList {wId}`` →
``data.friends/chatrooms/ghs``; ``/getContact {wId, wcId: "a,b"}`` for at most 20 ids a call
(``deng-lu/huo-qu-lian-xi-ren-xin-xi.md``) → ``data[{userName, nickName, remark, labelList}]``. Its docs ask
for random gaps between these calls (300-800 ms; the mirror's older page says 1-3 s): the sync keeps them.
"""

from __future__ import annotations

from typing import Any

from worker.errors import MessageError
from worker.messages import FileMessage, ImageMessage, LinkMessage, MiniProgramMessage, SingleMessage, TextMessage
from worker.vendors.base import (
    ContactDetail,
    ContactList,
    HttpBackend,
    SendResult,
    contact_details,
    id_list,
    member_count,
    register,
    require_revoke_ids,
)

SUCCESS = "1000"
#: ``/isOnline``'s codes for an offline account: the WkApi table says "1000成功（在线），10001失败（离线）",
#: 1001 being the failure code of every other E云 answer (seeds 000, 001).
OFFLINE = frozenset({"1001", "10001"})


def check_message(message: SingleMessage) -> None:
    """Refuse what E云 cannot send well: a pasted mini-program without a fresh cover (``imgUrl``, seed 001)."""
    if isinstance(message, MiniProgramMessage) and not message.is_structured and not message.cover_url:
        raise MessageError(
            "message.cover_url: E云 (/sendApplet) needs a cover image URL for a pasted mini-program "
            "(png/jpg under 50 KB) / E云发送小程序需要封面图 cover_url",
            field="message.cover_url",
        )


@register("ecloud")
class ECloudBackend(HttpBackend):
    """E云管家 protocol."""

    envelope_key = "code"
    kinds = frozenset({"text", "miniprogram", "appmsg", "image", "file", "link"})
    can_sync_contacts = True

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self.account.token.get_secret_value()}

    def _call(self, path: str, body: dict[str, Any], *, large: bool = False) -> Any:
        envelope = self.post(path, body, large=large)
        if str(envelope.get("code")) != SUCCESS:
            text = str(envelope.get("message") or envelope.get("msg") or "")
            raise self.failure(text, code=str(envelope.get("code")))
        return envelope.get("data")

    def send(self, to: str, message: SingleMessage) -> SendResult:
        """sendText, sendApplets (structured card) or sendApplet/sendApp (XML)."""
        w_id = self.account.instance
        body: dict[str, Any]
        if isinstance(message, ImageMessage):
            endpoint = "sendImage2"
            body = {"wId": w_id, "wcId": to, "content": message.url}
        elif isinstance(message, FileMessage):
            endpoint = "sendFile"
            body = {"wId": w_id, "wcId": to, "path": message.url, "fileName": message.name}
        elif isinstance(message, LinkMessage):
            endpoint = "sendUrl"
            body = {
                "wId": w_id,
                "wcId": to,
                "title": message.title,
                "url": message.url,
                "description": message.description,
                "thumbUrl": message.thumb_url,
            }
        elif isinstance(message, TextMessage):
            endpoint = "sendText"
            body = {"wId": w_id, "wcId": to, "content": message.text}
            at = message.mention_ids()
            if at:
                body["at"] = ",".join(at)
        elif isinstance(message, MiniProgramMessage) and message.is_structured:
            endpoint = "sendApplets"
            body = {
                "wId": w_id,
                "wcId": to,
                "displayName": message.display_name,
                "iconUrl": message.icon_url or message.cover_url,
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
        """``/revokeMsg`` takes the three ids as integers; none of them may be missing or 0."""
        ids = {"msgId": sent.msg_id, "newMsgId": sent.new_msg_id, "createTime": sent.create_time}
        require_revoke_ids(self.name, ids)
        self._call("/revokeMsg", {"wId": self.account.instance, "wcId": sent.to, **ids})

    def set_callback(self, url: str) -> None:
        """``/setHttpCallbackUrl {httpUrl, type: 2}`` (E云's 设置消息接收地址; docs/vendors.md, "Callbacks")."""
        self._call("/setHttpCallbackUrl", {"httpUrl": url, "type": 2})

    def check_online(self) -> bool | None:
        """``/isOnline`` (查询微信是否在线): ``code "1000"`` with ``data.isOnline`` true or false.

        An offline account is a successful call with ``isOnline: false``, or code ``1001`` (2048537793/WkApi
        ``api-wen-dang/wei-xin-guan-li/cha-xun-wei-xin-shi-fou-zai-xian.md``: "1000成功（在线），1001失败（离线）"):
        the account is down, not a failed check. Any other code is raised, classified like other failures.
        """
        envelope = self.post("/isOnline", {"wId": self.account.instance})
        if str(envelope.get("code")) in OFFLINE:
            return False
        if str(envelope.get("code")) != SUCCESS:
            text = str(envelope.get("message") or envelope.get("msg") or "")
            raise self.failure(text, code=str(envelope.get("code")))
        data = envelope.get("data")
        if isinstance(data, dict) and "isOnline" in data:
            value = data["isOnline"]
            return value is True or str(value).lower() == "true"
        return True

    # --- contacts (read-only calls: repeating one is harmless) -------------------------------------------

    def contact_labels(self) -> list[tuple[str, str]]:
        """``/getContactLabelList``: ``data[{labelId, labelName}]``."""
        data = self._call("/getContactLabelList", {"wId": self.account.instance})
        return [
            (str(item.get("labelId")), str(item.get("labelName") or ""))
            for item in (data if isinstance(data, list) else [])
            if isinstance(item, dict) and item.get("labelId") is not None
        ]

    def contact_list(self, *, first: bool, timeout_s: float) -> ContactList | None:
        """``/initAddressList`` first (it prepares the list), then ``/getAddressList``."""
        if first:
            self._call("/initAddressList", {"wId": self.account.instance})
            return None
        data = self._call("/getAddressList", {"wId": self.account.instance}, large=True)
        if not isinstance(data, dict):
            return None
        return ContactList(id_list(data.get("friends")), id_list(data.get("chatrooms")), id_list(data.get("ghs")))

    def contact_details(self, ids: list[str]) -> list[ContactDetail]:
        """``/getContact`` with the ids comma-separated (at most 20)."""
        data = self._call("/getContact", {"wId": self.account.instance, "wcId": ",".join(ids)})
        return contact_details(data)

    def contact_room_members(self, room: str) -> int | None:
        """``/getChatRoomMember {wId, chatRoomId}`` → ``data[{userName, nickName, …}]``: its length."""
        return member_count(self._call("/getChatRoomMember", {"wId": self.account.instance, "chatRoomId": room}))
