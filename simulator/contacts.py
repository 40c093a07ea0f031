"""The simulator's contacts: friends in labels, groups and public accounts per account, answered with the
vendors' shapes (GeWe 联系人模块/标签模块, E云 ``getContact``/``getAddressList``/``getContactLabelList``) and
their slowness: GeWe's ``fetchContactsList`` does not answer in time for a large list, its cache holds the
answer a moment later. Every contact call is recorded (start and end), so tests can check that a sync never
overlapped a send on the account and kept its gaps.

Configure per account with ``POST /_sim/contacts {"vendor", "instance", "friends", "chatrooms",
"list_slow_s"?, "cache_delay_s"?}``; read the calls at ``GET /_sim/contact_calls``. Every account gets 300
friends in four labels, 8 groups and two public accounts on first use (``broadcast simulator --friends N
--groups M`` changes that).
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from simulator.protocols import ECLOUD, GEWE, JSONResponse, read_json_object
from simulator.state import DEMO_CONTACTS, JSONDict, SimAccount, SimState

#: Labels every simulated account has: (id, name). A friend's labels follow its number.
LABELS: Final = ((1, "VIP"), (2, "上海"), (3, "同事"), (4, "老客户"))
#: GeWe answers fetchContactsList in time up to this many friends; beyond, it is slow (the cache path).
FAST_LIST_MAX: Final = 1000
#: Most ids getBriefInfo / getContact detail in one call (GeWe's schema says maxItems 100; E云 20).
GEWE_BATCH_MAX: Final = 100
ECLOUD_BATCH_MAX: Final = 20


def friend_labels(i: int) -> list[int]:
    """Label ids of friend number ``i``: VIP every 4th, 上海 every 5th, 同事 every 7th, 老客户 every 3rd."""
    return [lid for lid, every in ((1, 4), (2, 5), (3, 7), (4, 3)) if i % every == 0]


@dataclass(slots=True)
class Book:
    """One account's contacts and its list's slowness."""

    friends: list[tuple[str, str, str, list[int]]]
    chatrooms: list[tuple[str, str, int]]
    ghs: list[str]
    list_slow_s: float = 60.0
    cache_delay_s: float = 1.0
    #: when the first fetchContactsList arrived (the cache is ready cache_delay_s later); E云's init
    listed_at: float | None = None

    @classmethod
    def generate(cls, instance: str, friends: int, chatrooms: int) -> Book:
        tag = f"{zlib.crc32(instance.encode()) & 0xFFFF:04x}"
        return cls(
            friends=[
                (f"wxid_{tag}_{i:05d}", f"好友{i}", f"备注{i}" if i % 3 == 1 else "", friend_labels(i))
                for i in range(1, friends + 1)
            ],
            chatrooms=[(f"{tag}{i:08d}@chatroom", f"群{i}", 3 + i) for i in range(1, chatrooms + 1)],
            ghs=[f"gh_{tag}news", f"gh_{tag}shop"],
        )


@dataclass(frozen=True, slots=True)
class ContactCall:
    vendor: str
    instance: str
    endpoint: str
    started: float
    ended: float
    ids: int = 0

    def to_json(self) -> JSONDict:
        return {"vendor": self.vendor, "instance": self.instance, "endpoint": self.endpoint,
                "started": self.started, "ended": self.ended, "ids": self.ids}  # fmt: skip


@dataclass
class Contacts:
    """Every simulated account's contacts and the contact calls made so far."""

    state: SimState
    books: dict[tuple[str, str], Book] = field(default_factory=dict)
    calls: list[ContactCall] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def book(self, account: SimAccount) -> Book:
        key = (account.vendor, account.instance)
        with self.lock:
            if key not in self.books:
                self.books[key] = Book.generate(account.instance, *self.state.contact_size)
            return self.books[key]

    def record(self, account: SimAccount, endpoint: str, started: float, ids: int = 0) -> None:
        with self.lock:
            self.calls.append(ContactCall(account.vendor, account.instance, endpoint, started, time.time(), ids))

    def details(self, book: Book, ids: list[str]) -> list[JSONDict]:
        friends = {f[0]: f for f in book.friends}
        rooms = {r[0]: r for r in book.chatrooms}
        out: list[JSONDict] = []
        for wxid in ids:
            if wxid in friends:
                _, nick, remark, labels = friends[wxid]
                out.append({"userName": wxid, "nickName": nick, "remark": remark, "sex": 1,
                            "labelList": ",".join(str(x) for x in labels), "smallHeadImgUrl": ""})  # fmt: skip
            elif wxid in rooms:
                out.append({"userName": wxid, "nickName": rooms[wxid][1], "remark": "", "labelList": ""})
        return out

    @staticmethod
    def room(book: Book, room_id: str) -> tuple[str, str, int] | None:
        return next((r for r in book.chatrooms if r[0] == room_id), None)

    def lists(self, book: Book) -> JSONDict:
        return {"friends": [f[0] for f in book.friends], "chatrooms": [r[0] for r in book.chatrooms], "ghs": book.ghs}


class ContactHandlers:
    """The vendors' contact endpoints and the ``/_sim/contacts`` admin endpoints."""

    def __init__(self, state: SimState, contacts: Contacts, authenticate: Any) -> None:
        self.state = state
        self.contacts = contacts
        self.authenticate = authenticate

    async def _auth(
        self, dialect: Any, request: Request, fields: tuple[str, ...]
    ) -> tuple[SimAccount, JSONDict] | Response:
        result: tuple[SimAccount, JSONDict] | Response = await self.authenticate(dialect, request, fields)
        return result

    async def _latency(self) -> None:
        delay = self.state.draw_latency()
        if delay > 0:
            await asyncio.sleep(delay)

    # -- GeWe ----------------------------------------------------------------------------------------

    async def gewe_labels(self, request: Request) -> Response:
        """POST /label/list → data.labelList[{labelId, labelName}]."""
        started = time.time()
        auth = await self._auth(GEWE, request, ("appId",))
        if isinstance(auth, Response):
            return auth
        account, _ = auth
        await self._latency()
        self.contacts.record(account, "label/list", started)
        items = [{"labelId": lid, "labelName": name} for lid, name in LABELS]
        return JSONResponse({"ret": 200, "msg": "获取标签列表成功", "data": {"labelList": items}})

    async def gewe_fetch(self, request: Request) -> Response:
        """POST /contacts/fetchContactsList: ids of friends, saved groups, public accounts; slow when large."""
        started = time.time()
        auth = await self._auth(GEWE, request, ("appId",))
        if isinstance(auth, Response):
            return auth
        account, _ = auth
        book = self.contacts.book(account)
        if book.listed_at is None:
            book.listed_at = started
        if len(book.friends) > FAST_LIST_MAX:
            await asyncio.sleep(book.list_slow_s)  # the client gives up first: the cache path
        await self._latency()
        self.contacts.record(account, "contacts/fetchContactsList", started)
        return JSONResponse({"ret": 200, "msg": "获取通讯录列表成功", "data": self.contacts.lists(book)})

    async def gewe_fetch_cache(self, request: Request) -> Response:
        """POST /contacts/fetchContactsListCache: the same shape once the slow list is ready, else no data."""
        started = time.time()
        auth = await self._auth(GEWE, request, ("appId",))
        if isinstance(auth, Response):
            return auth
        account, _ = auth
        book = self.contacts.book(account)
        await self._latency()
        self.contacts.record(account, "contacts/fetchContactsListCache", started)
        ready = book.listed_at is not None and time.time() >= book.listed_at + book.cache_delay_s
        data = self.contacts.lists(book) if ready else None
        return JSONResponse({"ret": 200, "msg": "获取通讯录列表缓存成功", "data": data})

    async def gewe_brief(self, request: Request) -> Response:
        """POST /contacts/getBriefInfo {appId, wxids[1..100]}."""
        started = time.time()
        auth = await self._auth(GEWE, request, ("appId",))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        ids = body.get("wxids")
        if not isinstance(ids, list) or not 1 <= len(ids) <= GEWE_BATCH_MAX or not all(isinstance(i, str) for i in ids):
            return GEWE.error("param", "wxids 参数错误")
        await self._latency()
        self.contacts.record(account, "contacts/getBriefInfo", started, len(ids))
        data = self.contacts.details(self.contacts.book(account), ids)
        return JSONResponse({"ret": 200, "msg": "获取联系人信息成功", "data": data})

    async def gewe_members(self, request: Request) -> Response:
        """POST /group/getChatroomMemberList {appId, chatroomId} → data.memberList[{wxid, nickName, displayName}]."""
        started = time.time()
        auth = await self._auth(GEWE, request, ("appId", "chatroomId"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        room = self.contacts.room(self.contacts.book(account), body["chatroomId"])
        await self._latency()
        self.contacts.record(account, "group/getChatroomMemberList", started)
        if room is None:
            return GEWE.error("param", "群不存在")
        members = [{"wxid": f"wxid_m{i}", "nickName": f"成员{i}", "displayName": ""} for i in range(room[2])]
        data = {"memberList": members, "chatroomOwner": "wxid_m0", "adminWxid": None}
        return JSONResponse({"ret": 200, "msg": "获取群成员列表成功", "data": data})

    # -- E云 -------------------------------------------------------------------------------------------

    async def ecloud_members(self, request: Request) -> Response:
        """POST /getChatRoomMember {wId, chatRoomId} → data[{userName, nickName, displayName}]."""
        started = time.time()
        auth = await self._auth(ECLOUD, request, ("wId", "chatRoomId"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        room = self.contacts.room(self.contacts.book(account), body["chatRoomId"])
        await self._latency()
        self.contacts.record(account, "getChatRoomMember", started)
        if room is None:
            return JSONResponse({"message": "群不存在", "code": "1001", "data": None})
        data = [{"userName": f"wxid_m{i}", "nickName": f"成员{i}", "displayName": ""} for i in range(room[2])]
        return JSONResponse({"message": "成功", "code": "1000", "data": data})

    async def ecloud_labels(self, request: Request) -> Response:
        """POST /getContactLabelList → data[{labelId, labelName}]."""
        started = time.time()
        auth = await self._auth(ECLOUD, request, ("wId",))
        if isinstance(auth, Response):
            return auth
        account, _ = auth
        await self._latency()
        self.contacts.record(account, "getContactLabelList", started)
        data = [{"labelId": lid, "labelName": name} for lid, name in LABELS]
        return JSONResponse({"message": "成功", "code": "1000", "data": data})

    async def ecloud_init(self, request: Request) -> Response:
        """POST /initAddressList: prepares the address list."""
        started = time.time()
        auth = await self._auth(ECLOUD, request, ("wId",))
        if isinstance(auth, Response):
            return auth
        account, _ = auth
        self.contacts.book(account).listed_at = started
        await self._latency()
        self.contacts.record(account, "initAddressList", started)
        return JSONResponse({"message": "成功", "code": "1000", "data": None})

    async def ecloud_list(self, request: Request) -> Response:
        """POST /getAddressList → data.friends/chatrooms/ghs (after initAddressList)."""
        started = time.time()
        auth = await self._auth(ECLOUD, request, ("wId",))
        if isinstance(auth, Response):
            return auth
        account, _ = auth
        book = self.contacts.book(account)
        await self._latency()
        self.contacts.record(account, "getAddressList", started)
        if book.listed_at is None:
            return JSONResponse({"message": "请先初始化通讯录 initAddressList", "code": "1001", "data": None})
        return JSONResponse({"message": "成功", "code": "1000", "data": {**self.contacts.lists(book), "others": []}})

    async def ecloud_contact(self, request: Request) -> Response:
        """POST /getContact {wId, wcId: "a,b"} (at most 20)."""
        started = time.time()
        auth = await self._auth(ECLOUD, request, ("wId", "wcId"))
        if isinstance(auth, Response):
            return auth
        account, body = auth
        ids = [i for i in str(body["wcId"]).split(",") if i]
        if not 1 <= len(ids) <= ECLOUD_BATCH_MAX:
            return ECLOUD.error("param", "wcId 每次最多支持20个")
        await self._latency()
        self.contacts.record(account, "getContact", started, len(ids))
        data = self.contacts.details(self.contacts.book(account), ids)
        return JSONResponse({"message": "成功", "code": "1000", "data": data})

    # -- admin ---------------------------------------------------------------------------------------

    async def configure(self, request: Request) -> Response:
        """POST /_sim/contacts: give an account N friends and M groups (and the list's slowness)."""
        body = await read_json_object(request)
        if body is None:
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        account = self.state.account(str(body.get("vendor")), str(body.get("instance")))
        if account is None:
            return JSONResponse({"error": "no such account"}, status_code=404)
        friends, rooms = body.get("friends", DEMO_CONTACTS[0]), body.get("chatrooms", DEMO_CONTACTS[1])
        if (
            not isinstance(friends, int)
            or not isinstance(rooms, int)
            or not 0 <= friends <= 20_000
            or not 0 <= rooms <= 2000
        ):
            return JSONResponse({"error": "friends 0..20000, chatrooms 0..2000"}, status_code=400)
        book = Book.generate(account.instance, friends, rooms)
        for name in ("list_slow_s", "cache_delay_s"):
            value = body.get(name)
            if isinstance(value, int | float) and 0 <= value <= 600:
                setattr(book, name, float(value))
        with self.contacts.lock:
            self.contacts.books[(account.vendor, account.instance)] = book
        return JSONResponse({"friends": friends, "chatrooms": rooms})

    async def list_calls(self, request: Request) -> Response:
        """GET /_sim/contact_calls?vendor=&instance=."""
        query = request.query_params
        with self.contacts.lock:
            calls = [
                c.to_json()
                for c in self.contacts.calls
                if (not query.get("vendor") or c.vendor == query["vendor"])
                and (not query.get("instance") or c.instance == query["instance"])
            ]
        return JSONResponse({"calls": calls})
