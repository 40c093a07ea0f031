"""HTTP edge cases of the four vendor backends, with respx: transport errors, odd bodies, exact ids."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx

from worker.errors import (
    AbandonedError,
    AccountDownError,
    AmbiguousError,
    DailyCapError,
    MessageError,
    NotFriendError,
    PermanentError,
    RevokeRefusedError,
    ThrottledError,
    TransientError,
    VendorError,
    VendorFailure,
)
from worker.messages import AppMsgMessage, TextMessage, parse_message
from worker.vendors import SendResult, VendorAccount, VendorBackend, backend_for, ecloud
from worker.vendors.base import classify_vendor_text

VENDORS = ["gewe", "gewe-legacy", "ecloud", "ohwxapi"]
BASE = "http://vendor.invalid"
PREFIX = {"gewe": "/gewe/v2/api", "gewe-legacy": "", "ecloud": "", "ohwxapi": ""}
#: The path each vendor posts a text message to.
TEXT_PATH = {
    "gewe": "/message/postText",
    "gewe-legacy": "/api/message/sendmsg",
    "ecloud": "/sendText",
    "ohwxapi": "/v2/api",
}
TOKEN = "SEKRIT-tok-8f3a9c41d2"
TO = "wxid_friend_001"
BIG_ID = 7645748705605226305
MESSAGE = TextMessage(text="你好")


def success_body(vendor: str, new_msg_id: Any = BIG_ID) -> dict[str, Any]:
    """A vendor's success envelope carrying ``new_msg_id`` as given (int, str, float...)."""
    if vendor == "gewe":
        data = {"toWxid": TO, "createTime": 1700000000, "msgId": 769533801, "newMsgId": new_msg_id, "type": 1}
        return {"ret": 200, "msg": "操作成功", "data": data}
    if vendor == "ecloud":
        data = {"wcId": TO, "createTime": 1700000000, "msgId": 769533801, "newMsgId": new_msg_id, "type": 1}
        return {"code": "1000", "message": "处理成功", "data": data}
    if vendor == "gewe-legacy":
        entry = {
            "Ret": 0,
            "ToUsetName": {"string": TO},
            "MsgId": 769533801,
            "NewMsgId": new_msg_id,
            "Createtime": 1700000000,
            "NewClientMsgid": 1700000000123,
            "Type": 1,
        }
        return {"ret": 0, "msg": "ok", "data": {"Count": 1, "List": [entry]}}
    data = {"MsgId": 769533801, "NewMsgId": new_msg_id, "ClientMsgId": "c-1", "CreateTime": 1700000000}
    return {"CgiBaseResponse": {"Ret": 0, "ErrMsg": ""}, "ResponseData": data}


def failure_body(vendor: str, text: str) -> dict[str, Any]:
    """A vendor's failure envelope with ``text`` as its reason."""
    if vendor == "gewe":
        return {"ret": 500, "msg": text, "data": None}
    if vendor == "ecloud":
        return {"code": "1001", "message": text, "data": None}
    if vendor == "gewe-legacy":
        return {"ret": -1, "msg_err": text}
    return {"CgiBaseResponse": {"Ret": -1, "ErrMsg": text}}


@pytest.fixture
def router() -> Iterator[respx.Router]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:
        yield mock


def make_backend(vendor: str, token: str = TOKEN) -> tuple[VendorBackend, httpx.Client]:
    account = VendorAccount(vendor=vendor, base_url=BASE + PREFIX[vendor], token=token, instance="inst_42")  # type: ignore[arg-type]
    client = httpx.Client(timeout=5)
    return backend_for(account, client), client


def send_with(router: respx.Router, vendor: str, **mock: Any) -> SendResult:
    route = router.post(BASE + PREFIX[vendor] + TEXT_PATH[vendor])
    route.mock(**mock)
    backend, client = make_backend(vendor)
    with client:
        result = backend.send(TO, MESSAGE)
    assert route.call_count == 1
    return result


def send_error(router: respx.Router, vendor: str, **mock: Any) -> VendorError:
    with pytest.raises(VendorError) as info:
        send_with(router, vendor, **mock)
    assert info.value.vendor == vendor
    shown = str(info.value) + json.dumps(info.value.to_dict(), ensure_ascii=False)
    assert TOKEN not in shown
    assert not [form for form in ECHO_FORMS if form in shown], shown
    return info.value


# --- the happy path over respx, and what was sent -----------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_success_gives_exact_int_ids_and_the_request_carries_the_token(router: respx.Router, vendor: str) -> None:
    route = router.post(BASE + PREFIX[vendor] + TEXT_PATH[vendor]).respond(200, json=success_body(vendor))
    backend, client = make_backend(vendor)
    with client:
        result = backend.send(TO, MESSAGE)

    assert (result.vendor, result.to, result.new_msg_id, result.msg_id) == (vendor, TO, BIG_ID, 769533801)
    assert result.create_time == 1700000000
    assert result.ids_as_strings()["new_msg_id"] == "7645748705605226305"
    request = route.calls.last.request
    body = json.loads(request.content)
    auth = {
        "gewe": ("X-GEWE-TOKEN", TOKEN),
        "gewe-legacy": ("X-GEWE-TOKEN", TOKEN),
        "ecloud": ("Authorization", TOKEN),
        "ohwxapi": ("Authorization", f"Bearer {TOKEN}"),
    }[vendor]
    assert request.headers[auth[0]] == auth[1]
    assert "你好" in json.dumps(body, ensure_ascii=False)
    if vendor == "ohwxapi":
        assert request.url.params["funcname"] == "MagicCgi" and request.url.params["wxid"] == "inst_42"
        assert body["CgiCmd"] == 522


# --- transport errors ---------------------------------------------------------------------------------


# What may have reached the vendor is an unknown outcome (docs/design.md, "What may have reached the vendor").
GARBLED_ANSWERS = {
    "200 html": httpx.Response(200, text="<html><body>502 Bad Gateway</body></html>"),
    "200 truncated json": httpx.Response(200, text='{"ret": 200, "data": {"newMsgId": 76457'),
    "200 json from a proxy": httpx.Response(200, json={"error": "upstream reset"}),
    "502 html": httpx.Response(502, text="<html>Bad Gateway</html>"),
    "504 html": httpx.Response(504, text="<html>Gateway Time-out</html>"),
    "504 json from a proxy": httpx.Response(504, json={"message": "gateway timeout"}),
    "500 html": httpx.Response(500, text="<html>oops</html>"),
    # a gateway's JSON error page carrying every vendor's own key: a 5xx never proves the send did not happen
    "504 json with the vendor's keys": httpx.Response(
        504, json={"ret": 504, "code": 504, "CgiBaseResponse": {"Ret": 504}, "message": "Gateway Time-out"}
    ),
    "502 json with the vendor's keys": httpx.Response(
        502, json={"ret": 502, "code": "502", "CgiBaseResponse": {"Ret": 502}, "msg": "Bad Gateway"}
    ),
}


@pytest.mark.parametrize("answer", list(GARBLED_ANSWERS))
@pytest.mark.parametrize("vendor", VENDORS)
def test_an_answer_without_the_vendors_envelope_is_an_unknown_outcome(
    router: respx.Router, vendor: str, answer: str
) -> None:
    response = GARBLED_ANSWERS[answer]
    error = send_error(router, vendor, return_value=response)
    assert type(error) is AmbiguousError, error
    assert error.http_status == response.status_code and "outcome unknown" in str(error)


@pytest.mark.parametrize("status", [503, 408])
@pytest.mark.parametrize("vendor", VENDORS)
def test_statuses_answered_before_forwarding_are_transient(router: respx.Router, vendor: str, status: int) -> None:
    error = send_error(router, vendor, return_value=httpx.Response(status, text="<html>unavailable</html>"))
    assert type(error) is TransientError and error.http_status == status


ENVOY = "upstream connect error or disconnect/reset before headers. {}reset reason: {}"


@pytest.mark.parametrize(
    ("body", "forwarded"),
    [
        (ENVOY.format("", "connection termination"), True),  # 503 UC: the request was written upstream
        (ENVOY.format("retried and the latest ", "remote reset"), True),
        (ENVOY.format("", "local reset"), True),
        (ENVOY.format("", "connection failure") + ", transport failure reason: delayed connect error: 111", False),
        (ENVOY.format("", "overflow"), False),  # the circuit breaker held it back
        ("no healthy upstream", False),
    ],
)
@pytest.mark.parametrize("vendor", ["gewe", "ecloud"])
def test_envoys_503_after_a_reset_of_the_vendors_connection_is_an_unknown_outcome(
    router: respx.Router, vendor: str, body: str, forwarded: bool
) -> None:
    error = send_error(router, vendor, return_value=httpx.Response(503, text=body))
    assert type(error) is (AmbiguousError if forwarded else TransientError), error
    assert error.http_status == 503


@pytest.mark.parametrize("vendor", VENDORS)
def test_read_timeout_is_ambiguous(router: respx.Router, vendor: str) -> None:
    error = send_error(router, vendor, side_effect=httpx.ReadTimeout)
    # abandoned unanswered: still an unknown outcome (the account also cools down, see tests/e2e/test_media.py)
    assert type(error) is AbandonedError and isinstance(error, AmbiguousError)
    assert "outcome unknown" in str(error)


@pytest.mark.parametrize("vendor", VENDORS)
def test_remote_protocol_error_is_ambiguous(router: respx.Router, vendor: str) -> None:
    error = send_error(router, vendor, side_effect=httpx.RemoteProtocolError("peer closed connection"))
    assert type(error) is AmbiguousError


@pytest.mark.parametrize("vendor", VENDORS)
def test_connect_error_is_transient(router: respx.Router, vendor: str) -> None:
    error = send_error(router, vendor, side_effect=httpx.ConnectError)
    assert type(error) is TransientError
    assert "not sent" in str(error)


@pytest.mark.parametrize("vendor", VENDORS)
def test_connect_timeout_and_pool_timeout_are_transient(router: respx.Router, vendor: str) -> None:
    assert type(send_error(router, vendor, side_effect=httpx.ConnectTimeout)) is TransientError
    router.reset()
    assert type(send_error(router, vendor, side_effect=httpx.PoolTimeout)) is TransientError


@pytest.mark.parametrize("vendor", VENDORS)
def test_http_429_is_throttled(router: respx.Router, vendor: str) -> None:
    error = send_error(router, vendor, return_value=httpx.Response(429, text="slow down"))
    assert type(error) is ThrottledError and error.http_status == 429


@pytest.mark.parametrize("vendor", VENDORS)
def test_http_429_is_throttled_even_with_a_json_body(router: respx.Router, vendor: str) -> None:
    error = send_error(router, vendor, return_value=httpx.Response(429, json=success_body(vendor)))
    assert type(error) is ThrottledError


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("status", [401, 403])
def test_plain_http_401_and_403_mean_account_down(router: respx.Router, vendor: str, status: int) -> None:
    error = send_error(router, vendor, return_value=httpx.Response(status, text="Unauthorized"))
    assert type(error) is AccountDownError and error.http_status == status


@pytest.mark.parametrize("vendor", VENDORS)
def test_plain_http_404_is_permanent(router: respx.Router, vendor: str) -> None:
    error = send_error(router, vendor, return_value=httpx.Response(404, text="Not Found"))
    assert type(error) is PermanentError and error.http_status == 404
    assert "base_url" in str(error)


# --- vendor envelopes ---------------------------------------------------------------------------------


def test_ecloud_accepts_code_1000_as_an_int(router: respx.Router) -> None:
    body = success_body("ecloud")
    body["code"] = 1000
    result = send_with(router, "ecloud", return_value=httpx.Response(200, json=body))
    assert result.new_msg_id == BIG_ID and result.has_ids


def test_ecloud_success_with_null_data_is_a_success_without_ids(router: respx.Router) -> None:
    result = send_with(router, "ecloud", return_value=httpx.Response(200, json={"code": 1000, "data": None}))
    assert result.has_ids is False and result.to == TO and result.endpoint == "sendText"


def test_ecloud_code_as_int_1001_is_still_a_failure(router: respx.Router) -> None:
    error = send_error(
        router, "ecloud", return_value=httpx.Response(200, json={"code": 1001, "message": "不是你的好友"})
    )
    assert type(error) is NotFriendError and error.code == "1001"


def test_gewe_new_msg_id_as_a_digit_string_is_parsed_exactly(router: respx.Router) -> None:
    body = success_body("gewe", new_msg_id="7645748705605226305")
    body["data"]["msgId"] = "769533801"
    result = send_with(router, "gewe", return_value=httpx.Response(200, json=body))
    assert result.new_msg_id == 7645748705605226305
    assert result.msg_id == 769533801
    assert result.ids_as_strings()["new_msg_id"] == "7645748705605226305"


def test_gewe_ret_as_a_string_is_accepted(router: respx.Router) -> None:
    body = success_body("gewe")
    body["ret"] = "200"
    assert send_with(router, "gewe", return_value=httpx.Response(200, json=body)).new_msg_id == BIG_ID


@pytest.mark.parametrize("vendor", VENDORS)
def test_big_ids_as_json_integers_are_exact(router: respx.Router, vendor: str) -> None:
    raw = json.dumps(success_body(vendor, new_msg_id=BIG_ID))
    assert "7645748705605226305" in raw
    result = send_with(router, vendor, return_value=httpx.Response(200, content=raw.encode()))
    assert result.new_msg_id == BIG_ID


@pytest.mark.parametrize("vendor", VENDORS)
def test_float_ids_beyond_2_53_are_not_trusted(router: respx.Router, vendor: str) -> None:
    raw = json.dumps(success_body(vendor, new_msg_id="__ID__")).replace('"__ID__"', "7645748705605226305.0")
    result = send_with(router, vendor, return_value=httpx.Response(200, content=raw.encode()))
    assert result.new_msg_id is None  # 7.645748705605226e18 is already a different number
    assert result.msg_id == 769533801


@pytest.mark.parametrize("vendor", VENDORS)
def test_small_integral_float_ids_are_kept(router: respx.Router, vendor: str) -> None:
    result = send_with(router, vendor, return_value=httpx.Response(200, json=success_body(vendor, 123456789.0)))
    assert result.new_msg_id == 123456789


def test_legacy_recipient_ret_nonzero_raises_even_when_the_envelope_says_ok(router: respx.Router) -> None:
    body = success_body("gewe-legacy")
    body["data"]["List"][0].update(Ret=-44, ErrMsg="对方不是你的好友")
    error = send_error(router, "gewe-legacy", return_value=httpx.Response(200, json=body))
    assert type(error) is NotFriendError and error.code == "-44"


def test_legacy_recipient_ret_nonzero_with_unknown_text_is_a_generic_failure(router: respx.Router) -> None:
    body = success_body("gewe-legacy")
    body["data"]["List"][0].update(Ret="-1", ErrMsg="")
    error = send_error(router, "gewe-legacy", return_value=httpx.Response(200, json=body))
    assert type(error) is VendorFailure and error.code == "-1"


def test_legacy_picks_the_entry_of_its_own_recipient(router: respx.Router) -> None:
    body = success_body("gewe-legacy")
    other = {"Ret": -44, "ErrMsg": "不是好友", "ToUsetName": {"string": "wxid_other"}, "NewMsgId": 1}
    body["data"]["List"].insert(0, other)
    result = send_with(router, "gewe-legacy", return_value=httpx.Response(200, json=body))
    assert result.new_msg_id == BIG_ID and result.client_msg_id == "1700000000123"


@pytest.mark.parametrize(
    ("vendor", "text", "expected"),
    [
        ("gewe", "微信已离线", AccountDownError),
        ("ecloud", "操作过于频繁", ThrottledError),
        ("gewe-legacy", "群不存在", PermanentError),
        ("ohwxapi", "系统繁忙", VendorFailure),
    ],
)
def test_vendor_failure_texts_are_classified(
    router: respx.Router, vendor: str, text: str, expected: type[VendorError]
) -> None:
    error = send_error(router, vendor, return_value=httpx.Response(200, json=failure_body(vendor, text)))
    assert type(error) is expected
    assert text in str(error)


# --- the token never leaks into an error ------------------------------------------------------------------


ECHOES: dict[str, Callable[[str], dict[str, Any]]] = {
    "envelope": lambda vendor: {
        "return_value": httpx.Response(200, json=failure_body(vendor, f"token {TOKEN} 已过期"))
    },
    "envelope-unknown": lambda vendor: {
        "return_value": httpx.Response(200, json=failure_body(vendor, f"bad request from {TOKEN}"))
    },
    "connect": lambda vendor: {"side_effect": httpx.ConnectError(f"cannot reach, header was {TOKEN}")},
    "transport": lambda vendor: {"side_effect": httpx.UnsupportedProtocol(f"weird {TOKEN}")},
    "read-timeout": lambda vendor: {"side_effect": httpx.ReadTimeout(f"timed out {TOKEN}")},
    "401-echo": lambda vendor: {"return_value": httpx.Response(401, text=f"token {TOKEN} rejected")},
    # the forms a vendor or a proxy may echo it in (an attacker's vendor did, 2026-12-05)
    "upper": lambda vendor: {
        "return_value": httpx.Response(200, json=failure_body(vendor, f"token {TOKEN.upper()} 不可用或已过期"))
    },
    "base64": lambda vendor: {
        "return_value": httpx.Response(200, json=failure_body(vendor, f"token {TOKEN_B64} 不可用或已过期"))
    },
    "base64-unpadded": lambda vendor: {
        "return_value": httpx.Response(200, json=failure_body(vendor, f"auth={TOKEN_B64.rstrip('=')}"))
    },
}
#: what the echo tests look for in an error, besides the token as it is
TOKEN_B64 = base64.b64encode(TOKEN.encode()).decode()
ECHO_FORMS = (TOKEN.upper(), TOKEN.lower(), TOKEN_B64, TOKEN_B64.rstrip("="))


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("case", sorted(ECHOES))
def test_error_messages_never_contain_the_token(router: respx.Router, vendor: str, case: str) -> None:
    error = send_error(router, vendor, **ECHOES[case](vendor))  # send_error asserts the token is absent
    assert str(error)  # and the error still says something


def test_vendor_text_echoing_the_token_is_redacted_not_dropped(router: respx.Router) -> None:
    error = send_error(
        router, "ecloud", return_value=httpx.Response(200, json=failure_body("ecloud", f"Authorization {TOKEN} 已过期"))
    )
    assert type(error) is AccountDownError
    assert str(error) == "Authorization *** 已过期"


# --- round 2 (issue 11): the vendors' exact documented answers ------------------------------------------


def test_ecloud_is_online_reads_data_is_online(router: respx.Router) -> None:
    """2048537793/WkApi api-wen-dang/wei-xin-guan-li/cha-xun-wei-xin-shi-fou-zai-xian.md: its examples answer
    1000 with isOnline true/false, its table says "1000成功（在线），10001失败（离线）": a failure code is offline."""
    route = router.post(f"{BASE}/isOnline")
    backend, client = make_backend("ecloud")
    with client:
        route.respond(200, json={"message": "成功", "code": "1000", "data": {"isOnline": True}})
        assert backend.check_online() is True
        route.respond(200, json={"message": "成功", "code": "1000", "data": {"isOnline": False}})
        assert backend.check_online() is False
        # the table's failure code is "offline" (the account is down), not a failed check (issue 20)
        for code in ("1001", "10001", 1001):
            route.respond(200, json={"message": "失败", "code": code, "data": None})
            assert backend.check_online() is False
        # any other code is the check itself failing: it raises
        route.respond(200, json={"message": "Authorization 不可用或已过期", "code": "1002", "data": None})
        with pytest.raises(AccountDownError):
            backend.check_online()
    assert json.loads(route.calls.last.request.content) == {"wId": "inst_42"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a recipient who has not accepted the friend request yet: permanent despite 频繁
        ("发送消息过于频繁，等待对方接收你的好友请求后再发", NotFriendError),
        ("消息发送频率过高", ThrottledError),
        ("超过群发言频率限制", ThrottledError),
        ("频率限制", ThrottledError),
        ("你已被移出该群", PermanentError),
        ("被禁言", PermanentError),
        ("群已解散", PermanentError),
        ("已解散", PermanentError),
        ("Too many attempts. Try again later", DailyCapError),
        # 接受 as well as 接收 (youfou/wxpy#21): not a friend yet, not throttling
        ("发送消息过于频繁，等待对方接受你的好友请求后再发", NotFriendError),
        # GeWe without its token header (hanfangyuan4396/dify-on-wechat#340): account down (token)
        ("header:X-GEWE-TOKEN 不可为空", AccountDownError),
    ],
)
def test_round2_failure_texts(router: respx.Router, text: str, expected: type[VendorError]) -> None:
    for vendor in ("gewe", "ecloud"):
        router.routes.clear()
        error = send_error(router, vendor, return_value=httpx.Response(200, json=failure_body(vendor, text)))
        assert type(error) is expected, (vendor, text)


def test_classifier_checks_permanent_before_throttled() -> None:
    assert classify_vendor_text("发送消息过于频繁，等待对方接收你的好友请求后再发") is NotFriendError
    assert classify_vendor_text("操作过于频繁") is ThrottledError


def test_gewe_mini_program_code_minus_2_is_the_cover_not_a_cap(router: respx.Router) -> None:
    """Devo919/Gewechat#176 ``{"ret":500,"msg":"发送小程序失败","data":{"code":"-2","msg":null}}`` is tied to the
    cover image (#182, maintainer: cover under 50 KB): a permanent failure with a hint, never a daily cap."""
    refused = {"ret": 500, "msg": "发送小程序失败", "data": {"code": "-2", "msg": None}}
    error = send_error(router, "gewe", return_value=httpx.Response(200, json=refused))
    assert type(error) is PermanentError and error.code == "-2"
    assert "50 KB" in str(error) and "封面" in str(error)
    router.routes.clear()
    other = {"ret": 500, "msg": "发送小程序失败", "data": {"code": "-1", "msg": None}}
    assert type(send_error(router, "gewe", return_value=httpx.Response(200, json=other))) is VendorFailure


@pytest.mark.parametrize(
    ("ret", "cls", "meaning"),
    [(110, PermanentError, "移出该群"), (120, PermanentError, "禁言"), (241, ThrottledError, "频率过快"),
     (299, ThrottledError, "频率限制")],
)  # fmt: skip
def test_magiccgi_ret_codes_mean_what_ajbot_reads_even_with_an_empty_errmsg(
    router: respx.Router, ret: int, cls: type[VendorError], meaning: str
) -> None:
    """SZUEA/AJBot (EAbotoy): Ret 110 removed from the group, 120 muted, 241 too fast, 299 group rate limit."""
    answer = {"CgiBaseResponse": {"ErrMsg": "", "Ret": ret}, "ResponseData": None}
    error = send_error(router, "ohwxapi", return_value=httpx.Response(200, json=answer))
    assert type(error) is cls and error.code == str(ret) and meaning in str(error)


def test_gewe_token_echo_is_redacted_even_for_a_token_we_did_not_send(router: respx.Router) -> None:
    """Devo919/Gewechat#263: ``{"ret":500,"msg":"HTTP HEADER: X-GEWE-TOKEN=<token> 不可用或已过期"}``."""
    echo = {"ret": 500, "msg": f"HTTP HEADER: X-GEWE-TOKEN={TOKEN} 不可用或已过期"}
    error = send_error(router, "gewe", return_value=httpx.Response(200, json=echo))
    assert type(error) is AccountDownError
    assert str(error) == "HTTP HEADER: X-GEWE-TOKEN=*** 不可用或已过期"
    router.routes.clear()
    stale = {"ret": 500, "msg": "HTTP HEADER: X-GEWE-TOKEN=an-older-token-4711 不可用或已过期"}
    error = send_error(router, "gewe", return_value=httpx.Response(200, json=stale))
    assert "an-older-token-4711" not in str(error) and "X-GEWE-TOKEN=***" in str(error)


def _sent(vendor: str, **ids: int | None) -> SendResult:
    base: dict[str, Any] = {"msg_id": 769533801, "new_msg_id": BIG_ID, "create_time": 1700000000}
    base.update(ids)
    return SendResult(vendor=vendor, to=TO, endpoint="x", **base)


@pytest.mark.parametrize(
    ("vendor", "ids", "missing"),
    [
        ("gewe", {"new_msg_id": None}, ("newMsgId",)),
        ("gewe", {"create_time": 0}, ("createTime",)),  # what GeWe's image sends answer
        ("gewe", {"msg_id": None}, ("msgId",)),
        ("ecloud", {"msg_id": None}, ("msgId",)),
        ("ecloud", {"new_msg_id": 0, "create_time": None}, ("newMsgId", "createTime")),
        ("ohwxapi", {"new_msg_id": None}, ("NewMsgId",)),
        ("ohwxapi", {"new_msg_id": 0}, ("NewMsgId",)),
    ],
)
def test_revoke_without_the_ids_is_refused_before_sending(
    router: respx.Router, vendor: str, ids: dict[str, int | None], missing: tuple[str, ...]
) -> None:
    route = router.post(url__startswith=BASE)
    backend, client = make_backend(vendor)
    with client, pytest.raises(RevokeRefusedError) as info:
        backend.revoke(_sent(vendor, **ids))
    assert info.value.missing == missing and all(name in str(info.value) for name in missing)
    assert route.call_count == 0  # never a guess on the wire


def test_gewe_revoke_sends_the_ids_as_strings_and_accepts_msg_id_zero_for_text(router: respx.Router) -> None:
    """GeWe answers msgId 0 for text; revokeMsg takes every id as a string (撤回消息)."""
    route = router.post(f"{BASE}/gewe/v2/api/message/revokeMsg").respond(200, json={"ret": 200, "msg": "操作成功"})
    backend, client = make_backend("gewe")
    with client:
        backend.revoke(_sent("gewe", msg_id=0))
    assert json.loads(route.calls.last.request.content) == {
        "appId": "inst_42",
        "toWxid": TO,
        "msgId": "0",
        "newMsgId": str(BIG_ID),
        "createTime": "1700000000",
    }


def test_ecloud_revoke_sends_integers(router: respx.Router) -> None:
    route = router.post(f"{BASE}/revokeMsg").respond(200, json={"code": "1000", "message": "撤回成功", "data": None})
    backend, client = make_backend("ecloud")
    with client:
        backend.revoke(_sent("ecloud"))
    assert json.loads(route.calls.last.request.content) == {
        "wId": "inst_42",
        "wcId": TO,
        "msgId": 769533801,
        "newMsgId": BIG_ID,
        "createTime": 1700000000,
    }


@pytest.mark.parametrize("msg_id", [None, 0, 769533801])
def test_magiccgi_revoke_is_what_the_public_client_sends(router: respx.Router, msg_id: int | None) -> None:
    """CgiCmd 594 as SZUEA/AJBot EAbotoy/action.py sends it: {OpCode: 0, MsgId, NewMsgId, ToUserName}."""
    ok = {"CgiBaseResponse": {"ErrMsg": "", "Ret": 0}, "ResponseData": None}
    route = router.post(f"{BASE}/v2/api").respond(200, json=ok)
    backend, client = make_backend("ohwxapi")
    with client:
        backend.revoke(_sent("ohwxapi", msg_id=msg_id, create_time=None))
    request = json.loads(route.calls.last.request.content)
    expected: dict[str, Any] = {"OpCode": 0, "NewMsgId": BIG_ID, "ToUserName": TO}
    if msg_id:
        expected["MsgId"] = msg_id  # only an id the send returned; never a 0 or null guess
    assert request == {"CgiCmd": 594, "CgiRequest": expected}


def test_magiccgi_send_answer_without_create_time(router: respx.Router) -> None:
    """Seed 002 documents ResponseData as ``{NewMsgId, ClientMsgId}`` only."""
    answer = {"CgiBaseResponse": {"ErrMsg": "", "Ret": 0}, "ResponseData": {"NewMsgId": BIG_ID, "ClientMsgId": "17"}}
    result = send_with(router, "ohwxapi", return_value=httpx.Response(200, json=answer))
    assert (result.new_msg_id, result.client_msg_id, result.create_time, result.msg_id) == (BIG_ID, "17", None, None)


def test_gewe_post_app_msg_answer_type_0_is_read(router: respx.Router) -> None:
    """GeweAPI-Official/消息模块/发送appmsg消息.md answers ``type: 0``."""
    answer = {
        "ret": 200,
        "msg": "操作成功",
        "data": {"toWxid": TO, "createTime": 1703842453, "msgId": 769523712, "newMsgId": BIG_ID, "type": 0},
    }
    router.post(f"{BASE}/gewe/v2/api/message/postAppMsg").respond(200, json=answer)
    backend, client = make_backend("gewe")
    with client:
        result = backend.send(TO, AppMsgMessage(xml="<appmsg><title>t</title><type>5</type></appmsg>"))
    assert (result.endpoint, result.msg_type, result.new_msg_id) == ("postAppMsg", 0, BIG_ID)


MSG_DOCUMENT = (
    '<?xml version="1.0"?>\n<msg>\n\t<appmsg appid="" sdkver="0"><title>t</title><type>33</type>'
    "<weappinfo><username><![CDATA[gh_1@app]]></username></weappinfo></appmsg>\n"
    "\t<fromusername>wxid_sender</fromusername>\n\t<scene>0</scene>\n"
    "\t<appinfo>\n\t\t<version>1</version>\n\t\t<appname></appname>\n\t</appinfo>\n</msg>"
)


def test_gewe_forward_mini_app_gets_the_whole_pasted_document(router: respx.Router) -> None:
    """GeweAPI-Official/消息模块/转发小程序.md: ``xml`` is the whole ``<msg>``; the answer's type is 33."""
    answer = {
        "ret": 200,
        "msg": "操作成功",
        "data": {"toWxid": TO, "createTime": 1704163145, "msgId": 769533801, "newMsgId": BIG_ID, "type": 33},
    }
    route = router.post(f"{BASE}/gewe/v2/api/message/forwardMiniApp").respond(200, json=answer)
    backend, client = make_backend("gewe")
    message = parse_message({"kind": "miniprogram", "xml": MSG_DOCUMENT, "cover_url": "https://c.example/1.jpg"})
    with client:
        result = backend.send(TO, message)
    body = json.loads(route.calls.last.request.content)
    assert set(body) == {"appId", "toWxid", "xml", "coverImgUrl"}
    # the paste as pasted, re-serialized by the safe parser (an empty element comes back self-closed)
    assert body["xml"] == MSG_DOCUMENT.replace("<appname></appname>", "<appname/>")
    assert (result.endpoint, result.msg_type) == ("forwardMiniApp", 33)


def test_gewe_mini_program_without_a_whole_document_uses_post_app_msg(router: respx.Router) -> None:
    ok = {"ret": 200, "msg": "操作成功", "data": {"toWxid": TO, "createTime": 1, "msgId": 1, "newMsgId": 2, "type": 0}}
    route = router.post(f"{BASE}/gewe/v2/api/message/postAppMsg").respond(200, json=ok)
    backend, client = make_backend("gewe")
    bare = "<appmsg><title>t</title><type>33</type></appmsg>"
    with client:
        backend.send(TO, parse_message({"kind": "miniprogram", "xml": bare, "cover_url": "https://c.example/1.jpg"}))
        backend.send(TO, parse_message({"kind": "miniprogram", "xml": MSG_DOCUMENT}))  # whole, but no cover
    first, second = (json.loads(call.request.content) for call in route.calls)
    assert first["appmsg"] == bare and second["appmsg"].startswith("<appmsg") and "fromusername" not in second["appmsg"]


def test_ecloud_structured_card_without_icon_uses_send_applets(router: respx.Router) -> None:
    ok = {"code": "1000", "message": "发送成功", "data": {"type": 33, "msgId": 1, "newMsgId": BIG_ID, "createTime": 1}}
    route = router.post(f"{BASE}/sendApplets").respond(200, json=ok)
    backend, client = make_backend("ecloud")
    card = {
        "kind": "miniprogram",
        "app_id": "wx1",
        "username": "gh_1@app",
        "title": "t",
        "page_path": "p/index.html",
        "cover_url": "https://c.example/1.jpg",
        "display_name": "d",
    }
    with client:
        backend.send(TO, parse_message(card))
        body = json.loads(route.calls.last.request.content)
        # iconUrl is marked required (wkteam.cn 发送小程序): never empty; without an icon, the cover stands in
        assert body["iconUrl"] == "https://c.example/1.jpg" and body["thumbUrl"] == "https://c.example/1.jpg"
        backend.send(TO, parse_message({**card, "icon_url": "https://i.example/icon.png"}))
    assert json.loads(route.calls.last.request.content)["iconUrl"] == "https://i.example/icon.png"


def test_ecloud_refuses_a_pasted_mini_program_without_cover() -> None:
    pasted = parse_message({"kind": "miniprogram", "xml": "<appmsg><title>t</title><type>33</type></appmsg>"})
    with pytest.raises(MessageError) as info:
        ecloud.check_message(pasted)
    assert info.value.field == "message.cover_url"
    ecloud.check_message(parse_message({"kind": "miniprogram", "xml": MSG_DOCUMENT, "cover_url": "https://c/1.jpg"}))


@pytest.mark.parametrize("text", ["请求超时", "发送失败: timeout", "网络异常，请稍后再试"])
def test_a_vendor_saying_it_timed_out_is_an_unknown_outcome(text: str) -> None:
    """The vendor's own call to WeChat timed out: it cannot know either, so never a blind resend."""
    assert classify_vendor_text(text) is AmbiguousError
    # an explicit refusal still wins over a mention of a timeout
    assert classify_vendor_text("对方不是你的好友 (timeout)") is NotFriendError


@pytest.mark.parametrize("vendor", ["gewe-legacy", "ohwxapi"])
def test_a_kind_the_vendor_cannot_carry_is_refused_before_any_request(router: respx.Router, vendor: str) -> None:
    """Refused at submission (422); one that slipped through (the account's vendor changed) dies unsent."""
    backend, client = make_backend(vendor)
    with client, pytest.raises(MessageError) as info:
        backend.send(TO, parse_message({"kind": "image", "url": "https://c/p.jpg"}))
    assert info.value.field == "message.kind" and vendor in str(info.value)
    assert not router.calls
