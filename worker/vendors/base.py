"""What every vendor backend is, and the one place httpx errors become our errors.

A backend is built per account from a :class:`VendorAccount` and an injected ``httpx.Client``. The client
is *sync* on purpose: measured on this kind of machine against a local server, one sync ``httpx.Client``
made ≈860 calls/s while ``httpx.AsyncClient`` made 220-550 (slower with more concurrency), and Celery's
prefork workers run sync code anyway. Tests inject a ``MockTransport`` or point the client at the
simulator.

Error translation follows ``docs/design.md`` ("What may have reached the vendor"): only a failure that
provably happened before the request reached the vendor is *transient* (connect refused, DNS, TLS, pool
timeout, a body that did not get out whole: ``WriteError``, which the transport also raises when the peer
closed the connection while the request was being written; HTTP 503/408 or 429 from our side of a proxy).
Anything that may have left (a read timeout, a connection dropped after the request was written whole, a
call past its overall deadline, HTTP 502/504 or any other 5xx without the vendor's envelope, a 2xx whose
body is not the vendor's JSON) is *ambiguous*: the message may be out, so it is never resent blindly. The vendor's own failure texts
are classified by :func:`classify_vendor_text`.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from worker import jsonsafe
from worker.errors import (
    AbandonedError,
    AccountDownError,
    AmbiguousError,
    ConfigError,
    DailyCapError,
    MessageError,
    NotFriendError,
    PermanentError,
    RevokeRefusedError,
    ThrottledError,
    TransientError,
    UnsupportedError,
    VendorError,
    VendorFailure,
    redact,
)
from worker.messages import SingleMessage

#: The one list of vendors: each name is a backend module that registers itself under it (``@register``);
#: a test checks the registry and this list agree. Everything else (API, CLI, account files) derives from it.
VendorName = Literal["gewe", "gewe-legacy", "ecloud", "ohwxapi"]

#: Statuses a proxy or server answers without having passed the request on: safe to retry. 503 (service
#: unavailable) and 408 (the server gave up reading the request) are answered before any handler ran.
NOT_FORWARDED = frozenset({408, 503})
#: Except Envoy's 503 for a reset of the upstream stream, which it also answers after it wrote the request
#: to the vendor (envoyproxy/envoy#17432: "using existing connection", "writing 2852 bytes", the upstream
#: reset, then "upstream_reset_before_response_started" and a 503; #14981): the vendor may have acted on it.
#: Its reasons that mean the request never went out: no connection was made, or the circuit breaker held it.
_ENVOY_RESET = re.compile(rb"disconnect/reset before headers\.(?: retried and the latest)? reset reason: ([a-z ]+)")
_ENVOY_NOT_FORWARDED = frozenset({b"connection failure", b"connection timeout", b"overflow"})
#: Longest vendor answer read (after decompression): real envelopes are under a few KB. A longer one is cut
#: and is no envelope (outcome unknown), so a vendor or a proxy cannot fill a worker's memory.
MAX_ANSWER_BYTES = 1024 * 1024


class VendorAccount(BaseModel):
    """How to reach one sending account at its vendor. The token is a SecretStr: it never prints."""

    model_config = ConfigDict(extra="forbid")

    vendor: VendorName
    base_url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://\S+$")
    token: SecretStr = SecretStr("")
    #: The vendor's account id: GeWe appId, legacy appid, E云 wId, ohwxapi sender wxid.
    instance: str = Field(min_length=1, max_length=256)
    #: Vendor quirks, e.g. ``{"ecloud_app_endpoint": "sendApp"}`` for E云 deployments without sendApplet.
    options: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendResult:
    """A vendor's answer to a successful send, normalized. Ids are exact Python ints (64-bit safe)."""

    vendor: str
    to: str
    endpoint: str
    msg_id: int | None = None
    new_msg_id: int | None = None
    client_msg_id: str | None = None
    create_time: int | None = None
    msg_type: int | None = None
    #: what a vendor answers about the media it fetched, worth keeping for a later forward (GeWe postImage:
    #: ``aes_key``, ``file_id``, ``md5``; 发送图片消息.md): stored with the job, never needed to revoke
    media: Mapping[str, str] = field(default_factory=dict)

    @property
    def has_ids(self) -> bool:
        """False when the vendor answered success without ids (E云 ``/sendApp``: ``data: null``)."""
        return self.new_msg_id is not None or self.msg_id is not None or self.client_msg_id is not None

    def ids_as_strings(self) -> dict[str, str | None]:
        """Ids as strings, for JSON consumers that would round 64-bit numbers."""
        return {
            "msg_id": _str_or_none(self.msg_id),
            "new_msg_id": _str_or_none(self.new_msg_id),
            "client_msg_id": self.client_msg_id,
            "create_time": _str_or_none(self.create_time),
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field, ids as strings, media facts flat."""
        data = asdict(self)
        data.update(self.ids_as_strings())
        data.update(data.pop("media"))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SendResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            vendor=str(data.get("vendor", "")),
            to=str(data["to"]),
            endpoint=str(data.get("endpoint", "")),
            msg_id=as_int(data.get("msg_id")),
            new_msg_id=as_int(data.get("new_msg_id")),
            client_msg_id=None if data.get("client_msg_id") is None else str(data["client_msg_id"]),
            create_time=as_int(data.get("create_time")),
            msg_type=as_int(data.get("msg_type")),
            media={name: str(data[name]) for name in MEDIA_FIELDS if data.get(name)},
        )


#: The media facts a send may answer (GeWe postImage), as the job stores them.
MEDIA_FIELDS = ("aes_key", "file_id", "md5")


def _str_or_none(value: int | None) -> str | None:
    return None if value is None else str(value)


def as_int(value: Any) -> int | None:
    """An exact int from a vendor field (int or digit string). Floats above 2**53 are already wrong: None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.lstrip("-").isdigit():
            return int(stripped)
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return None


#: A vendor's whole contact list in one answer: WeChat allows 10,000 friends, plus groups and public
#: accounts; any other answer keeps the small limits.
CONTACT_LIST_LIMITS = jsonsafe.JsonLimits(depth=32, keys=1_000, items=100_000, values=500_000)
#: ... and its size: 10,000 ids are ≈ 0.3 MB, past the 1 MB every other answer is cut at.
CONTACT_LIST_MAX_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ContactList:
    """The ids an account keeps: friends, groups saved to its contacts, public accounts (``gh_…``)."""

    friends: list[str]
    chatrooms: list[str]
    ghs: list[str]


@dataclass(frozen=True, slots=True)
class ContactDetail:
    """One contact's details as a vendor answered them (label ids as the vendor numbers them)."""

    wxid: str
    nickname: str
    remark: str = ""
    labels: tuple[str, ...] = ()
    members: int | None = None


def id_list(value: Any) -> list[str]:
    """A vendor's list of ids (strings), whatever else it holds dropped."""
    if not isinstance(value, list):
        return []
    return [str(v) for v in value if isinstance(v, str | int) and not isinstance(v, bool) and str(v)]


def contact_details(data: Any) -> list[ContactDetail]:
    """GeWe ``getBriefInfo`` and E云 ``getContact`` answer the same list: ``[{userName, nickName, remark,
    labelList}]``."""
    return [
        ContactDetail(
            wxid=str(item.get("userName")),
            nickname=str(item.get("nickName") or ""),
            remark=str(item.get("remark") or ""),
            labels=label_ids(item.get("labelList")),
        )
        for item in (data if isinstance(data, list) else [])
        if isinstance(item, dict) and item.get("userName")
    ]


def member_count(data: Any) -> int | None:
    """A group's member count from a member-list answer: the list itself, or ``memberList`` in an object."""
    if isinstance(data, dict):
        data = data.get("memberList")
    return len(data) if isinstance(data, list) else None


def label_ids(value: Any) -> tuple[str, ...]:
    """``labelList`` as GeWe and E云 answer it: label ids, comma-separated ("1,3"), or empty."""
    if isinstance(value, list):
        return tuple(str(v) for v in value if str(v))
    if isinstance(value, str | int) and not isinstance(value, bool):
        return tuple(part.strip() for part in str(value).split(",") if part.strip())
    return ()


@runtime_checkable
class VendorBackend(Protocol):
    """One sending account at one vendor."""

    name: ClassVar[str]

    def send(self, to: str, message: SingleMessage) -> SendResult:
        """Send one message to one recipient (wxid or ``…@chatroom``)."""
        ...

    def revoke(self, sent: SendResult) -> None:
        """Take back a message this account sent (vendors allow about two minutes)."""
        ...

    def check_online(self) -> bool | None:
        """True/False when the vendor can tell; None when it has no documented check."""
        ...

    def set_callback(self, url: str) -> None:
        """Ask the vendor to post its callbacks (replies, contact changes, offline notices) to ``url``."""
        ...


# --- failure classification ------------------------------------------------------------------------
# Texts come from the vendors' answers collected in vendors.md (GeWe: Devo919/Gewechat issues #36, #176,
# #199, #224, #263; E云: wkteam.cn pages; MagicCgi: channg.gitbook.io/ohwxapi). Order matters: a text can
# carry markers of two classes ("发送消息过于频繁，等待对方接收你的好友请求后再发" is a recipient who is not a
# friend yet, despite 频繁), so the classes are checked from the most specific verdict to the least:
# account down, daily cap, permanent, then throttled.

_ACCOUNT_DOWN = (
    "不可用或已过期",
    "已过期",
    "已离线",
    "离线",
    "设备不存在",
    "未登录",
    "登录失效",
    "请先登录",
    "token 无效",
    "invalid token",
    # GeWe's answer to a request without its token header (hanfangyuan4396/dify-on-wechat#340): the
    # account's token is missing, so every send from it fails the same way
    "x-gewe-token 不可为空",
)
#: The mini-program cap (about 500 a day to groups): wechaty/python-wechaty#133. GeWe's own spelling
#: (``发送小程序失败`` with ``data.code "-2"``) needs the code too and is recognised in gewe.py.
_DAILY_CAP = ("too many attempts",)
#: A recipient who is not a friend (yet): permanent, and suppressed for the account (issue 19).
_NOT_FRIEND = (
    "等待对方接收你的好友请求",
    "等待对方接受你的好友请求",  # 接受 as well as 接收 (youfou/wxpy#21)
    "不是你的好友",
    "不是好友",
    "非好友",
)
_PERMANENT = (
    "不在群",
    "不是群成员",
    "移出该群",
    "移出群聊",
    "被禁言",
    "已解散",
    "群不存在",
    "参数错误",
    "参数",
    "上限",
    "拉黑",
    "拒收",
    "xml",
    "不能为空",
    "invalid",
)
_THROTTLED = (
    "频率过快",
    "频率过高",
    "频率限制",
    "过于频繁",
    "操作频繁",
    "频繁",
    "rate limit",
    "too many",
)

#: The vendor itself does not know whether WeChat took the message: its own call timed out or broke.
#: Retrying such an answer is exactly the blind resend the first promise forbids: an unknown outcome.
_UNKNOWN = ("超时", "timeout", "timed out", "网络异常")

#: GeWe echoes the token it refused (``HTTP HEADER: X-GEWE-TOKEN=<token> 不可用或已过期``, Devo919/Gewechat#263);
#: redaction by value covers the configured token, this covers whatever the header carried.
_TOKEN_ECHO = re.compile(r"(X-GEWE-TOKEN\s*[=:]\s*)(?!\*\*\*)[^\s,;]+", re.IGNORECASE)


def classify_vendor_text(text: str) -> type[VendorError]:
    """Map a vendor's failure text (usually Chinese) to an error class; unknown text is a generic failure.
    Order matters: account down, daily cap, permanent (it was refused), then "the vendor timed out" (it may
    have been sent), then throttled."""
    lowered = text.lower()
    for markers, cls in (
        (_ACCOUNT_DOWN, AccountDownError),
        (_DAILY_CAP, DailyCapError),
        (_NOT_FRIEND, NotFriendError),
        (_PERMANENT, PermanentError),
        (_UNKNOWN, AmbiguousError),
        (_THROTTLED, ThrottledError),
    ):
        if any(marker.lower() in lowered for marker in markers):
            return cls
    return VendorFailure


def require_revoke_ids(vendor: str, ids: Mapping[str, int | None], *, zero_ok: tuple[str, ...] = ()) -> None:
    """Refuse a revoke before it is sent when an id the vendor needs is missing or zero.

    A guessed id is worse than no revoke: GeWe answers "操作成功" to a wrong id and does nothing
    (Devo919/Gewechat#70, #166). ``zero_ok`` names ids the vendor itself returns as 0 (GeWe text: msgId).
    """
    missing = tuple(name for name, value in ids.items() if value is None or (value == 0 and name not in zero_ok))
    if missing:
        raise RevokeRefusedError(
            f"{vendor}: cannot revoke without {', '.join(missing)} (missing or 0 in the send's answer); "
            "nothing was sent to the vendor",
            vendor=vendor,
            missing=missing,
        )


def scrub_token_echo(text: str) -> str:
    """The text with any echoed ``X-GEWE-TOKEN=…`` value replaced by ``***``."""
    return _TOKEN_ECHO.sub(r"\1***", text)


@functools.lru_cache(maxsize=4096)
def _vendor_url(url: str) -> httpx.URL:
    """A vendor endpoint's parsed URL, shared by every session of the process: httpx's URL parser costs as
    much as the rest of building a request, and each session's backend is new while its endpoints are not."""
    return httpx.URL(url)


class HttpBackend:
    """Shared HTTP plumbing: one POST, httpx errors translated, JSON envelope parsed exactly."""

    name: ClassVar[str] = ""
    #: A key every answer of this vendor carries (``ret``, ``code``…): a JSON body without it came from
    #: something else (a proxy, a gateway's error page) and says nothing about the send.
    envelope_key: ClassVar[str] = ""
    #: The message kinds this vendor documents a way to send (``KINDS`` in ``worker.vendors``): any other
    #: kind is refused at submission (422 naming kind and vendor), never dead-lettered later.
    kinds: ClassVar[frozenset[str]] = frozenset({"text", "miniprogram", "appmsg", "link"})
    #: False for a vendor without a documented revoke: a recall reports its messages ``unsupported``
    #: without calling it (its ``revoke`` raises UnsupportedError).
    can_revoke: ClassVar[bool] = True
    #: True for a vendor with documented contact calls (``contact_*``); the API answers 409
    #: ``contacts_unsupported`` for the others before anything is called.
    can_sync_contacts: ClassVar[bool] = False
    #: Ids the vendor details in one call, as documented (an account option ``contacts_batch`` may raise it
    #: where a deployment accepts more).
    contact_batch: ClassVar[int] = 20

    def contact_labels(self) -> list[tuple[str, str]]:
        """The account's labels: (id, name)."""
        raise UnsupportedError(f"{self.name}: no documented contact calls", vendor=self.name)

    def contact_list(self, *, first: bool, timeout_s: float) -> ContactList | None:
        """The ids the account keeps; None while the vendor is still gathering them (ask again with
        ``first=False``: GeWe's list cache, E云's list after its init)."""
        raise UnsupportedError(f"{self.name}: no documented contact calls", vendor=self.name)

    def contact_details(self, ids: list[str]) -> list[ContactDetail]:
        """Names, remarks and labels of up to :attr:`contact_batch` ids (friends or groups)."""
        raise UnsupportedError(f"{self.name}: no documented contact calls", vendor=self.name)

    def contact_room_members(self, room: str) -> int | None:
        """How many members a group has (its member list's length; None when the answer has no list)."""
        raise UnsupportedError(f"{self.name}: no documented contact calls", vendor=self.name)

    def set_callback(self, url: str) -> None:
        """Vendors without a documented callback registration: nothing is sent."""
        raise UnsupportedError(f"{self.name} has no documented callback registration", vendor=self.name)

    def __init__(self, account: VendorAccount, client: httpx.Client) -> None:
        if account.vendor != self.name:
            raise ConfigError(f"account is for vendor {account.vendor!r}, not {self.name!r}")
        self.account = account
        self.client = client
        self._base = account.base_url.rstrip("/")
        #: the vendor client's direct path (worker.runtime.http11.VendorClient): no cookie jar kept across
        #: accounts, no redirects; any other client (a test's) goes through ``Client.send``
        self._send_direct: Callable[[httpx.Request], httpx.Response] | None = getattr(client, "send_direct", None)

    def _headers(self) -> dict[str, str]:
        return {}

    def _fail(self, cls: type[VendorError], text: str, **kw: Any) -> VendorError:
        secret = self.account.token.get_secret_value()
        return cls(redact(text, [secret]), vendor=self.name, **kw)

    def failure(self, text: str, *, code: str | None = None, cls: type[VendorError] | None = None) -> VendorError:
        """The error for a vendor failure answer, classified from its text unless ``cls`` is given."""
        text = scrub_token_echo(text)
        return self._fail(cls or classify_vendor_text(text), text or "vendor reported failure", code=code)

    def camel_case_result(self, data: Any, *, to: str, to_key: str, endpoint: str) -> SendResult:
        """GeWe and E云 answer ``{msgId, newMsgId, createTime, type, <to_key>}``; ``data`` may be null."""
        data = data if isinstance(data, dict) else {}
        return SendResult(
            vendor=self.name,
            to=str(data.get(to_key) or to),
            endpoint=endpoint,
            msg_id=as_int(data.get("msgId")),
            new_msg_id=as_int(data.get("newMsgId")),
            create_time=as_int(data.get("createTime")),
            msg_type=as_int(data.get("type")),
        )

    def post(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        params: Mapping[str, str] | None = None,
        read_timeout_s: float | None = None,
        large: bool = False,
    ) -> Any:
        """POST JSON, return the decoded JSON envelope (ints exact) or raise a classified VendorError.
        ``read_timeout_s``: a shorter wait for the answer than the client's (a slow call with a fallback);
        ``large``: an answer listing a whole address book (up to :data:`CONTACT_LIST_LIMITS`)."""
        try:
            content = json.dumps(body, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError (a lone surrogate) is a ValueError
            # raised before anything was written: the message cannot be sent as it is, and never was
            raise MessageError(f"{path}: the request body cannot be encoded ({type(exc).__name__})") from None
        # built here and sent with Client.send: the client adds nothing a vendor call needs (no cookies,
        # no auth flow, no redirects), and merging its default headers cost more CPU than the rest
        timeout = self.client.timeout.as_dict()
        if read_timeout_s is not None:
            timeout["read"] = min(timeout.get("read") or read_timeout_s, read_timeout_s)
        try:
            url = _vendor_url(f"{self._base}{path}")
            if params:
                url = url.copy_merge_params(params)
            # the whole head given, and the body as a stream: httpx adds nothing (``Host``, the length and
            # the type are what ``content=`` would add, one header at a time, at a tenth of a unit per call)
            headers = [
                ("Host", url.netloc.decode("ascii")),
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(content))),
                *self._headers().items(),
            ]
            request = httpx.Request(
                "POST", url, headers=headers, stream=httpx.ByteStream(content), extensions={"timeout": timeout}
            )
            direct = self._send_direct
            response = direct(request) if direct is not None else self.client.send(request, stream=True)
            try:
                answer = _read_at_most(response, CONTACT_LIST_MAX_BYTES if large else MAX_ANSWER_BYTES)
            finally:
                response.close()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise self._fail(TransientError, f"{path}: not sent, {type(exc).__name__}: {exc}") from None
        except (httpx.WriteTimeout, httpx.WriteError) as exc:
            # the body did not get out whole: the vendor cannot have acted on it
            raise self._fail(TransientError, f"{path}: request not fully sent, {type(exc).__name__}") from None
        except httpx.ReadTimeout as exc:  # we stopped waiting (timeout or deadline): it may still be working
            raise self._fail(
                AbandonedError, f"{path}: request sent, no answer in time ({type(exc).__name__}): outcome unknown"
            ) from None
        except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
            raise self._fail(
                AmbiguousError, f"{path}: request sent, no answer ({type(exc).__name__}): outcome unknown"
            ) from None
        except (_UnreadableAnswer, httpx.DecodingError) as exc:
            raise self._fail(AmbiguousError, f"{path}: request sent, {exc}: outcome unknown") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError, UnicodeEncodeError) as exc:
            # the request could not even be built: the account's configuration is wrong, retrying cannot help
            raise self._fail(PermanentError, f"{path}: cannot build the request ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise self._fail(TransientError, f"{path}: {type(exc).__name__}: {exc}") from None
        if answer is None:
            raise self._fail(
                AmbiguousError,
                f"{path}: HTTP {response.status_code}, an answer over "
                f"{CONTACT_LIST_MAX_BYTES if large else MAX_ANSWER_BYTES} bytes: outcome unknown",
                http_status=response.status_code,
            )
        return self._decode(path, response.status_code, answer, CONTACT_LIST_LIMITS if large else None)

    def _decode(self, path: str, status: int, content: bytes, limits: jsonsafe.JsonLimits | None = None) -> Any:
        if status == 429:
            raise self._fail(ThrottledError, f"{path}: HTTP 429 too many requests", http_status=status)
        try:
            # a nested answer is no envelope: refused unparsed (a whole address book has wider bounds)
            data = jsonsafe.loads(content) if limits is None else jsonsafe.loads(content, limits)
        except ValueError:
            data = None
        reset = _ENVOY_RESET.search(content[:4096]) if status == 503 else None
        if reset and reset.group(1).strip() not in _ENVOY_NOT_FORWARDED:
            raise self._fail(
                AmbiguousError,
                f"{path}: HTTP 503 from a proxy after a reset of the vendor's connection "
                f"({reset.group(1).decode().strip()}): the request may have reached it, outcome unknown",
                http_status=status,
            )
        if status >= 500 and status not in NOT_FORWARDED:
            # a gateway's 502/504 page may well be JSON, even with the vendor's own key in it: a 5xx never
            # says the send did not happen
            raise self._fail(
                AmbiguousError,
                f"{path}: HTTP {status} from the vendor or a gateway: the vendor may have carried it out, outcome unknown",
                http_status=status,
            )
        if isinstance(data, dict) and (not self.envelope_key or self.envelope_key in data):
            return data
        if status in NOT_FORWARDED:
            raise self._fail(TransientError, f"{path}: HTTP {status}, not forwarded to the vendor", http_status=status)
        if status in (401, 403):
            raise self._fail(AccountDownError, f"{path}: HTTP {status} unauthorized", http_status=status)
        if status == 404:
            raise self._fail(PermanentError, f"{path}: HTTP 404, check base_url", http_status=status)
        if 400 <= status < 500:
            raise self._fail(PermanentError, f"{path}: HTTP {status} without envelope", http_status=status)
        # 2xx with a garbled body, 502/504 from a gateway, any other 5xx: the vendor may have sent already
        raise self._fail(
            AmbiguousError,
            f"{path}: HTTP {status} without the vendor's JSON envelope: the vendor may have carried it out, outcome unknown",
            http_status=status,
        )


class _UnreadableAnswer(Exception):
    """The answer's body arrived but cannot be decoded (a broken or unknown Content-Encoding)."""


#: zlib window bits for the content codings a vendor may use (RFC 9110 §8.4.1): gzip framing, zlib framing.
_CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _read_at_most(response: httpx.Response, limit: int) -> bytes | None:
    """The answer's body, decoded, or None when it is longer than ``limit`` bytes (read and inflate no further).

    Decoded here rather than by httpx: its decoders inflate a whole received chunk at once, so a few KB of
    gzip could grow to gigabytes before the limit is looked at; here a chunk inflates to at most ``limit``."""
    coding = response.headers.get("content-encoding", "").strip().lower()
    inflate = None
    if coding not in ("", "identity"):
        wbits = _CODINGS.get(coding)
        if wbits is None:
            raise _UnreadableAnswer(f"an answer in {coding[:40]!r}, an encoding it cannot read")
        inflate = zlib.decompressobj(wbits)
    body = bytearray()
    try:
        for chunk in response.iter_raw():
            if inflate is not None:
                chunk = inflate.decompress(chunk, limit + 1 - len(body))
                if inflate.unconsumed_tail:  # more would come out than the limit allows
                    return None
            body += chunk
            if len(body) > limit:
                return None
        if inflate is not None:
            body += inflate.flush(limit + 1 - len(body))
            if len(body) > limit:
                return None
            if not inflate.eof:
                raise _UnreadableAnswer(f"a {coding} answer cut short")
    except zlib.error:
        raise _UnreadableAnswer(f"a broken {coding} answer") from None
    return bytes(body)


BackendFactory = Callable[[VendorAccount, httpx.Client], VendorBackend]
_REGISTRY: dict[str, BackendFactory] = {}


def register(name: VendorName) -> Callable[[type[HttpBackend]], type[HttpBackend]]:
    """Class decorator: make a backend available by vendor name."""

    def decorate(cls: type[HttpBackend]) -> type[HttpBackend]:
        cls.name = name
        _REGISTRY[name] = cls  # type: ignore[assignment]
        return cls

    return decorate


def backend_for(account: VendorAccount, client: httpx.Client) -> VendorBackend:
    """Build the backend for an account's vendor."""
    import worker.vendors  # noqa: F401  (registers the four backends)

    try:
        factory = _REGISTRY[account.vendor]
    except KeyError:
        raise ConfigError(f"unknown vendor {account.vendor!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return factory(account, client)


def vendors_without_revoke() -> list[str]:
    """Vendors whose messages cannot be revoked (no documented revoke)."""
    import worker.vendors  # noqa: F401

    return sorted(name for name, factory in _REGISTRY.items() if not getattr(factory, "can_revoke", True))


def vendors_with_contacts() -> list[str]:
    """Vendors with documented contact calls (a contact sync is refused for the others)."""
    import worker.vendors  # noqa: F401

    return sorted(name for name, factory in _REGISTRY.items() if getattr(factory, "can_sync_contacts", False))


def registered_vendors() -> list[str]:
    """Names of the registered backends (the same as :data:`VendorName`; ``tests/repo/test_layout.py`` checks)."""
    import worker.vendors  # noqa: F401

    return sorted(_REGISTRY)
