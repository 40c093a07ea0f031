"""What the CLI prints when a request fails: the API's words and status, then the same refusal in Chinese."""

from __future__ import annotations

import httpx
import pytest

from scheduler.cli.client import ApiError, Client, UnreachableError


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            ApiError(404, "not_found", "no campaign 'c-1'"),
            "no campaign 'c-1' (HTTP 404 not_found) / 未找到群发 'c-1'",
        ),
        (
            ApiError(404, "not_found", "no message 'j-1'", "id"),
            "no message 'j-1' (HTTP 404 not_found, field id) / 未找到消息 'j-1'",
        ),
        (ApiError(404, "not_found", "'j-2' is not a dead letter", "id"), "/ 'j-2' 不是死信"),
        (ApiError(404, "no_route", "the API at http://x has no route /v1/y"), "/ API 没有这个路由（版本较旧？）"),
        (
            ApiError(422, "invalid", "to: not a wxid", "to"),
            "to: not a wxid (HTTP 422 invalid) / 输入有误（字段 to）",
        ),
        (
            ApiError(422, "invalid", "cron: not a valid cron expression (5 fields, or 6 with seconds last)", "cron"),
            "/ cron 表达式无效（5 段：分 时 日 月 周；或 6 段，最后一段为秒）",
        ),
        (ApiError(422, "invalid", "cron: cron '0 0 31 2 *' never fires", "cron"), "/ cron 表达式永远不会触发"),
        (ApiError(409, "conflict", "cannot resume a campaign that is cancelled"), "/ 当前状态下无法执行"),
        (ApiError(503, "store_unavailable", "the job store (Redis) is unreachable"), "/ 任务存储（Redis）不可达"),
        (
            # the API wrote it in both languages (a 403): the status goes after the English half, nothing added
            ApiError(
                403, "forbidden", "this needs the admin role; key 'v' is viewer / 需要“管理员”角色", "Authorization"
            ),
            "this needs the admin role; key 'v' is viewer (HTTP 403 forbidden, field Authorization) / 需要“管理员”角色",
        ),
    ],
)
def test_an_api_error_reads_in_english_then_chinese(error: ApiError, line: str) -> None:
    shown = str(error)
    assert shown.count(" / ") == 1 and (shown == line or (line.startswith("/ ") and line in shown)), shown


def answering(status: int, body: dict[str, object]) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, json=body))


def test_a_refused_token_says_so_in_both_languages() -> None:
    body = {"error": {"code": "unauthorized", "message": "bad key"}}
    with Client("http://api.test", "wrong", transport=answering(401, body)) as api, pytest.raises(ApiError) as caught:
        api.campaigns()
    english, chinese = str(caught.value).split(" / ")
    assert english.startswith("the API at http://api.test refused the token") and "(HTTP 401 unauthorized)" in english
    assert (
        chinese
        == "http://api.test 上的 API 拒绝了该 token（密钥无效或已吊销）：请用 --token 或 BROADCAST_API_TOKEN 指定它的一个密钥"
        "（服务商账号的 token 用 --vendor-token）"
    )


def test_an_unreachable_api_says_so_in_both_languages() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    transport = httpx.MockTransport(refuse)
    with Client("http://api.test", "t", transport=transport) as api, pytest.raises(UnreachableError) as caught:
        api.campaigns()
    english, chinese = str(caught.value).split(" / ")
    assert english.startswith("cannot connect to the API at http://api.test (connection refused)")
    assert (
        chinese
        == "无法连接 http://api.test 上的 API：`broadcast api` 是否在运行？可用 --url 或 BROADCAST_API_URL 指定地址"
    )


def test_a_422_says_what_is_wrong_in_chinese_too() -> None:
    from scheduler.cli.client import error_zh

    zh = error_zh(422, "invalid", "message.text: String should have at least 1 character", "message.text")
    assert zh == "输入有误（字段 message.text）：至少 1 个字符"
    assert error_zh(422, "invalid", "limits.x: Extra inputs are not permitted", "limits.x").endswith("：不认识的字段")
    assert error_zh(422, "invalid", "to: something rare", "to") == "输入有误（字段 to）"  # the English says it
