"""What a security tester found in issue 24's hardening, each shown fixed: JSON shape limits that a form
Content-Type (or a second Content-Type header) skipped, cloud metadata and IPv4-in-IPv6 addresses missing
from the vendor deny list, tokens stored in plain text in prod, invisible characters shown as nothing, a
500 without the error shape and headers, and a forced replay audited like a plain one.

In process (TestClient against a real Redis); no traffic leaves for anything but 127.0.0.1."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
import redis
from cryptography.fernet import Fernet
from fastapi import Response
from starlette.testclient import TestClient

from scheduler.api.app import create_app
from scheduler.api.errors import ApiError
from tests.conftest import API_TOKEN
from worker.settings import Settings
from worker.store.keys import Keys

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def client_for(redis_url: str, **settings: Any) -> TestClient:
    config = Settings(redis_url=redis_url, key_prefix=f"x{uuid.uuid4().hex[:8]}", api_token=API_TOKEN, **settings)
    app = create_app(config, client=redis.Redis.from_url(redis_url, decode_responses=True))
    return TestClient(app, raise_server_exceptions=False)


def deep_campaign(depth: int) -> bytes:
    return (
        '{"name":"n","account":"demo-gewe","draft":true,"message":{"kind":"text","text":"x"},"x":'
        + "[" * depth
        + "]" * depth
        + ',"recipients":[{"to":"wxid_a"}]}'
    ).encode()


# --- 1 and 2. the JSON scan is decided by the route, not by the client's Content-Type ---------------------------


def test_a_json_body_labelled_a_form_is_still_scanned_and_raw_routes_take_only_their_type(redis_url: str) -> None:
    client = client_for(redis_url)
    for content_type in ("multipart/form-data", "application/x-www-form-urlencoded", "text/csv", ""):
        answer = client.post(
            "/v1/campaigns", content=deep_campaign(200), headers={**AUTH, "Content-Type": content_type}
        )
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "json_limit", (content_type, answer.text)
    deep = b'{"to":"wxid_a","message":' + b"[" * 200 + b"]" * 200 + b"}"
    answer = client.post("/v1/messages/check", content=deep, headers={**AUTH, "Content-Type": "multipart/form-data"})
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "json_limit", answer.text

    # the routes that take forms or CSV refuse anything else when they read it (after the role check)
    answer = client.post("/v1/campaigns/upload", content=deep, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "spec"  # not a form: never read
    for path, content_type in (
        ("/v1/campaigns/upload", "application/x-www-form-urlencoded"),
        ("/v1/suppressions/import", "application/json"),
        ("/v1/suppressions/import", "multipart/form-data; boundary=x"),
    ):
        answer = client.post(path, content=deep, headers={**AUTH, "Content-Type": content_type})
        assert answer.status_code == 415, (path, content_type, answer.text)
        assert answer.json()["error"] == {
            "code": "unsupported_media_type",
            "message": answer.json()["error"]["message"],
            "field": "content-type",
        }
    csv = b"to,note\nwxid_csv," + b"[" * 200 + b"\n"
    answer = client.post("/v1/suppressions/import", content=csv, headers={**AUTH, "Content-Type": "text/csv"})
    assert answer.status_code == 200, answer.text  # a CSV note may hold any brackets


def test_two_content_type_headers_are_refused(redis_url: str) -> None:
    client = client_for(redis_url)
    headers = [
        ("Authorization", f"Bearer {API_TOKEN}"),
        ("Content-Type", "application/json"),
        ("Content-Type", "multipart/form-data; boundary=x"),
    ]
    answer = client.post("/v1/messages/check", content=b"[" + b"{}," * 1000 + b"{}]", headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "ambiguous_content_type"


def test_the_campaign_route_scans_a_body_the_middleware_did_not(redis_url: str) -> None:
    from scheduler.api.routers.campaigns import _campaign_from_json

    state = client_for(redis_url).app.state.api  # type: ignore[attr-defined]
    with pytest.raises(ApiError) as refused:
        _campaign_from_json(state, deep_campaign(200), Response(), scanned=False)
    assert refused.value.status == 422 and refused.value.code == "json_limit"


# --- 3. cloud metadata and IPv4 inside IPv6 -------------------------------------------------------------------

METADATA = (
    "100.100.100.200",  # Alibaba Cloud ECS
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
    "64:ff9b::a9fe:a9fe",  # NAT64 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 127.0.0.1
    "::ffff:100.100.100.200",  # IPv4-mapped
)


def test_metadata_and_embedded_ipv4_addresses_are_refused_by_the_ipv4_rules() -> None:
    from worker.runtime.connections import VendorNetwork

    prod = VendorNetwork.from_settings(Settings())
    for address in METADATA:
        assert prod.refuses(address), address
        assert prod.literal_refused(f"[{address}]" if ":" in address else address), address
    for address in ("203.0.113.5", "64:ff9b::cb00:7105", "::cb00:7105", "2001:db8::1"):
        assert not prod.refuses(address), address
    allowed = VendorNetwork.from_settings(Settings(vendor_allow="127.0.0.0/8"))
    assert not allowed.refuses("64:ff9b::7f00:1") and not allowed.refuses("::7f00:1")  # the IPv4 rules, both ways


def test_metadata_addresses_are_refused_at_put_and_at_connect(redis_url: str) -> None:
    from worker.runtime.connections import new_vendor_http_client

    client = client_for(redis_url, secret_key=Fernet.generate_key().decode())
    for address in METADATA:
        host = f"[{address}]" if ":" in address else address
        body = {"vendor": "gewe", "base_url": f"http://{host}/gewe/v2/api", "token": "t", "instance": "i"}
        answer = client.put("/v1/accounts/meta", json=body, headers=AUTH)
        assert answer.status_code == 422 and answer.json()["error"]["field"] == "base_url", (address, answer.text)
    assert client.get("/v1/accounts/meta", headers=AUTH).status_code == 404

    # at connect: refused before any socket is opened (the check is on the address, the port is a closed one)
    with new_vendor_http_client(Settings()) as vendor:
        for address in METADATA:
            host = f"[{address}]" if ":" in address else address
            with pytest.raises(httpx.ConnectError, match="may not reach"):
                vendor.get(f"http://{host}:9/latest/meta-data")


# --- 4. no vendor token in plain text in prod -----------------------------------------------------------------


def test_prod_refuses_to_store_a_token_without_a_secret_key(redis_url: str) -> None:
    body = {"vendor": "gewe", "base_url": "http://vendor.example/gewe/v2/api", "token": "tok-PLAIN", "instance": "i"}
    client = client_for(redis_url)
    prefix = client.app.state.api.settings.key_prefix  # type: ignore[attr-defined]
    answer = client.put("/v1/accounts/gw", json=body, headers=AUTH)
    assert answer.status_code == 409, answer.text
    error = answer.json()["error"]
    assert error["code"] == "secret_key_required" and "BROADCAST_SECRET_KEY" in error["message"]
    assert error["field"] == "token" and "tok-PLAIN" not in answer.text
    assert not redis.Redis.from_url(redis_url).exists(Keys(prefix).account("gw"))

    keyed = client_for(redis_url, secret_key=Fernet.generate_key().decode())
    assert keyed.put("/v1/accounts/gw", json=body, headers=AUTH).status_code == 200
    dev = client_for(redis_url, env="dev")  # dev keeps working without a key
    assert dev.put("/v1/accounts/gw", json=body, headers=AUTH).status_code == 200


# --- 5. invisible characters, by Unicode category ------------------------------------------------------------


def test_the_cli_escapes_every_invisible_character_and_json_stays_exact(capsys: pytest.CaptureFixture[str]) -> None:
    from scheduler.cli.render import print_json, visible

    hidden = {
        "\U000e0041": "\\uDB40\\uDC41",  # tag character
        "\u3164": "\\u3164",  # Hangul fillers
        "\u115f": "\\u115F",
        "\u1160": "\\u1160",
        "\uffa0": "\\uFFA0",
        "\u2028": "\\u2028",  # line / paragraph separators
        "\u2029": "\\u2029",
        "\ufe0f": "\\uFE0F",  # variation selectors
        "\U000e0100": "\\uDB40\\uDD00",
        "\u034f": "\\u034F",  # combining grapheme joiner
        "\ue000": "\\uE000",  # private use
        "\u202e": "\\u202E",
    }
    for char, shown in hidden.items():
        assert visible(f"a{char}b") == f"a{shown}b", repr(char)
    assert visible("普通 中文\u3000全角 é\tx\n") == "普通 中文\u3000全角 é\tx\n"  # spaces, tabs, line feeds stay
    name = "".join(hidden)
    print_json({"name": name})
    out = capsys.readouterr().out
    assert not set(hidden) & set(out) and json.loads(out) == {"name": name}


# --- 6. a 500 has the error shape and the security headers ----------------------------------------------------


def test_an_unhandled_error_answers_in_the_error_shape_with_security_headers(redis_url: str) -> None:
    client = client_for(redis_url)

    def boom() -> None:
        raise RuntimeError("secret detail")

    client.app.add_api_route("/v1/test-boom", boom)  # type: ignore[attr-defined]
    answer = client.get("/v1/test-boom", headers=AUTH)
    assert answer.status_code == 500
    assert answer.json() == {
        "error": {"code": "internal_error", "message": answer.json()["error"]["message"], "field": None}
    }
    assert "secret detail" not in answer.text
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


# --- 7. a forced replay stands out in the audit trail --------------------------------------------------------


def test_a_forced_replay_is_audited_apart_from_a_plain_one(redis_url: str) -> None:
    client = client_for(redis_url)
    job = "12345"
    client.post(f"/v1/dead-letters/{job}/replay", headers=AUTH)
    client.post(f"/v1/dead-letters/{job}/replay?force=true", headers=AUTH)
    client.post("/v1/dead-letters/replay", json={"ids": [job], "force": True}, headers=AUTH)
    client.post("/v1/dead-letters/replay", json={"ids": [job]}, headers=AUTH)
    items, _ = client.app.state.api.audit.page(limit=10)  # type: ignore[attr-defined]
    assert [item["action"] for item in reversed(items)] == [
        "dead_letter.replay",
        "dead_letter.replay_force",
        "dead_letter.replay_bulk_force",
        "dead_letter.replay_bulk",
    ]


def test_siit_and_6to4_addresses_are_judged_by_the_ipv4_they_carry() -> None:
    from worker.runtime.connections import VendorNetwork

    prod = VendorNetwork.from_settings(Settings())
    for address in ("::ffff:0:a9fe:a9fe", "::ffff:0:7f00:1", "2002:a9fe:a9fe::1", "2002:7f00:1::"):
        assert prod.refuses(address), address
        assert prod.literal_refused(f"[{address}]"), address
    assert not prod.refuses("2002:cb00:7105::1") and not prod.refuses("::ffff:0:cb00:7105")
    allowed = VendorNetwork.from_settings(Settings(vendor_allow="127.0.0.0/8"))
    assert not allowed.refuses("::ffff:0:7f00:1") and not allowed.refuses("2002:7f00:1::")


def test_a_host_that_looks_like_an_ip_literal_but_does_not_parse_is_refused() -> None:
    from worker.runtime.connections import VendorNetwork

    prod = VendorNetwork.from_settings(Settings())
    for host in ("[fe80::1%25lo]", "127.1%2e0.1", "[::1", "[not-an-ip]"):
        assert prod.literal_refused(host), host
    for name in ("vendor.example.com", "cafe.de", "face.bad"):
        assert prod.literal_refused(name) is None, name
