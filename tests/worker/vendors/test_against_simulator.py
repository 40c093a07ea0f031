"""Every vendor × every message kind against the simulator over real HTTP; fault → error class mapping."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from simulator.server import SimulatorServer
from tests.conftest import DATA, account_for
from worker.errors import (
    AccountDownError,
    AmbiguousError,
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
)
from worker.messages import parse_message
from worker.vendors import SendResult, VendorAccount, backend_for, ecloud

VENDORS = ["gewe", "gewe-legacy", "ecloud", "ohwxapi"]
TO = "wxid_friend_001"
GROUP = "34757816141@chatroom"

MESSAGES: dict[str, dict[str, Any]] = {
    "text": {"kind": "text", "text": "你好, 周末大促开始了"},
    "text-mentions": {"kind": "text", "text": "@小王 @小李 看这里", "mentions": ["wxid_a", "wxid_b"]},
    "text-mention-all": {"kind": "text", "text": "@所有人 开会", "mention_all": True},
    "mini-structured": {
        "kind": "miniprogram",
        "app_id": "wx1f9ea355b47256dd",
        "username": "gh_690acf47ea05@app",
        "title": "最快29分钟 好吃水果送到家",
        "page_path": "pages/homeDelivery/index.html",
        "cover_url": "https://example.com/cover.jpg",
        "display_name": "百果园+",
        "icon_url": "https://example.com/icon.png",
    },
    "mini-structured-no-icon": {
        "kind": "miniprogram",
        "app_id": "wx1f9ea355b47256dd",
        "username": "gh_690acf47ea05@app",
        "title": "最快29分钟",
        "page_path": "pages/homeDelivery/index.html",
        "cover_url": "https://example.com/cover.jpg",
        "display_name": "百果园+",
    },
    "mini-xml": {"kind": "miniprogram", "xml": (DATA / "seed000_callback_fragment.xml").read_text()},
    "mini-xml-cover": {
        "kind": "miniprogram",
        "xml": (DATA / "seed001_miniprogram_appmsg.xml").read_text(),
        "cover_url": "https://example.com/fresh.jpg",
    },
    "mini-msg-cover": {
        "kind": "miniprogram",
        # a whole callback document shaped like GeWe's forwardMiniApp example (GeweAPI-Official/转发小程序.md)
        "xml": '<?xml version="1.0"?>\n<msg>\n\t'
        + (DATA / "seed001_miniprogram_appmsg.xml").read_text().strip()
        + "\n\t<fromusername>wxid_sender</fromusername>\n\t<scene>0</scene>\n\t<appinfo>\n\t\t<version>1</version>"
        + "\n\t\t<appname></appname>\n\t</appinfo>\n\t<commenturl></commenturl>\n</msg>",
        "cover_url": "https://example.com/fresh.jpg",
    },
    "appmsg-file": {"kind": "appmsg", "xml": (DATA / "seed002_file_appmsg.xml").read_text()},
}

#: The endpoint each vendor must use for each kind (the design's mapping table).
EXPECTED_ENDPOINT = {
    "gewe": {
        "text": "postText",
        "mini-structured": "postMiniApp",
        "mini-structured-no-icon": "postMiniApp",
        "mini-xml": "postAppMsg",
        "mini-xml-cover": "postAppMsg",  # a bare <appmsg>: forwardMiniApp wants the whole <msg>
        "mini-msg-cover": "forwardMiniApp",
        "appmsg-file": "postAppMsg",
    },
    "gewe-legacy": {"text": "sendmsg", "default": "sendapp"},
    "ecloud": {
        "text": "sendText",
        "mini-structured": "sendApplets",
        "mini-structured-no-icon": "sendApplets",  # iconUrl required: the cover stands in (the sim refuses "")
        "default": "sendApplet",
    },
    "ohwxapi": {"text": "CgiCmd522", "default": "CgiCmd222"},
}


def expected_endpoint(vendor: str, case: str) -> str:
    table = EXPECTED_ENDPOINT[vendor]
    key = "text" if case.startswith("text") else case
    return table.get(key) or table["default"]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(5.0)) as client:
        yield client


def sends(admin: httpx.Client, **filters: Any) -> list[dict[str, Any]]:
    response = admin.get("/_sim/sends", params=filters)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["sends"]
    return result


@pytest.mark.parametrize("case", list(MESSAGES))
@pytest.mark.parametrize("vendor", VENDORS)
def test_every_vendor_sends_every_kind_with_exact_ids(
    sim: SimulatorServer, sim_admin: httpx.Client, http: httpx.Client, vendor: str, case: str
) -> None:
    backend = backend_for(account_for(sim, vendor), http)
    message = parse_message(MESSAGES[case])
    if vendor == "ecloud" and case == "mini-xml":
        # a pasted mini-program without a cover is refused at the door for E云 (no imgUrl for /sendApplet)
        with pytest.raises(MessageError) as refused:
            ecloud.check_message(message)
        assert refused.value.field == "message.cover_url"
        return
    result = backend.send(GROUP if "mention" in case else TO, message)

    records = sends(sim_admin)
    assert len(records) == 1, records
    record = records[0]
    assert record["endpoint"] == expected_endpoint(vendor, case)
    assert result.endpoint == record["endpoint"]
    assert record["new_msg_id"] > 2**53  # would not survive a float
    assert result.new_msg_id == record["new_msg_id"]
    # MagicCgi answers no CreateTime (seed 002): none is made up
    assert result.create_time == (None if vendor == "ohwxapi" else record["create_time"])
    if vendor in ("gewe", "ecloud", "gewe-legacy"):
        assert result.msg_id == record["msg_id"]
    if vendor in ("ohwxapi", "gewe-legacy"):
        assert result.client_msg_id == str(record["client_msg_id"])
    assert result.ids_as_strings()["new_msg_id"] == str(record["new_msg_id"])


@pytest.mark.parametrize("vendor", VENDORS)
def test_mentions_reach_the_vendor_in_its_own_field(
    sim: SimulatorServer, sim_admin: httpx.Client, http: httpx.Client, vendor: str
) -> None:
    backend = backend_for(account_for(sim, vendor), http)
    backend.send(GROUP, parse_message(MESSAGES["text-mentions"]))
    backend.send(GROUP, parse_message(MESSAGES["text-mention-all"]))
    first, second = (r["body"] for r in sends(sim_admin))
    if vendor == "gewe":
        assert (first["ats"], second["ats"]) == ("wxid_a,wxid_b", "notify@all")
    elif vendor == "gewe-legacy":
        assert first["to_wxid_list"][0]["at"] == ["wxid_a", "wxid_b"]
    elif vendor == "ecloud":
        assert (first["at"], second["at"]) == ("wxid_a,wxid_b", "notify@all")
    else:
        assert first["CgiRequest"]["AtUsers"] == "wxid_a,wxid_b"


def test_gewe_postminiapp_body_matches_the_vendor_openapi_schema(
    sim: SimulatorServer, sim_admin: httpx.Client, http: httpx.Client
) -> None:
    spec = yaml.safe_load((DATA / "seed003_postMiniApp.openapi.yaml").read_text())
    operation = spec["paths"]["/gewe/v2/api/message/postMiniApp"]["post"]
    request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    response_schema = operation["responses"]["200"]["content"]["application/json"]["schema"]

    backend = backend_for(account_for(sim, "gewe"), http)
    backend.send(TO, parse_message(MESSAGES["mini-structured"]))
    body = sends(sim_admin)[0]["body"]
    jsonschema.validate(body, request_schema)
    assert set(body) == set(request_schema["required"])

    # and the simulator's answer has the vendor's documented shape
    raw = http.post(
        f"{sim.url}/gewe/v2/api/message/postMiniApp",
        json=body,
        headers={"X-GEWE-TOKEN": account_for(sim, "gewe").token.get_secret_value()},
    ).json()
    jsonschema.validate(raw, response_schema)


def test_xml_endpoints_receive_the_bare_appmsg_and_forward_gets_a_msg_document(
    sim: SimulatorServer, sim_admin: httpx.Client, http: httpx.Client
) -> None:
    gewe = backend_for(account_for(sim, "gewe"), http)
    gewe.send(TO, parse_message(MESSAGES["mini-xml"]))
    gewe.send(TO, parse_message(MESSAGES["mini-msg-cover"]))
    post_appmsg, forward = (r["body"] for r in sends(sim_admin))
    assert post_appmsg["appmsg"].startswith("<appmsg") and "fromusername" not in post_appmsg["appmsg"]
    # the whole pasted document, re-serialized: declaration, <appmsg> and its siblings
    assert forward["xml"].startswith('<?xml version="1.0"?>\n<msg>\n\t<appmsg')
    assert "<fromusername>wxid_sender</fromusername>" in forward["xml"] and "<appinfo>" in forward["xml"]
    assert forward["coverImgUrl"] == "https://example.com/fresh.jpg"


def test_ecloud_sendapp_success_with_null_data_is_a_success_without_ids(
    sim: SimulatorServer, sim_admin: httpx.Client, http: httpx.Client
) -> None:
    account = account_for(sim, "ecloud", options={"ecloud_app_endpoint": "sendApp"})
    result = backend_for(account, http).send(TO, parse_message(MESSAGES["appmsg-file"]))
    assert result.endpoint == "sendApp"
    assert not result.has_ids
    assert len(sends(sim_admin)) == 1


# --- faults ------------------------------------------------------------------------------------------

FAULT_CLASSES: dict[str, type[VendorError]] = {
    "http_500": AmbiguousError,  # a gateway's 502: the vendor may have sent
    "http_503": TransientError,  # a proxy that could not reach the vendor
    "http_429": ThrottledError,
    "throttled": ThrottledError,
    "offline": AccountDownError,
    "token_invalid": AccountDownError,
    "not_friend": NotFriendError,  # a PermanentError that also suppresses the recipient
    "generic": VendorFailure,
}


@pytest.mark.parametrize("fault", list(FAULT_CLASSES))
@pytest.mark.parametrize("vendor", VENDORS)
def test_fault_maps_to_error_class(
    sim: SimulatorServer, sim_admin: httpx.Client, http: httpx.Client, vendor: str, fault: str
) -> None:
    sim_admin.post("/_sim/faults", json={"kind": fault, "vendor": vendor, "times": 1}).raise_for_status()
    backend = backend_for(account_for(sim, vendor), http)
    kind = "appmsg-file" if vendor == "gewe-legacy" and fault == "not_friend" else "text"
    with pytest.raises(VendorError) as info:
        backend.send(TO, parse_message(MESSAGES[kind]))
    assert type(info.value) is FAULT_CLASSES[fault], info.value
    assert sends(sim_admin) == []
    # the fault was used up: the next send goes through
    backend.send(TO, parse_message(MESSAGES["text"]))
    assert len(sends(sim_admin)) == 1


@pytest.mark.parametrize("when", ["timeout_before", "timeout_after"])
@pytest.mark.parametrize("vendor", VENDORS)
def test_read_timeout_is_ambiguous_never_transient(
    sim: SimulatorServer, sim_admin: httpx.Client, vendor: str, when: str
) -> None:
    sim_admin.post("/_sim/faults", json={"kind": when, "vendor": vendor, "times": 1, "delay_s": 1.0}).raise_for_status()
    with httpx.Client(timeout=httpx.Timeout(5.0, read=0.3)) as quick:
        backend = backend_for(account_for(sim, vendor), quick)
        with pytest.raises(AmbiguousError):
            backend.send(TO, parse_message(MESSAGES["text"]))
    # "after" really went out, "before" did not: exactly why the worker must not resend blindly
    assert len(sends(sim_admin)) == (1 if when == "timeout_after" else 0)


@pytest.mark.parametrize("vendor", VENDORS)
def test_connection_refused_is_transient(vendor: str, http: httpx.Client) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = backend_for(
        VendorAccount(vendor=vendor, base_url=f"http://127.0.0.1:{port}", token="t0ken-x", instance="i"), http
    )
    with pytest.raises(TransientError) as info:
        backend.send(TO, parse_message(MESSAGES["text"]))
    assert type(info.value) is TransientError


@pytest.mark.parametrize("vendor", ["gewe", "gewe-legacy", "ecloud"])
def test_wrong_token_is_account_down_and_never_echoed(sim: SimulatorServer, http: httpx.Client, vendor: str) -> None:
    secret = "wrong-secret-token-123456"
    backend = backend_for(account_for(sim, vendor, token=secret), http)
    with pytest.raises(AccountDownError) as info:
        backend.send(TO, parse_message(MESSAGES["text"]))
    assert secret not in str(info.value) and secret not in repr(info.value.to_dict())


@pytest.mark.parametrize("vendor", VENDORS)
def test_unknown_instance_is_account_down(sim: SimulatorServer, http: httpx.Client, vendor: str) -> None:
    backend = backend_for(account_for(sim, vendor, instance="no-such-device"), http)
    with pytest.raises(AccountDownError):
        backend.send(TO, parse_message(MESSAGES["text"]))


# --- revoke and online check -------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", ["gewe", "ecloud", "ohwxapi"])
def test_revoke_uses_the_exact_ids(
    sim: SimulatorServer, sim_admin: httpx.Client, http: httpx.Client, vendor: str
) -> None:
    backend = backend_for(account_for(sim, vendor), http)
    result = backend.send(TO, parse_message(MESSAGES["appmsg-file"]))
    # a rounded id (what a float round-trip makes of it) revokes nothing; GeWe even answers "操作成功"
    # (Devo919/Gewechat#70, #166), the others refuse it
    rounded = dataclasses.replace(result, new_msg_id=int(float(result.new_msg_id or 0)))
    if vendor == "gewe":
        backend.revoke(rounded)
    else:
        with pytest.raises(VendorError):
            backend.revoke(rounded)
    assert sends(sim_admin)[0]["revoked"] is False
    backend.revoke(result)
    assert sends(sim_admin)[0]["revoked"] is True


def test_legacy_has_no_revoke(sim: SimulatorServer, http: httpx.Client) -> None:
    backend = backend_for(account_for(sim, "gewe-legacy"), http)
    with pytest.raises(UnsupportedError):
        backend.revoke(SendResult(vendor="gewe-legacy", to=TO, endpoint="sendmsg", new_msg_id=1))


@pytest.mark.parametrize(
    ("vendor", "supported"), [("gewe", True), ("ecloud", True), ("gewe-legacy", False), ("ohwxapi", False)]
)
def test_online_check_reflects_offline_accounts(
    sim: SimulatorServer, sim_admin: httpx.Client, http: httpx.Client, vendor: str, supported: bool
) -> None:
    backend = backend_for(account_for(sim, vendor), http)
    if not supported:
        assert backend.check_online() is None
        return
    assert backend.check_online() is True
    sim_admin.post("/_sim/faults", json={"kind": "offline", "vendor": vendor}).raise_for_status()
    assert backend.check_online() is False


# --- issue 11, backend against the simulator ----------------------------------------------------------


def test_gewe_daily_cap_is_its_own_class_and_spares_other_kinds(
    sim: SimulatorServer, sim_admin: httpx.Client, http: httpx.Client
) -> None:
    sim_admin.post("/_sim/faults", json={"kind": "daily_cap", "vendor": "gewe"}).raise_for_status()
    backend = backend_for(account_for(sim, "gewe"), http)
    for case in ("mini-structured", "mini-xml", "mini-msg-cover"):
        with pytest.raises(DailyCapError, match="Too many attempts") as info:
            backend.send(GROUP, parse_message(MESSAGES[case]))
        assert info.value.error_class == "daily_cap"
    backend.send(GROUP, parse_message(MESSAGES["text"]))
    backend.send(GROUP, parse_message(MESSAGES["appmsg-file"]))
    assert [r["kind"] for r in sends(sim_admin)] == ["text", "app"]


def test_gewe_cover_refusal_is_permanent_with_a_hint(
    sim: SimulatorServer, sim_admin: httpx.Client, http: httpx.Client
) -> None:
    """发送小程序失败 + data.code "-2" (Devo919/Gewechat#176, #182): that message fails for its cover; no cap."""
    sim_admin.post("/_sim/faults", json={"kind": "cover_refused", "vendor": "gewe", "times": 1}).raise_for_status()
    backend = backend_for(account_for(sim, "gewe"), http)
    with pytest.raises(PermanentError, match="50 KB") as info:
        backend.send(GROUP, parse_message(MESSAGES["mini-structured"]))
    assert info.value.code == "-2" and not isinstance(info.value, DailyCapError)
    backend.send(GROUP, parse_message(MESSAGES["mini-structured"]))  # the fault was one answer: no hold


def test_fidelity_round_3_against_the_simulator(
    sim: SimulatorServer, sim_admin: httpx.Client, http: httpx.Client
) -> None:
    """Issue 20: each answer as the simulator gives it (docs/vendors.md names the source of each)."""
    # E云 isOnline answering the failure code of its table is "offline", not a failed check (WkApi)
    ecloud_backend = backend_for(account_for(sim, "ecloud"), http)
    assert ecloud_backend.check_online() is True
    sim_admin.post("/_sim/faults", json={"kind": "offline", "vendor": "ecloud", "times": 1}).raise_for_status()
    assert ecloud_backend.check_online() is False
    # E云 sendApplets: iconUrl never empty (the simulator refuses it empty, as the docs mark it required)
    ecloud_backend.send(TO, parse_message(MESSAGES["mini-structured-no-icon"]))
    (card,) = [r for r in sends(sim_admin) if r["endpoint"] == "sendApplets"]
    assert card["body"]["iconUrl"] == MESSAGES["mini-structured-no-icon"]["cover_url"]
    # GeWe without its token header: account down (token), not a generic failure
    with pytest.raises(AccountDownError, match="不可为空"):
        backend_for(account_for(sim, "gewe", token=""), http).send(TO, parse_message(MESSAGES["text"]))
    # MagicCgi's "too fast" is Ret 241 with an empty ErrMsg: throttled (SZUEA/AJBot)
    sim_admin.post("/_sim/faults", json={"kind": "throttled", "vendor": "ohwxapi", "times": 1}).raise_for_status()
    with pytest.raises(ThrottledError) as info:
        backend_for(account_for(sim, "ohwxapi"), http).send(TO, parse_message(MESSAGES["text"]))
    assert info.value.code == "241"
    # 等待对方接受你的好友请求 reads like throttling but is a recipient not yet a friend: permanent
    for vendor in ("gewe", "ecloud"):
        fault = {"kind": "friend_pending", "vendor": vendor, "times": 1}
        sim_admin.post("/_sim/faults", json=fault).raise_for_status()
        with pytest.raises(NotFriendError, match="接受"):
            backend_for(account_for(sim, vendor), http).send(TO, parse_message(MESSAGES["text"]))


def test_gewe_check_online_true_while_sends_fail(
    sim: SimulatorServer, sim_admin: httpx.Client, http: httpx.Client
) -> None:
    sim_admin.post("/_sim/faults", json={"kind": "offline_hidden", "vendor": "gewe"}).raise_for_status()
    backend = backend_for(account_for(sim, "gewe"), http)
    with pytest.raises(AccountDownError, match="微信已离线"):
        backend.send(TO, parse_message(MESSAGES["text"]))
    assert backend.check_online() is True  # why worker.pacing.holds asks for a probe send


def test_gewe_token_echo_reaches_the_error_scrubbed(sim: SimulatorServer, http: httpx.Client) -> None:
    secret = "wrong-secret-token-987654"
    backend = backend_for(account_for(sim, "gewe", token=secret), http)
    with pytest.raises(AccountDownError) as info:
        backend.send(TO, parse_message(MESSAGES["text"]))
    assert str(info.value) == "HTTP HEADER: X-GEWE-TOKEN=*** 不可用或已过期"


@pytest.mark.parametrize(
    ("vendor", "blank"),
    [
        ("gewe", {"create_time": 0}),
        ("gewe", {"new_msg_id": None}),
        ("ecloud", {"msg_id": None}),
        ("ohwxapi", {"new_msg_id": None}),
    ],
)
def test_revoke_without_ids_never_reaches_the_vendor(
    sim: SimulatorServer, sim_admin: httpx.Client, http: httpx.Client, vendor: str, blank: dict[str, Any]
) -> None:
    backend = backend_for(account_for(sim, vendor), http)
    result = backend.send(TO, parse_message(MESSAGES["text"]))
    with pytest.raises(RevokeRefusedError):
        backend.revoke(dataclasses.replace(result, **blank))
    assert sends(sim_admin)[0]["revoked"] is False
    backend.revoke(result)
    assert sends(sim_admin)[0]["revoked"] is True


def test_gewe_post_app_msg_answers_the_documented_type(
    sim: SimulatorServer, sim_admin: httpx.Client, http: httpx.Client
) -> None:
    result = backend_for(account_for(sim, "gewe"), http).send(TO, parse_message(MESSAGES["appmsg-file"]))
    assert (result.endpoint, result.msg_type) == ("postAppMsg", 0)  # GeweAPI-Official/发送appmsg消息.md
