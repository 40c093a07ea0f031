"""The vendor simulator over real HTTP: envelopes, validation, recording, faults and the admin API."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator import DEMO_ACCOUNTS, SimAccount, SimulatorServer, load_accounts

GEWE_TOKEN = {"X-GEWE-TOKEN": "demo-gewe-token"}
LEGACY_TOKEN = {"X-GEWE-TOKEN": "demo-legacy-token"}
ECLOUD_TOKEN = {"Authorization": "demo-ecloud-auth"}
OHWX_PATH = "/v2/api?funcname=MagicCgi&timeout=10&wxid=wxid_demo_ohwx"
APPMSG = "<appmsg appid='' sdkver='0'><title>t</title><type>5</type><url>https://x</url></appmsg>"
MINI_APPMSG = "\n <appmsg appid=''><title>m</title><type>33</type><weappinfo><type>2</type></weappinfo></appmsg>"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(seed=1234) as server:
        yield server


@pytest.fixture()
def client(sim: SimulatorServer) -> Iterator[httpx.Client]:
    sim.state.reset()
    with httpx.Client(base_url=sim.url, timeout=5.0) as c:
        yield c


def sends(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = client.get("/_sim/sends", params=params).json()["sends"]
    return result


def add_fault(client: httpx.Client, **fault: Any) -> int:
    r = client.post("/_sim/faults", json=fault)
    assert r.status_code == 200, r.text
    fault_id: int = r.json()["id"]
    return fault_id


# -- one valid send per vendor, used by the fault table ------------------------------------------


def gewe_text(client: httpx.Client, to: str = "wxid_a", prefix: str = "/gewe/v2/api") -> httpx.Response:
    body = {"appId": "wx_demo_gewe", "toWxid": to, "content": "hello"}
    return client.post(f"{prefix}/message/postText", headers=GEWE_TOKEN, json=body)


def legacy_app(client: httpx.Client, to: str = "wxid_a") -> httpx.Response:
    body = {"appid": "wx_demo_legacy", "to_wxid": to, "xml": APPMSG}
    return client.post("/api/message/sendapp", headers=LEGACY_TOKEN, json=body)


def ecloud_text(client: httpx.Client, to: str = "wxid_a") -> httpx.Response:
    body = {"wId": "demo-ecloud-wid", "wcId": to, "content": "hello"}
    return client.post("/sendText", headers=ECLOUD_TOKEN, json=body)


def ohwx_text(client: httpx.Client, to: str = "wxid_a") -> httpx.Response:
    body = {"CgiCmd": 522, "CgiRequest": {"ToUserName": to, "Content": "hello", "MsgType": 1}}
    return client.post(OHWX_PATH, json=body)


SENDERS: dict[str, Callable[..., httpx.Response]] = {
    "gewe": gewe_text,
    "gewe-legacy": legacy_app,
    "ecloud": ecloud_text,
    "ohwxapi": ohwx_text,
}


def is_success(vendor: str, data: dict[str, Any]) -> bool:
    if vendor == "gewe":
        return bool(data["ret"] == 200)
    if vendor == "gewe-legacy":
        return bool(data["ret"] == 0)
    if vendor == "ecloud":
        return bool(data["code"] == "1000")
    return bool(data["CgiBaseResponse"]["Ret"] == 0)


def error_text(vendor: str, data: dict[str, Any]) -> str:
    if vendor == "gewe":
        detail = data.get("data")
        return str(detail["msg"]) if isinstance(detail, dict) else str(data["msg"])
    if vendor == "gewe-legacy":
        return str(data["msg_err"])
    if vendor == "ecloud":
        return str(data["message"])
    return str(data["CgiBaseResponse"]["ErrMsg"])


# -- GeWe v2 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/gewe/v2/api", "/v2/api"])
def test_gewe_post_text_recorded_with_exact_ids(client: httpx.Client, prefix: str) -> None:
    r = gewe_text(client, prefix=prefix)
    assert r.status_code == 200
    data = r.json()
    assert data["ret"] == 200 and data["msg"] == "操作成功"
    answer = data["data"]
    assert answer["msgId"] == 0 and answer["type"] == 1 and answer["toWxid"] == "wxid_a"
    assert 2**62 <= answer["newMsgId"] < 2**63 and answer["newMsgId"] > 2**53
    (record,) = sends(client)
    assert record["vendor"] == "gewe" and record["endpoint"] == "postText" and record["kind"] == "text"
    assert record["new_msg_id"] == answer["newMsgId"]
    assert record["create_time"] == answer["createTime"]
    assert record["body"]["content"] == "hello"
    assert record["received_at"] <= record["sent_at"]
    assert int(float(record["new_msg_id"])) != record["new_msg_id"]


def test_gewe_app_and_mini_program_sends(client: httpx.Client) -> None:
    base = {"appId": "wx_demo_gewe", "toWxid": "g@chatroom"}
    r = client.post("/v2/api/message/postAppMsg", headers=GEWE_TOKEN, json={**base, "appmsg": MINI_APPMSG})
    # the documented answer's type is 0 (GeweAPI-Official/消息模块/发送appmsg消息.md)
    assert r.json()["ret"] == 200 and r.json()["data"]["type"] == 0
    mini = {
        "miniAppId": "wx1",
        "displayName": "d",
        "pagePath": "p/index.html",
        "coverImgUrl": "https://c",
        "title": "t",
        "userName": "gh_1@app",
    }
    r = client.post("/gewe/v2/api/message/postMiniApp", headers=GEWE_TOKEN, json={**base, **mini})
    assert r.json()["data"]["type"] == 33 and r.json()["data"]["msgId"] > 0
    fwd = {
        **base,
        "xml": '<?xml version="1.0"?>\n<msg><appmsg/><fromusername>u</fromusername></msg>',
        "coverImgUrl": "https://c",
    }
    r = client.post("/gewe/v2/api/message/forwardMiniApp", headers=GEWE_TOKEN, json=fwd)
    assert r.json()["data"]["type"] == 33
    for not_whole in ("<appmsg><type>33</type></appmsg>", "<msg></msg>"):
        r = client.post("/gewe/v2/api/message/forwardMiniApp", headers=GEWE_TOKEN, json={**fwd, "xml": not_whole})
        assert r.json() == {"ret": 500, "msg": "参数错误: xml 必须是完整的 <msg> 文档", "data": None}
    assert [(s["endpoint"], s["kind"]) for s in sends(client)] == [
        ("postAppMsg", "miniapp"),
        ("postMiniApp", "miniapp"),
        ("forwardMiniApp", "miniapp"),
    ]
    # every postMiniApp field is required
    r = client.post("/gewe/v2/api/message/postMiniApp", headers=GEWE_TOKEN, json={**base, **mini, "userName": ""})
    assert r.json() == {"ret": 500, "msg": "参数错误: userName 不能为空", "data": None}


def test_gewe_rejections_are_not_recorded(client: httpx.Client) -> None:
    body = {"appId": "wx_demo_gewe", "toWxid": "wxid_a", "content": "x"}
    # the vendor echoes the refused token (Devo919/Gewechat#263) and says so when there is none (#340 of
    # hanfangyuan4396/dify-on-wechat)
    r = client.post("/gewe/v2/api/message/postText", headers={"X-GEWE-TOKEN": "nope"}, json=body)
    assert r.json() == {"ret": 500, "msg": "HTTP HEADER: X-GEWE-TOKEN=nope 不可用或已过期"}
    r = client.post("/gewe/v2/api/message/postText", json=body)
    assert r.json() == {"ret": 500, "msg": "header:X-GEWE-TOKEN 不可为空"}
    r = client.post("/gewe/v2/api/message/postText", headers=GEWE_TOKEN, json={**body, "appId": "wx_other"})
    assert r.json() == {"ret": 500, "msg": "设备不存在", "data": None}
    r = client.post("/gewe/v2/api/message/postText", headers=GEWE_TOKEN, json={**body, "content": ""})
    assert r.json() == {"ret": 500, "msg": "参数错误: content 不能为空", "data": None}
    bad_xml = {"appId": "wx_demo_gewe", "toWxid": "wxid_a", "appmsg": "<msg><appmsg/></msg>"}
    r = client.post("/gewe/v2/api/message/postAppMsg", headers=GEWE_TOKEN, json=bad_xml)
    assert r.json()["ret"] == 500
    r = client.post("/gewe/v2/api/message/postText", headers=GEWE_TOKEN, content=b"not json")
    assert r.json()["ret"] == 500
    # bad token wins over faults
    add_fault(client, kind="http_500")
    r = client.post("/gewe/v2/api/message/postText", headers={"X-GEWE-TOKEN": "nope"}, json=body)
    assert r.status_code == 200 and r.json()["msg"] == "HTTP HEADER: X-GEWE-TOKEN=nope 不可用或已过期"
    assert sends(client) == []


def test_gewe_revoke(client: httpx.Client) -> None:
    sent = gewe_text(client).json()["data"]
    rounded = str(int(float(sent["newMsgId"])))
    revoke = {
        "appId": "wx_demo_gewe",
        "toWxid": "wxid_a",
        "msgId": str(sent["msgId"]),
        "newMsgId": rounded,
        "createTime": str(sent["createTime"]),
    }
    url = "/gewe/v2/api/message/revokeMsg"
    # like the vendor, a rounded id "succeeds" and revokes nothing (Devo919/Gewechat#70, #166)
    assert client.post(url, headers=GEWE_TOKEN, json=revoke).json() == {"ret": 200, "msg": "操作成功"}
    assert sends(client)[0]["revoked"] is False
    revoke["newMsgId"] = str(sent["newMsgId"])
    assert client.post(url, headers=GEWE_TOKEN, json=revoke).json() == {"ret": 200, "msg": "操作成功"}
    assert sends(client)[0]["revoked"] is True
    assert client.post(url, headers=GEWE_TOKEN, json=revoke).json()["ret"] == 500  # already revoked
    del revoke["createTime"]
    assert client.post(url, headers=GEWE_TOKEN, json=revoke).json()["msg"] == "参数错误: createTime 不能为空"
    assert len(sends(client)) == 1


def test_every_revoke_call_is_recorded_with_the_ids_it_named(client: httpx.Client) -> None:
    sent = gewe_text(client).json()["data"]
    url = "/gewe/v2/api/message/revokeMsg"
    exact = {"msgId": sent["msgId"], "newMsgId": sent["newMsgId"], "createTime": sent["createTime"]}
    wrong = {**exact, "newMsgId": sent["newMsgId"] + 1}
    for ids in (wrong, exact, exact):
        body = {"appId": "wx_demo_gewe", "toWxid": "wxid_a", **{k: str(v) for k, v in ids.items()}}
        client.post(url, headers=GEWE_TOKEN, json=body)
    revokes = client.get("/_sim/revokes", params={"instance": "wx_demo_gewe"}).json()["revokes"]
    assert [(r["ids"], r["outcome"]) for r in revokes] == [
        (wrong, "no_match"),
        (exact, "revoked"),
        (exact, "already_revoked"),
    ]
    assert all(r["received_at"] <= r["answered_at"] and r["to"] == "wxid_a" for r in revokes)
    (record,) = sends(client)
    assert record["revokes"] == [revokes[1]["seq"], revokes[2]["seq"]] and revokes[1]["send_seq"] == record["seq"]
    assert client.get("/_sim/revokes", params={"instance": "other"}).json()["revokes"] == []


def test_a_revoke_past_the_window_after_create_time_fails(client: httpx.Client) -> None:
    assert client.get("/_sim/revoke_window").json() == {"window_s": 120.0}  # WeChat's two minutes
    assert client.post("/_sim/revoke_window", json={"window_s": -1}).status_code == 400
    assert client.post("/_sim/revoke_window", json={"seconds": 1}).status_code == 400
    assert client.post("/_sim/revoke_window", json={"window_s": 0}).json() == {"window_s": 0.0}
    sent = gewe_text(client).json()["data"]
    time.sleep(1.01)  # createTime is in whole seconds: now it is more than 0 s old
    body = {"appId": "wx_demo_gewe", "toWxid": "wxid_a"}
    body.update({k: str(sent[k]) for k in ("msgId", "newMsgId", "createTime")})
    answer = client.post("/gewe/v2/api/message/revokeMsg", headers=GEWE_TOKEN, json=body).json()
    assert answer["ret"] == 500
    assert sends(client)[0]["revoked"] is False
    assert client.get("/_sim/revokes").json()["revokes"][0]["outcome"] == "too_late"
    client.post("/_sim/reset")
    assert client.get("/_sim/revoke_window").json() == {"window_s": 120.0}


def test_gewe_check_online(client: httpx.Client) -> None:
    url = "/gewe/v2/api/login/checkOnline"
    body = {"appId": "wx_demo_gewe"}
    assert client.post(url, headers=GEWE_TOKEN, json=body).json() == {
        "ret": 200,
        "msg": "操作成功",
        "data": True,
    }
    add_fault(client, kind="offline", vendor="gewe", times=1)
    assert client.post(url, headers=GEWE_TOKEN, json=body).json()["data"] is False
    assert client.post(url, headers=GEWE_TOKEN, json=body).json()["data"] is True
    add_fault(client, kind="token_invalid", vendor="gewe")
    r = client.post(url, headers=GEWE_TOKEN, json=body).json()
    assert r == {"ret": 500, "msg": "HTTP HEADER: X-GEWE-TOKEN=demo-gewe-token 不可用或已过期"}


# -- GeWe legacy ---------------------------------------------------------------------------------


def test_legacy_sendapp(client: httpx.Client) -> None:
    data = legacy_app(client).json()
    assert data["ret"] == 0 and data["msg"] == "success"
    assert data["data"]["BaseResponse"] == {"ret": 0, "errMsg": {}} and data["data"]["Count"] == 1
    (entry,) = data["data"]["List"]
    # seed 004's example: MsgId 0, Type 1 (even for sendapp)
    assert entry["Ret"] == 0 and entry["ToUsetName"] == {"string": "wxid_a"} and entry["Type"] == 1
    assert entry["MsgId"] == 0
    (record,) = sends(client)
    assert record["new_msg_id"] == entry["NewMsgId"] > 2**53
    assert record["client_msg_id"] == entry["NewClientMsgid"]
    assert record["msg_id"] == entry["MsgId"] and record["create_time"] == entry["Createtime"]
    assert record["kind"] == "app" and record["endpoint"] == "sendapp"

    bad = {"appid": "wx_demo_legacy", "to_wxid": "wxid_a", "xml": "<msg/>"}
    r = client.post("/api/message/sendapp", headers=LEGACY_TOKEN, json=bad)
    assert r.json()["ret"] == -1 and "msg_err" in r.json()
    r = client.post("/api/message/sendapp", headers=GEWE_TOKEN, json={**bad, "xml": APPMSG})
    assert r.json() == {"ret": -1, "msg_err": "X-GEWE-TOKEN 不可用或已过期"}
    r = client.post("/api/message/sendapp", headers=LEGACY_TOKEN, json={**bad, "appid": "x", "xml": APPMSG})
    assert r.json() == {"ret": -1, "msg_err": "设备不存在"}
    r = client.post("/api/message/sendapp", headers=LEGACY_TOKEN, json={"appid": "wx_demo_legacy"})
    assert r.json() == {"ret": -1, "msg_err": "参数错误: to_wxid 不能为空"}
    assert len(sends(client)) == 1


def test_legacy_sendmsg_per_recipient_fault(client: httpx.Client) -> None:
    entries: list[dict[str, Any]] = [
        {"to_wxid": to, "content": "hi", "msg_type": 1, "msg_source": "", "at": []} for to in ("wxid_a", "wxid_b")
    ]
    body = {"appid": "wx_demo_legacy", "to_wxid_list": entries}
    add_fault(client, kind="not_friend", vendor="gewe-legacy", to="wxid_b")
    data = client.post("/api/message/sendmsg", headers=LEGACY_TOKEN, json=body).json()
    assert data["ret"] == 0 and data["data"]["Count"] == 2
    ok, failed = data["data"]["List"]
    assert ok["Ret"] == 0 and ok["ToUsetName"]["string"] == "wxid_a" and ok["Type"] == 1
    assert failed["Ret"] == -1 and failed["ToUsetName"]["string"] == "wxid_b"
    (record,) = sends(client)
    assert record["to"] == "wxid_a" and record["new_msg_id"] == ok["NewMsgId"]
    assert record["endpoint"] == "sendmsg" and record["kind"] == "text"

    client.delete("/_sim/faults")
    data = client.post("/api/message/sendmsg", headers=LEGACY_TOKEN, json=body).json()
    assert [e["Ret"] for e in data["data"]["List"]] == [0, 0]
    assert len(sends(client)) == 3
    # a whole-call fault fails every recipient
    add_fault(client, kind="offline", vendor="gewe-legacy")
    r = client.post("/api/message/sendmsg", headers=LEGACY_TOKEN, json=body)
    assert r.json() == {"ret": -1, "msg_err": "微信已离线"}
    bad = {"appid": "wx_demo_legacy", "to_wxid_list": [{"to_wxid": "wxid_a"}]}
    assert client.post("/api/message/sendmsg", headers=LEGACY_TOKEN, json=bad).json()["ret"] == -1
    assert len(sends(client)) == 3


# -- E云管家 ---------------------------------------------------------------------------------------


def test_ecloud_sends(client: httpx.Client) -> None:
    data = ecloud_text(client).json()
    assert data["code"] == "1000" and data["data"]["wcId"] == "wxid_a"
    base = {"wId": "demo-ecloud-wid", "wcId": "g@chatroom"}
    r = client.post("/sendApp", headers=ECLOUD_TOKEN, json={**base, "content": MINI_APPMSG})
    assert r.json() == {"message": "发送成功", "code": "1000", "data": None}
    r = client.post("/sendApplet", headers=ECLOUD_TOKEN, json={**base, "content": APPMSG, "imgUrl": "https://i"})
    applet = r.json()["data"]
    assert r.json()["code"] == "1000" and applet["newMsgId"] > 2**53
    mini = {
        "displayName": "d",
        "iconUrl": "https://i",
        "appId": "wx1",
        "pagePath": "p",
        "thumbUrl": "https://t",
        "title": "t",
        "userName": "gh_1@app",
    }
    r = client.post("/sendApplets", headers=ECLOUD_TOKEN, json={**base, **mini})
    assert r.json()["code"] == "1000"
    records = sends(client, vendor="ecloud")
    assert [(s["endpoint"], s["kind"]) for s in records] == [
        ("sendText", "text"),
        ("sendApp", "miniapp"),
        ("sendApplet", "app"),
        ("sendApplets", "miniapp"),
    ]
    assert records[0]["new_msg_id"] == data["data"]["newMsgId"]
    assert records[0]["msg_id"] == data["data"]["msgId"]
    assert records[1]["new_msg_id"] is None  # /sendApp answers no ids
    assert records[2]["new_msg_id"] == applet["newMsgId"]

    def reject(path: str, body: dict[str, Any], headers: dict[str, str] = ECLOUD_TOKEN) -> str:
        r = client.post(path, headers=headers, json=body)
        assert r.json()["code"] == "1001" and r.json()["data"] is None
        return str(r.json()["message"])

    assert reject("/sendText", {**base, "content": "x"}, {"Authorization": "Bearer x"}) == (
        "Authorization 不可用或已过期"
    )
    assert reject("/sendText", {**base, "wId": "other", "content": "x"}) == "设备不存在"
    assert reject("/sendText", base) == "参数错误: content 不能为空"
    assert reject("/sendApplet", {**base, "content": "<msg><appmsg/></msg>"}).startswith("参数错误")
    assert reject("/sendApplets", {**base, **mini, "thumbUrl": ""}) == "参数错误: thumbUrl 不能为空"
    assert len(sends(client)) == 4


def test_ecloud_revoke_and_is_online(client: httpx.Client) -> None:
    sent = ecloud_text(client).json()["data"]
    revoke = {k: sent[k] for k in ("msgId", "newMsgId", "createTime")}
    revoke.update(wId="demo-ecloud-wid", wcId="wxid_a")
    wrong = {**revoke, "newMsgId": int(float(sent["newMsgId"]))}
    assert client.post("/revokeMsg", headers=ECLOUD_TOKEN, json=wrong).json()["code"] == "1001"
    assert client.post("/revokeMsg", headers=ECLOUD_TOKEN, json=revoke).json()["code"] == "1000"
    assert sends(client)[0]["revoked"] is True

    # an offline account answers the page's failure code ("1000成功（在线），10001失败（离线）"; 1001 is the
    # envelope's failure code everywhere else) (2048537793/WkApi api-wen-dang/wei-xin-guan-li/cha-xun-wei-xin-shi-fou-zai-xian.md)
    online = {"wId": "demo-ecloud-wid"}
    r = client.post("/isOnline", headers=ECLOUD_TOKEN, json=online).json()
    assert r == {"message": "成功", "code": "1000", "data": {"isOnline": True}}
    add_fault(client, kind="offline", vendor="ecloud", instance="demo-ecloud-wid")
    r = client.post("/isOnline", headers=ECLOUD_TOKEN, json=online).json()
    assert r == {"message": "失败", "code": "1001", "data": None}
    assert error_text("ecloud", ecloud_text(client).json()) == "微信已离线"


# -- OHwxapi MagicCgi ----------------------------------------------------------------------------


def test_ohwx_sends_and_revoke(client: httpx.Client) -> None:
    data = ohwx_text(client).json()
    assert data["CgiBaseResponse"] == {"ErrMsg": "", "Ret": 0}
    answer = data["ResponseData"]
    assert isinstance(answer["ClientMsgId"], str) and answer["NewMsgId"] > 2**53
    app = {"CgiCmd": 222, "CgiRequest": {"ToUserName": "g@chatroom", "AppMsgXml": MINI_APPMSG, "MsgType": 49}}
    assert client.post(OHWX_PATH, json=app).json()["CgiBaseResponse"]["Ret"] == 0
    first, second = sends(client, vendor="ohwxapi")
    assert first["new_msg_id"] == answer["NewMsgId"] and str(first["client_msg_id"]) == answer["ClientMsgId"]
    assert set(answer) == {"NewMsgId", "ClientMsgId"} and first["endpoint"] == "CgiCmd522"  # seed 002: no CreateTime
    assert second["endpoint"] == "CgiCmd222" and second["kind"] == "miniapp"

    # CgiCmd 594 as SZUEA/AJBot EAbotoy/action.py sends it
    cgi = {"OpCode": 0, "NewMsgId": answer["NewMsgId"], "ToUserName": "wxid_a"}
    for wrong in ({**cgi, "OpCode": 1}, {**cgi, "ClientMsgId": answer["ClientMsgId"]}, {**cgi, "MsgId": 5}):
        assert client.post(OHWX_PATH, json={"CgiCmd": 594, "CgiRequest": wrong}).json()["CgiBaseResponse"]["Ret"] == -1
    assert sends(client)[0]["revoked"] is False
    revoke = {"CgiCmd": 594, "CgiRequest": cgi}
    assert client.post(OHWX_PATH, json=revoke).json()["CgiBaseResponse"]["Ret"] == 0
    assert sends(client)[0]["revoked"] is True
    r = client.post(OHWX_PATH, json=revoke).json()["CgiBaseResponse"]
    assert r == {"ErrMsg": "撤回失败", "Ret": -1}


def test_ohwx_rejections(client: httpx.Client) -> None:
    body = {"CgiCmd": 522, "CgiRequest": {"ToUserName": "wxid_a", "Content": "x", "MsgType": 1}}
    r = client.post("/v2/api?funcname=MagicCgi&wxid=wxid_demo_ohwx", json=body).json()
    assert r == {
        "CgiBaseResponse": {"ErrMsg": "参数错误: missing query parameter timeout", "Ret": -1},
        "ResponseData": None,
    }
    r = client.post("/v2/api?funcname=MagicCgi&timeout=10&wxid=wxid_nobody", json=body).json()
    assert r["CgiBaseResponse"] == {"ErrMsg": "设备不存在", "Ret": -1}
    bad_xml = {"CgiCmd": 222, "CgiRequest": {"ToUserName": "a", "AppMsgXml": "<msg/>", "MsgType": 49}}
    assert client.post(OHWX_PATH, json=bad_xml).json()["CgiBaseResponse"]["Ret"] == -1
    no_content = {"CgiCmd": 522, "CgiRequest": {"ToUserName": "a", "MsgType": 1}}
    r = client.post(OHWX_PATH, json=no_content).json()
    assert r["CgiBaseResponse"]["ErrMsg"] == "参数错误: Content 不能为空"

    # an account with a token requires "Authorization: Bearer <token>"
    account = {"vendor": "ohwxapi", "instance": "wxid_secure", "token": "s3cret"}
    assert client.post("/_sim/accounts", json=account).status_code == 200
    path = "/v2/api?funcname=MagicCgi&timeout=10&wxid=wxid_secure"
    r = client.post(path, json=body).json()
    assert r["CgiBaseResponse"] == {"ErrMsg": "token 不可用或已过期", "Ret": -1}
    r = client.post(path, json=body, headers={"Authorization": "Bearer s3cret"}).json()
    assert r["CgiBaseResponse"]["Ret"] == 0
    assert len(sends(client)) == 1


# -- faults ----------------------------------------------------------------------------------------

ENVELOPE_FAULTS = {
    # kind: {vendor: expected error text}
    "throttled": {
        "gewe": "发送频率过快",
        "gewe-legacy": "发送频率过快",
        "ecloud": "发送频率过快",
        "ohwxapi": "",  # Ret 241 with an empty ErrMsg (as SZUEA/AJBot reads it): test_ohwx_throttled_is_ret_241
    },
    "offline": dict.fromkeys(SENDERS, "微信已离线"),
    "offline_hidden": dict.fromkeys(SENDERS, "微信已离线"),
    "not_friend": dict.fromkeys(SENDERS, "对方不是你的好友"),
    "token_invalid": {
        "gewe": "HTTP HEADER: X-GEWE-TOKEN=demo-gewe-token 不可用或已过期",
        "gewe-legacy": "X-GEWE-TOKEN 不可用或已过期",
        "ecloud": "Authorization 不可用或已过期",
        "ohwxapi": "token 不可用或已过期",
    },
    "generic": {"gewe": "发送消息失败", "gewe-legacy": "失败", "ecloud": "失败", "ohwxapi": ""},
}


@pytest.mark.parametrize("vendor", list(SENDERS))
@pytest.mark.parametrize("kind", list(ENVELOPE_FAULTS))
def test_envelope_faults(client: httpx.Client, vendor: str, kind: str) -> None:
    add_fault(client, kind=kind, vendor=vendor, times=1)
    r = SENDERS[vendor](client)
    assert r.status_code == 200
    assert not is_success(vendor, r.json())
    assert error_text(vendor, r.json()) == ENVELOPE_FAULTS[kind][vendor]
    assert sends(client) == []
    assert is_success(vendor, SENDERS[vendor](client).json())  # times=1: used up
    assert len(sends(client)) == 1


def test_ohwx_throttled_is_ret_241(client: httpx.Client) -> None:
    add_fault(client, kind="throttled", vendor="ohwxapi", times=1)
    assert ohwx_text(client).json() == {"CgiBaseResponse": {"ErrMsg": "", "Ret": 241}, "ResponseData": None}


def test_gewe_fault_envelopes_exact(client: httpx.Client) -> None:
    add_fault(client, kind="offline", times=1)
    assert gewe_text(client).json() == {
        "ret": 500,
        "msg": "发送消息失败",
        "data": {"code": "-1", "msg": "微信已离线"},
    }
    add_fault(client, kind="generic", times=1)
    assert gewe_text(client).json() == {"ret": 500, "msg": "发送消息失败", "data": None}


@pytest.mark.parametrize("vendor", list(SENDERS))
def test_http_faults(client: httpx.Client, vendor: str) -> None:
    add_fault(client, kind="http_500", vendor=vendor, times=1)
    add_fault(client, kind="http_503", vendor=vendor, times=1)
    add_fault(client, kind="http_429", vendor=vendor, times=1)
    r = SENDERS[vendor](client)
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    assert r.text == "<html>Bad Gateway</html>"
    r = SENDERS[vendor](client)
    assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
    r = SENDERS[vendor](client)
    assert r.status_code == 429 and r.headers["content-type"].startswith("text/plain")
    assert sends(client) == []


def test_slow_fault_still_sends(client: httpx.Client) -> None:
    add_fault(client, kind="slow", delay_s=0.3, times=1)
    started = time.monotonic()
    assert ohwx_text(client).json()["CgiBaseResponse"]["Ret"] == 0
    assert time.monotonic() - started >= 0.3
    assert len(sends(client)) == 1


@pytest.mark.parametrize(("kind", "recorded"), [("timeout_after", 1), ("timeout_before", 0)])
def test_timeout_faults(client: httpx.Client, sim: SimulatorServer, kind: str, recorded: int) -> None:
    add_fault(client, kind=kind, delay_s=0.5, times=1)
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            "/gewe/v2/api/message/postText",
            headers=GEWE_TOKEN,
            json={"appId": "wx_demo_gewe", "toWxid": "wxid_t", "content": "x"},
            timeout=httpx.Timeout(5.0, read=0.2),
        )
    time.sleep(0.45)  # let the server finish its sleep
    assert len(sim.state.sends(to="wxid_t")) == recorded


def test_fault_selectors_times_probability(client: httpx.Client) -> None:
    add_fault(client, kind="generic", vendor="gewe", to="wxid_b")
    add_fault(client, kind="generic", vendor="ecloud", instance="other-wid")
    assert gewe_text(client, to="wxid_a").json()["ret"] == 200
    assert gewe_text(client, to="wxid_b").json()["ret"] == 500
    assert ecloud_text(client, to="wxid_b").json()["code"] == "1000"
    client.delete("/_sim/faults")

    add_fault(client, kind="throttled", times=2)
    results = [gewe_text(client).json()["ret"] for _ in range(3)]
    assert results == [500, 500, 200]
    assert client.get("/_sim/faults").json()["faults"] == []

    add_fault(client, kind="generic", probability=0.0)
    assert gewe_text(client).json()["ret"] == 200
    client.delete("/_sim/faults")
    add_fault(client, kind="generic", probability=0.5)
    outcomes = {gewe_text(client).json()["ret"] for _ in range(40)}
    assert outcomes == {200, 500}


def test_fault_probability_in_state(sim: SimulatorServer) -> None:
    state = sim.state
    state.reset()
    state.add_fault("generic", probability=0.25)
    hits = sum(state.take_fault("gewe", "wx_demo_gewe", "x") is not None for _ in range(4000))
    assert 800 < hits < 1200
    with pytest.raises(ValueError):
        state.add_fault("nope")
    state.reset()


# -- admin API -------------------------------------------------------------------------------------


def test_admin_api(client: httpx.Client) -> None:
    assert client.get("/_sim/health").json() == {"ok": True}
    accounts = client.get("/_sim/accounts").json()["accounts"]
    assert {a["vendor"] for a in accounts} >= {"gewe", "gewe-legacy", "ecloud", "ohwxapi"}
    assert all(a["token"] in ("***", "") for a in accounts)
    assert "demo-gewe-token" not in client.get("/_sim/accounts").text
    assert client.post("/_sim/accounts", json={"vendor": "wat", "instance": "x", "token": ""}).status_code == 400

    fid = add_fault(client, kind="slow", delay_s=0.01, vendor="gewe")
    assert client.post("/_sim/faults", json={"kind": "bogus"}).status_code == 400
    assert [f["id"] for f in client.get("/_sim/faults").json()["faults"]] == [fid]
    assert client.delete(f"/_sim/faults/{fid}").status_code == 200
    assert client.delete(f"/_sim/faults/{fid}").status_code == 404
    add_fault(client, kind="generic", vendor="ecloud")
    assert client.delete("/_sim/faults").json() == {"removed": 1}

    gewe_text(client, to="wxid_a")
    ecloud_text(client, to="wxid_b")
    gewe_text(client, to="wxid_b")
    all_sends = sends(client)
    assert len(all_sends) == 3
    assert [s["to"] for s in sends(client, vendor="gewe")] == ["wxid_a", "wxid_b"]
    assert [s["vendor"] for s in sends(client, to="wxid_b")] == ["ecloud", "gewe"]
    assert len(sends(client, instance="demo-ecloud-wid")) == 1
    assert sends(client, since_seq=all_sends[1]["seq"]) == all_sends[2:]
    add_fault(client, kind="generic")
    assert client.post("/_sim/reset").json() == {"ok": True}
    assert sends(client) == [] and client.get("/_sim/faults").json()["faults"] == []
    assert len(client.get("/_sim/accounts").json()["accounts"]) >= 4


def test_load_accounts(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[[accounts]]\nvendor = "gewe"\ninstance = "wx_1"\ntoken = "t"\n\n'
        '[[accounts]]\nvendor = "ohwxapi"\ninstance = "wxid_2"\ntoken = ""\n',
        encoding="utf-8",
    )
    assert load_accounts(path) == (SimAccount("gewe", "wx_1", "t"), SimAccount("ohwxapi", "wxid_2", ""))
    assert len(DEMO_ACCOUNTS) == 4


# -- issue 11: answers traceable to the vendors' docs and issues -----------------------------------


def test_daily_cap_fault_hits_only_mini_programs(client: httpx.Client) -> None:
    fault = add_fault(client, kind="daily_cap", vendor="gewe")
    assert gewe_text(client).json()["ret"] == 200  # text is not capped
    base = {"appId": "wx_demo_gewe", "toWxid": "g@chatroom"}
    r = client.post("/gewe/v2/api/message/postAppMsg", headers=GEWE_TOKEN, json={**base, "appmsg": MINI_APPMSG})
    # WeChat's words for the cap (wechaty/python-wechaty#133); 发送小程序失败 -2 is the cover (cover_refused)
    assert r.json() == {"ret": 500, "msg": "Too many attempts. Try again later", "data": None}
    r = client.post("/gewe/v2/api/message/postAppMsg", headers=GEWE_TOKEN, json={**base, "appmsg": APPMSG})
    assert r.json()["ret"] == 200  # a link card is not a mini-program
    assert [s["kind"] for s in sends(client)] == ["text", "app"]
    assert next(f for f in client.get("/_sim/faults").json()["faults"] if f["id"] == fault)["hits"] == 1
    add_fault(client, kind="daily_cap", vendor="ecloud")
    r = client.post(
        "/sendApplet",
        headers=ECLOUD_TOKEN,
        json={"wId": "demo-ecloud-wid", "wcId": "g@chatroom", "content": MINI_APPMSG, "imgUrl": "https://i"},
    )
    assert r.json() == {"code": "1001", "message": "Too many attempts. Try again later", "data": None}


def test_offline_hidden_fails_sends_while_check_online_says_true(client: httpx.Client) -> None:
    add_fault(client, kind="offline_hidden", vendor="gewe")
    r = gewe_text(client).json()
    assert r == {"ret": 500, "msg": "发送消息失败", "data": {"code": "-1", "msg": "微信已离线"}}  # Gewechat#36
    check = client.post("/gewe/v2/api/login/checkOnline", headers=GEWE_TOKEN, json={"appId": "wx_demo_gewe"})
    assert check.json() == {"ret": 200, "msg": "操作成功", "data": True}
    assert gewe_text(client).json()["ret"] == 500  # still offline
    assert sends(client) == []


def test_ecloud_mini_program_cover_and_card_icon(client: httpx.Client) -> None:
    base = {"wId": "demo-ecloud-wid", "wcId": "g@chatroom"}
    r = client.post("/sendApplet", headers=ECLOUD_TOKEN, json={**base, "content": MINI_APPMSG})
    assert r.json() == {"code": "1001", "message": "参数错误: imgUrl 不能为空", "data": None}
    card = {
        "displayName": "d",
        "appId": "wx1",
        "pagePath": "p",
        "thumbUrl": "https://t",
        "title": "t",
        "userName": "gh_1@app",
    }
    # iconUrl is marked required (wkteam.cn 发送小程序): missing or empty is refused like any required field
    assert client.post("/sendApplets", headers=ECLOUD_TOKEN, json={**base, **card}).json()["code"] == "1001"
    with_empty_icon = {**base, **card, "iconUrl": ""}
    r = client.post("/sendApplets", headers=ECLOUD_TOKEN, json=with_empty_icon).json()
    assert r == {"code": "1001", "message": "参数错误: iconUrl 不能为空", "data": None}
    bad_icon = {**base, **card, "iconUrl": 5}
    assert client.post("/sendApplets", headers=ECLOUD_TOKEN, json=bad_icon).json()["code"] == "1001"
    with_icon = {**base, **card, "iconUrl": "https://i"}
    assert client.post("/sendApplets", headers=ECLOUD_TOKEN, json=with_icon).json()["code"] == "1000"
    assert [s["endpoint"] for s in sends(client)] == ["sendApplets"]


def test_gewe_forward_mini_app_accepts_the_vendor_example_shape(client: httpx.Client) -> None:
    # GeweAPI-Official/消息模块/转发小程序.md: declaration, <msg>, <appmsg> and its siblings, tabs and newlines
    xml = (
        '<?xml version="1.0"?>\n<msg>\n\t<appmsg appid="" sdkver="0">\n\t\t<title>t</title>\n\t\t<type>33</type>\n'
        "\t</appmsg>\n\t<fromusername>zhangchuan2288</fromusername>\n\t<scene>0</scene>\n\t<appinfo>\n"
        "\t\t<version>1</version>\n\t\t<appname></appname>\n\t</appinfo>\n\t<commenturl></commenturl>\n</msg>"
    )
    body = {"appId": "wx_demo_gewe", "toWxid": "34757816141@chatroom", "xml": xml, "coverImgUrl": "http://c/1"}
    r = client.post("/gewe/v2/api/message/forwardMiniApp", headers=GEWE_TOKEN, json=body).json()
    assert r["ret"] == 200 and set(r["data"]) == {"toWxid", "createTime", "msgId", "newMsgId", "type"}
    assert r["data"]["type"] == 33
