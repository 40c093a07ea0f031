"""GeWe v2 (``gewe``): hosted ``…/gewe/v2/api`` or self-hosted Gewechat ``…/v2/api`` (seed 003).

Auth is the raw ``X-GEWE-TOKEN`` header; success iff ``ret == 200``. Endpoints follow the official docs
mirrored in Wangnov/gewe-rs ``docs/GeweAPI-Official/消息模块/``:

- structured mini-programs go to ``postMiniApp`` (seed 003);
- a pasted *whole* ``<msg>`` callback document with a fresh cover goes to ``forwardMiniApp``, which takes
  that document (``转发小程序.md``: its example starts with ``<?xml version="1.0"?>\\n<msg>``) and a required
  ``coverImgUrl``;
- everything else with XML goes to ``postAppMsg`` with the bare ``<appmsg>`` node (``发送appmsg消息.md``).

Images, files and link cards go to ``postImage`` (``imgUrl``; the answer's ``aesKey``/``fileId``/``md5`` are
kept for a later ``forwardImage``), ``postFile`` (``fileUrl``, ``fileName``) and ``postLink`` (``title``,
``desc``, ``linkUrl``, ``thumbUrl``): 发送图片消息.md, 发送文件消息.md in the mirror; postLink's fields as the
public GeWe clients send them (the mirror has no page for it; ``docs/vendors.md``).

Failures: ``ret 500`` + ``msg "发送小程序失败"`` + ``data.code "-2"`` is tied to the cover image
(Devo919/Gewechat#176; in #182 the maintainer answers "cover under 50 KB"), not to a daily cap: a permanent
failure of that message with a hint about the cover. The token error echoes the token (#263) and is scrubbed
before it is stored.

Contacts (联系人模块, 标签模块 in the same mirror): ``/label/list`` → ``data.labelList[{labelId, labelName}]``;
``/contacts/fetchContactsList`` → ``data.friends/chatrooms/ghs`` (ids only; a long call whose answer the vendor
also keeps: on a timeout ``/contacts/fetchContactsListCache`` answers the same shape, empty until ready);
``/contacts/getBriefInfo {appId, wxids}`` (获取群-好友简要信息.md: "最大20个", ``maxItems: 100``) →
``data[{userName, nickName, remark, labelList: "1,3"}]``, for friends and groups alike; a group's member count
(asked only when the account option ``contacts_members`` is on) from ``/group/getChatroomMemberList``
``data.memberList`` (群模块, as listed in vendors.md).

"""

from __future__ import annotations

import dataclasses
from typing import Any

from worker.errors import AmbiguousError, PermanentError, VendorError
from worker.messages import (
    AppMsgMessage,
    FileMessage,
    ImageMessage,
    LinkMessage,
    MiniProgramMessage,
    SingleMessage,
    TextMessage,
)
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

#: The declaration the vendor's own forwardMiniApp example starts with (转发小程序.md).
XML_DECLARATION = '<?xml version="1.0"?>\n'
#: ``msg`` and ``data.code`` of a mini-program refused for its cover (Devo919/Gewechat#176, #182).
MINI_APP_FAILED = "发送小程序失败"
COVER_CODE = "-2"
COVER_HINT = (
    "the vendor refused the mini-program card, most often for its cover image: use a png/jpg cover under "
    "50 KB (Devo919/Gewechat#182) / 小程序发送失败，多为封面图问题：请使用 50 KB 以内的 png/jpg 封面"
)


@register("gewe")
class GeweBackend(HttpBackend):
    """GeWe v2 protocol."""

    envelope_key = "ret"
    can_sync_contacts = True

    def _headers(self) -> dict[str, str]:
        return {"X-GEWE-TOKEN": self.account.token.get_secret_value()}

    def _call(
        self, path: str, body: dict[str, Any], *, read_timeout_s: float | None = None, large: bool = False
    ) -> Any:
        envelope = self.post(path, body, read_timeout_s=read_timeout_s, large=large)
        if envelope.get("ret") != 200 and str(envelope.get("ret")) != "200":
            raise self._error(envelope)
        return envelope.get("data")

    def _error(self, envelope: dict[str, Any]) -> VendorError:
        data = envelope.get("data")
        detail = data.get("msg") if isinstance(data, dict) else None
        code = data.get("code") if isinstance(data, dict) else None
        # the envelope's message, then its detail: "发送消息失败：对方不是你的好友" (not " / ", which reads as the
        # product's English / Chinese pair)
        headline = str(envelope.get("msg") or "")
        joint = "：" if any("\u4e00" <= c <= "\u9fff" for c in headline) else ": "
        text = joint.join(str(part) for part in (headline, detail) if part)
        code_text = str(code if code is not None else envelope.get("ret"))
        if envelope.get("msg") == MINI_APP_FAILED and str(code) == COVER_CODE:
            return self.failure(f"{text}: {COVER_HINT}", code=code_text, cls=PermanentError)
        return self.failure(text, code=code_text)

    kinds = frozenset({"text", "miniprogram", "appmsg", "image", "file", "link"})

    def send(self, to: str, message: SingleMessage) -> SendResult:
        """Map the message kind to its GeWe endpoint and read back the ids."""
        app_id = self.account.instance
        if isinstance(message, ImageMessage):
            data = self._call("/message/postImage", {"appId": app_id, "toWxid": to, "imgUrl": message.url})
            result = self.camel_case_result(data, to=to, to_key="toWxid", endpoint="postImage")
            facts = data if isinstance(data, dict) else {}
            media = {ours: str(facts[theirs]) for ours, theirs in _IMAGE_FACTS if facts.get(theirs)}
            return dataclasses.replace(result, media=media)
        if isinstance(message, FileMessage):
            endpoint = "postFile"
            body: dict[str, Any] = {"appId": app_id, "toWxid": to, "fileUrl": message.url, "fileName": message.name}
        elif isinstance(message, LinkMessage):
            endpoint = "postLink"
            body = {
                "appId": app_id,
                "toWxid": to,
                "title": message.title,
                "desc": message.description,
                "linkUrl": message.url,
                "thumbUrl": message.thumb_url,
            }
        elif isinstance(message, TextMessage):
            endpoint = "postText"
            body = {"appId": app_id, "toWxid": to, "content": message.text}
            ats = message.mention_ids()
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
        elif isinstance(message, MiniProgramMessage) and message.cover_url and message.msg_document():
            endpoint = "forwardMiniApp"
            body = {
                "appId": app_id,
                "toWxid": to,
                "xml": XML_DECLARATION + (message.msg_document() or ""),
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
        """``revokeMsg`` wants the ids as strings, exactly as the send returned them (撤回消息).

        ``msgId`` may be 0 (the vendor answers 0 for text); ``newMsgId`` and ``createTime`` may not: image
        sends answer ``createTime`` 0, and a revoke with a wrong id answers "操作成功" and does nothing.
        """
        ids = {"msgId": sent.msg_id, "newMsgId": sent.new_msg_id, "createTime": sent.create_time}
        require_revoke_ids(self.name, ids, zero_ok=("msgId",))
        self._call(
            "/message/revokeMsg",
            {"appId": self.account.instance, "toWxid": sent.to, **{name: str(value) for name, value in ids.items()}},
        )

    def set_callback(self, url: str) -> None:
        """``/login/setCallback {token, callbackUrl}``: one URL per token (登录模块, 设置回调; docs/vendors.md)."""
        self._call("/login/setCallback", {"token": self.account.token.get_secret_value(), "callbackUrl": url})

    def check_online(self) -> bool | None:
        """``/login/checkOnline`` answers ``data: true|false``; a ``true`` is weak evidence (see worker.pacing.holds)."""
        data = self._call("/login/checkOnline", {"appId": self.account.instance})
        return data if isinstance(data, bool) else None  # anything else says nothing (a null, a string)

    # --- contacts (read-only calls: repeating one is harmless) -------------------------------------------

    def contact_labels(self) -> list[tuple[str, str]]:
        """``/label/list``: ``data.labelList[{labelId, labelName}]``."""
        data = self._call("/label/list", {"appId": self.account.instance})
        items = data.get("labelList") if isinstance(data, dict) else data
        return [
            (str(item.get("labelId")), str(item.get("labelName") or ""))
            for item in (items if isinstance(items, list) else [])
            if isinstance(item, dict) and item.get("labelId") is not None
        ]

    def contact_list(self, *, first: bool, timeout_s: float) -> ContactList | None:
        """``fetchContactsList`` first; when it does not answer in ``timeout_s`` (it takes longer the more
        friends there are), its cache until that holds the answer."""
        path = "/contacts/fetchContactsList" if first else "/contacts/fetchContactsListCache"
        try:
            data = self._call(path, {"appId": self.account.instance}, read_timeout_s=timeout_s, large=True)
        except AmbiguousError:
            if first:  # still gathering: the cache will hold the answer
                return None
            raise
        if not isinstance(data, dict) or not any(data.get(k) for k in ("friends", "chatrooms", "ghs")):
            return None if not first else ContactList([], [], [])
        return ContactList(id_list(data.get("friends")), id_list(data.get("chatrooms")), id_list(data.get("ghs")))

    def contact_details(self, ids: list[str]) -> list[ContactDetail]:
        """``getBriefInfo`` for up to 20 ids (100 where the deployment accepts it)."""
        data = self._call("/contacts/getBriefInfo", {"appId": self.account.instance, "wxids": ids})
        return contact_details(data)

    def contact_room_members(self, room: str) -> int | None:
        """``/group/getChatroomMemberList {appId, chatroomId}`` → ``data.memberList``: its length."""
        return member_count(
            self._call("/group/getChatroomMemberList", {"appId": self.account.instance, "chatroomId": room})
        )


#: postImage's media facts (ours, theirs): what a later forwardImage needs (发送图片消息.md, 转发图片.md).
_IMAGE_FACTS = (("aes_key", "aesKey"), ("file_id", "fileId"), ("md5", "md5"))
