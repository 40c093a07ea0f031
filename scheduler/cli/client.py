"""A small typed client for the producer HTTP API, used by the operator commands of ``broadcast``.

The CLI talks only HTTP, so an operator can run it from any machine that reaches the API. Where to
connect: ``url`` (``--url``) or ``BROADCAST_API_URL`` (default ``http://127.0.0.1:8000``); the bearer
token: ``token`` (``--token``) or ``BROADCAST_API_TOKEN``, the first key of a comma-separated list (the
API's own variable may hold several keys for rotation).

Errors, one root, translated at this boundary so callers never see ``httpx`` exceptions::

    ClientError                 anything that kept a request from succeeding; ``exit_code`` for the CLI
    ├── InvalidInput            refused before any request (a bad URL, a recipients file of unknown type)
    ├── ApiError                the API answered 4xx/5xx; ``{"error": {"code", "message", "field"}}``
    └── UnreachableError        no answer: connection refused, DNS, timeout, broken connection

The token is kept only in the ``Authorization`` header of the underlying ``httpx.Client``; it is never
part of a message, ``repr`` or exception text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "BROADCAST_API_URL"
TOKEN_ENV = "BROADCAST_API_TOKEN"  # noqa: S105 - the variable's name, not a secret
#: States after which a job never changes again.
TERMINAL = frozenset({"sent", "dead", "cancelled", "skipped"})
RECIPIENT_SUFFIXES = {".csv": "text/csv", ".jsonl": "application/x-ndjson", ".ndjson": "application/x-ndjson"}
CampaignAction = Literal["pause", "resume", "cancel", "start"]
ExportFormat = Literal["csv", "jsonl"]


class ClientError(Exception):
    """A request that did not succeed. ``exit_code``: 2 when the API refused the input (4xx), else 1."""

    @property
    def exit_code(self) -> int:
        return 1


class InvalidInput(ClientError):
    """Input refused before any request was made."""

    @property
    def exit_code(self) -> int:
        return 2


#: The Chinese half of an API error by its code, then by its status (as the console's ``err_…`` table says it).
ERRORS_ZH_BY_CODE = {
    "no_route": "API 没有这个路由（版本较旧？）",
    "invalid_json": "请求内容不是有效的 JSON",
    "idempotency_conflict": "幂等键已用于另一个请求",
    "key_exists": "同名密钥已存在",
    "account_offline": "账号离线",
    "account_busy": "账号正忙（正在发送或同步）",
    "token_required": "修改地址需要重新输入 token",
    "rate_limited": "请求过于频繁，请稍后再试",
    "store_unavailable": "任务存储（Redis）不可达，未保存任何内容",
    "vendor_error": "服务商拒绝了请求",
    "too_late": "已超过撤回时限",
    "unsupported": "该服务商不支持撤回",
    "not_revocable": "该消息无法撤回",
    "already_revoked": "该消息已撤回",
}
ERRORS_ZH_BY_STATUS = {
    400: "请求格式有误",
    401: "API 拒绝了该 token",
    403: "当前密钥的角色无权执行此操作",
    404: "未找到",
    409: "当前状态下无法执行",
    413: "内容过大",
    415: "内容类型不对",
    422: "输入有误",
    429: "请求过于频繁，请稍后再试",
}
#: What a 404 names, in Chinese: ``no campaign 'c1'`` → ``未找到群发 'c1'``.
_NOT_FOUND_ZH = {"message": "消息", "campaign": "群发", "account": "账号", "schedule": "定时任务", "key": "密钥"}
_NOT_FOUND = re.compile(r"^no (message|campaign|account|schedule|key) ('.*')$")
_NOT_DEAD = re.compile(r"^('.*') is not a dead letter$")
_NOT_SUPPRESSED = re.compile(r"^('.*') is not suppressed for ('.*')$")
_HAS_CHINESE = re.compile(r"[\u4e00-\u9fff]")


def error_zh(status: int, code: str, message: str, field: str | None) -> str:
    """The Chinese half of an API error: what kind of refusal it is, with the object or field it names."""
    if status == 404:
        if found := _NOT_FOUND.match(message):
            return f"未找到{_NOT_FOUND_ZH[found[1]]} {found[2]}"
        if found := _NOT_DEAD.match(message):
            return f"{found[1]} 不是死信"
        if found := _NOT_SUPPRESSED.match(message):
            return f"{found[1]} 不在 {found[2]} 的退订名单中"
    if field == "cron":
        if "never fires" in message:
            return "cron 表达式永远不会触发（如 2 月 31 日）"
        return "cron 表达式无效（5 段：分 时 日 月 周；或 6 段，最后一段为秒）"
    if field == "timezone" and "unknown timezone" in message:
        return "未知时区（请用 IANA 名称，如 Asia/Shanghai）"
    headline = ERRORS_ZH_BY_CODE.get(code) or ERRORS_ZH_BY_STATUS.get(status)
    if headline is None:
        headline = "服务暂时不可用" if status >= 500 else f"请求被拒绝（HTTP {status}）"
    if field and status == 422:
        detail = validation_zh(message.removeprefix(f"{field}: "))
        return f"{headline}（字段 {field}）" + (f"：{detail}" if detail else "")
    return headline


#: The commonest validation messages (pydantic's), in Chinese: the English half names the rest exactly.
_VALIDATION_ZH: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"String should have at least (\d+) characters?"), "至少 {0} 个字符"),
    (re.compile(r"String should have at most (\d+) characters?"), "最多 {0} 个字符"),
    (re.compile(r"List should have at least (\d+) items?"), "至少 {0} 项"),
    (re.compile(r"List should have at most (\d+) items?"), "最多 {0} 项"),
    (re.compile(r"Field required"), "必填"),
    (re.compile(r"Extra inputs are not permitted"), "不认识的字段"),
    (re.compile(r"Input should be a valid integer.*"), "应为整数"),
    (re.compile(r"Input should be a valid number.*"), "应为数字"),
    (re.compile(r"Input should be a valid boolean.*"), "应为 true 或 false"),
    (re.compile(r"Input should be a valid string.*"), "应为字符串"),
    (re.compile(r"Input should be greater than or equal to (\S+)"), "应大于或等于 {0}"),
    (re.compile(r"Input should be greater than (\S+)"), "应大于 {0}"),
    (re.compile(r"Input should be less than or equal to (\S+)"), "应小于或等于 {0}"),
    (re.compile(r"Input should be less than (\S+)"), "应小于 {0}"),
)


def validation_zh(message: str) -> str:
    """A validation message in Chinese when it is one of the common ones, else ""."""
    for pattern, zh in _VALIDATION_ZH:
        if found := pattern.fullmatch(message.strip()):
            return zh.format(*found.groups())
    return ""


class ApiError(ClientError):
    """The API answered with an error status."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    @property
    def exit_code(self) -> int:
        return 2 if 400 <= self.status < 500 else 1

    def __str__(self) -> str:
        """``message (HTTP 404 not_found) / 未找到群发 'c1'``: a message the API wrote bilingual (a 403) as is."""
        where = f", field {self.field}" if self.field and not self.message.startswith(f"{self.field}:") else ""
        english, _, chinese = self.message.partition(" / ")
        if not _HAS_CHINESE.search(chinese):
            english, chinese = self.message, error_zh(self.status, self.code, self.message, self.field)
        return f"{english} (HTTP {self.status} {self.code}{where}) / {chinese}"


class UnreachableError(ClientError):
    """No answer from the API."""


def resolve_url(url: str | None) -> str:
    """``url``, else ``BROADCAST_API_URL``, else the default; without a trailing slash."""
    chosen = (url or os.environ.get(URL_ENV) or DEFAULT_URL).strip().rstrip("/")
    if not chosen.startswith(("http://", "https://")):
        raise InvalidInput(
            f"the API URL must start with http:// or https:// (got {chosen!r}) / API 地址须以 http:// 或 https:// 开头"
        )
    return chosen


def resolve_token(token: str | None) -> str:
    """``token``, else ``BROADCAST_API_TOKEN``; the first of comma-separated keys; may be empty."""
    raw = token if token is not None else os.environ.get(TOKEN_ENV, "")
    return next((part.strip() for part in raw.split(",") if part.strip()), "")


def _dev_token_hint() -> str:
    """Where a running ``broadcast dev`` keeps its token, for the error a newcomer meets first."""
    from scheduler.devtools.devstack import live_token_files

    found = live_token_files()
    if len(found) == 1:
        return f' (`broadcast dev` is running: export {TOKEN_ENV}="$(cat {found[0]})")'
    return " (under `broadcast dev`: the try: line of its banner)"


class Client:
    """The producer API over HTTP. Every method returns the decoded JSON answer or raises ClientError."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = resolve_url(url)
        secret = resolve_token(token)
        if not all(33 <= ord(char) < 127 for char in secret):  # never echoed, not even in an error
            raise InvalidInput(
                "the API token has characters that cannot go in an HTTP header / API token 含有不能放入 HTTP 头的字符"
            )
        self.has_token = bool(secret)
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # --- plumbing ----------------------------------------------------------------------------------------

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            response = self._http.send(request, stream=stream)
        except httpx.ConnectError as exc:
            raise UnreachableError(
                f"cannot connect to the API at {self.url} ({_reason(exc)}); is `broadcast api` running? "
                f"Set --url or {URL_ENV} / 无法连接 {self.url} 上的 API：`broadcast api` 是否在运行？"
                f"可用 --url 或 {URL_ENV} 指定地址"
            ) from None
        except httpx.TimeoutException:
            raise UnreachableError(
                f"the API at {self.url} did not answer in time / {self.url} 上的 API 未及时应答"
            ) from None
        except httpx.HTTPError as exc:
            raise UnreachableError(
                f"talking to the API at {self.url} failed: {_reason(exc)} / 与 {self.url} 上的 API 通信失败"
            ) from None
        if response.status_code >= 400:
            if stream:
                response.read()
                response.close()
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> ApiError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or "error")
            message = str(error.get("message") or response.reason_phrase)
            field = error.get("field")
            if status == 404 and message == "Not Found":  # the router's answer: no such route
                return self._no_route(response)
            if status == 401:
                message = (
                    f"the API at {self.url} refused the token: set --token or {TOKEN_ENV} to one of its keys"
                    " (a vendor account's token is --vendor-token)"
                    f" / {self.url} 上的 API 拒绝了该 token（密钥无效或已吊销）：请用 --token 或 {TOKEN_ENV}"
                    " 指定它的一个密钥（服务商账号的 token 用 --vendor-token）"
                    if self.has_token
                    else f"no API token given: set --token or {TOKEN_ENV}{_dev_token_hint()}"
                    f" / 未提供 API token：请设置 --token 或 {TOKEN_ENV}"
                )
            return ApiError(status, code, message, str(field) if field else None)
        detail = body.get("detail") if isinstance(body, dict) else None
        if status == 404 and detail == "Not Found":
            return self._no_route(response)
        text = detail if isinstance(detail, str) else response.text.strip()[:200] or response.reason_phrase
        return ApiError(status, "http_error", f"{self.url} answered: {text}")

    def _no_route(self, response: httpx.Response) -> ApiError:
        path = response.request.url.path
        return ApiError(404, "no_route", f"the API at {self.url} has no route {path} (an older version?)")

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Any = None,
    ) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        request = self._http.build_request(method, path, params=clean, json=json, data=data, files=files)
        response = self._send(request)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                response.status_code, "bad_answer", f"{self.url}{path} answered something not JSON"
            ) from None

    # --- accounts -----------------------------------------------------------------------------------------

    def accounts(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/accounts")["accounts"])

    def account(self, account_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/accounts/{_seg(account_id)}"))

    def put_account(self, account_id: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace; a spec without ``token`` keeps the stored token."""
        return dict(self._call("PUT", f"/v1/accounts/{_seg(account_id)}", json=dict(spec)))

    def pause_account(self, account_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/accounts/{_seg(account_id)}/pause"))

    def resume_account(self, account_id: str, *, check_online: bool = True) -> dict[str, Any]:
        params = {"check_online": str(check_online).lower()}
        return dict(self._call("POST", f"/v1/accounts/{_seg(account_id)}/resume", params=params))

    # --- messages -----------------------------------------------------------------------------------------

    def send_message(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/messages`` → ``{id, status}``."""
        return dict(self._call("POST", "/v1/messages", json=dict(body)))

    def message(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/messages/{_seg(job_id)}"))

    def cancel_message(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/messages/{_seg(job_id)}/cancel"))

    def revoke_message(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/messages/{_seg(job_id)}/revoke"))

    # --- contacts and audiences ---------------------------------------------------------------------------

    def contacts_sync(self, account: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/accounts/{_seg(account)}/contacts/sync"))

    def contacts_sync_status(self, account: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/accounts/{_seg(account)}/contacts/sync"))

    def contacts_sync_cancel(self, account: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/accounts/{_seg(account)}/contacts/sync/cancel"))

    def contacts(self, account: str, **params: Any) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/accounts/{_seg(account)}/contacts", params=params))

    def labels(self, account: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/accounts/{_seg(account)}/labels"))

    def create_campaign(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/campaigns`` with a JSON body (an audience, no file)."""
        return dict(self._call("POST", "/v1/campaigns", json=dict(body)))

    # --- campaigns ----------------------------------------------------------------------------------------

    def upload_campaign(self, spec: Mapping[str, Any], recipients: Path) -> dict[str, Any]:
        """``POST /v1/campaigns/upload``: the spec as JSON, the recipients file streamed from disk."""
        import json

        media = RECIPIENT_SUFFIXES.get(recipients.suffix.lower())
        if media is None:
            raise InvalidInput(
                f"recipients: {recipients.name} must end in .csv, .jsonl or .ndjson"
                " / 接收人文件须为 .csv、.jsonl 或 .ndjson"
            )
        with recipients.open("rb") as handle:
            files = {"recipients": (recipients.name, handle, media)}
            data = {"spec": json.dumps(dict(spec), ensure_ascii=False)}
            return dict(self._call("POST", "/v1/campaigns/upload", data=data, files=files))

    def campaigns(self, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/campaigns", params={"limit": limit, "offset": offset})["campaigns"])

    def campaign(self, campaign_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/campaigns/{_seg(campaign_id)}"))

    def campaign_action(self, campaign_id: str, action: CampaignAction) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/campaigns/{_seg(campaign_id)}/{action}"))

    def test_campaign(self, campaign_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/campaigns/{id}/test``: the campaign's message to a few internal recipients."""
        return dict(self._call("POST", f"/v1/campaigns/{_seg(campaign_id)}/test", json=dict(body)))

    def recall_campaign(self, campaign_id: str, *, window_s: float | None = None) -> dict[str, Any]:
        """``POST /v1/campaigns/{id}/recall``: stop it and revoke what it sent inside the window."""
        body = {} if window_s is None else {"window_s": window_s}
        return dict(self._call("POST", f"/v1/campaigns/{_seg(campaign_id)}/recall", json=body))

    def deliveries(
        self, campaign_id: str, *, status: str | None = None, cursor: int = 0, limit: int = 100
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of per-recipient results and the next cursor (None at the end)."""
        params = {"status": status, "cursor": cursor, "limit": limit}
        page = self._call("GET", f"/v1/campaigns/{_seg(campaign_id)}/deliveries", params=params)
        return list(page["deliveries"]), page.get("next_cursor")

    @contextmanager
    def export(self, campaign_id: str, fmt: ExportFormat, *, status: str | None = None) -> Iterator[Iterator[bytes]]:
        """The whole export as a stream of bytes (``with client.export(...) as chunks: ...``)."""
        params = {"format": fmt, **({"status": status} if status else {})}
        request = self._http.build_request("GET", f"/v1/campaigns/{_seg(campaign_id)}/deliveries", params=params)
        response = self._send(request, stream=True)
        try:
            yield _chunks(response, self.url)
        finally:
            response.close()

    # --- dead letters -------------------------------------------------------------------------------------

    def dead_letters(
        self,
        *,
        account: str | None = None,
        campaign: str | None = None,
        reason: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        """``{dead_letters: [...], total}`` (``total`` counts the whole store, unfiltered)."""
        params = {"account": account, "campaign": campaign, "reason": reason, "limit": limit, "offset": offset}
        return dict(self._call("GET", "/v1/dead-letters", params=params))

    def dead_letter(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/dead-letters/{_seg(job_id)}"))

    def replay(self, job_ids: list[str], *, force: bool = False) -> dict[str, str]:
        """Each id → ``ok`` or why not (``not_dead``, ``missing``, ``unknown_outcome`` …). One id takes the
        one-job route, so the audit trail says ``dead_letter.replay``, not a bulk replay."""
        if len(job_ids) == 1:
            (job_id,) = job_ids
            try:
                self._call("POST", f"/v1/dead-letters/{_seg(job_id)}/replay", params={"force": str(force).lower()})
            except ApiError as exc:
                if exc.status == 404:
                    return {job_id: "missing"}
                if exc.status == 409:
                    return {job_id: exc.code}
                raise
            return {job_id: "ok"}
        answer = self._call("POST", "/v1/dead-letters/replay", json={"ids": job_ids, "force": force})
        return {str(k): str(v) for k, v in answer["results"].items()}

    def delete_dead_letter(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/v1/dead-letters/{_seg(job_id)}"))

    # --- recurring schedules ------------------------------------------------------------------------------

    def schedules(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/schedules")["schedules"])

    def schedule(self, schedule_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/schedules/{_seg(schedule_id)}"))

    def create_schedule(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/schedules", json=dict(body)))

    def steer_schedule(self, schedule_id: str, action: str) -> dict[str, Any]:
        """``pause`` or ``resume`` a schedule."""
        return dict(self._call("POST", f"/v1/schedules/{_seg(schedule_id)}/{action}"))

    def delete_schedule(self, schedule_id: str) -> Any:
        return self._call("DELETE", f"/v1/schedules/{_seg(schedule_id)}")

    # --- operator keys and the audit trail ---------------------------------------------------------------

    def create_key(self, name: str, role: str, *, rate_per_min: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "role": role}
        if rate_per_min:
            body["rate_per_min"] = rate_per_min
        return dict(self._call("POST", "/v1/keys", json=body))

    def keys(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/keys")["keys"])

    def revoke_key(self, name: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/v1/keys/{_seg(name)}"))

    def audit(
        self, *, limit: int = 50, cursor: str | None = None, key: str | None = None, target: str | None = None
    ) -> dict[str, Any]:
        params = {"limit": limit, "cursor": cursor, "key": key, "target": target}
        return dict(self._call("GET", "/v1/audit", params=params))

    # --- suppressions and callbacks (issue 19) ---------------------------------------------------------------

    def add_suppression(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/suppressions", json=dict(body)))

    def suppressions(
        self, *, account: str | None = None, reason: str | None = None, cursor: str = "", limit: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of suppressions and the next cursor (None at the end)."""
        params = {"account": account, "reason": reason, "cursor": cursor or None, "limit": limit}
        page = self._call("GET", "/v1/suppressions", params=params)
        return list(page["suppressions"]), page.get("next_cursor")

    def remove_suppression(self, account: str, to: str) -> None:
        self._call("DELETE", f"/v1/suppressions/{_seg(account)}/{_seg(to)}")

    def import_suppressions(
        self, body: bytes, *, account: str | None, reason: str, jsonl: bool = False
    ) -> dict[str, Any]:
        """Import a CSV (or, ``jsonl``, JSON lines) as an export writes it."""
        params = {k: v for k, v in {"account": account, "reason": reason}.items() if v is not None}
        kind = "application/x-ndjson" if jsonl else "text/csv"
        request = self._http.build_request(
            "POST", "/v1/suppressions/import", params=params, content=body, headers={"Content-Type": kind}
        )
        return dict(self._send(request).json())

    @contextmanager
    def export_suppressions(
        self, *, account: str | None, reason: str | None, fmt: str = "csv"
    ) -> Iterator[Iterator[bytes]]:
        params = {k: v for k, v in {"account": account, "reason": reason, "format": fmt}.items() if v is not None}
        response = self._send(self._http.build_request("GET", "/v1/suppressions/export", params=params), stream=True)
        try:
            yield _chunks(response, self.url)
        finally:
            response.close()

    def account_callback(
        self, account_id: str, *, register: bool, public_url: str | None, rotate: bool = False
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"register": register, "rotate": rotate}
        if public_url:
            body["public_url"] = public_url
        return dict(self._call("POST", f"/v1/accounts/{_seg(account_id)}/callback", json=body))

    def held_callback_changes(
        self, account_id: str, *, cursor: str = "", limit: int = 100
    ) -> tuple[list[dict[str, Any]], int, str | None]:
        """One page of the changes the account's callbacks asked for past the hourly cap, the total held
        and the next cursor (None at the end)."""
        params = {"cursor": cursor or None, "limit": limit}
        page = self._call("GET", f"/v1/accounts/{_seg(account_id)}/callback/held", params=params)
        return list(page["held"]), int(page["total"]), page.get("next_cursor")

    def apply_held_callback_changes(self, account_id: str, ids: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {} if ids is None else {"ids": ids}
        return dict(self._call("POST", f"/v1/accounts/{_seg(account_id)}/callback/held/apply", json=body))

    # --- discovery ----------------------------------------------------------------------------------------

    def has_route(self, path: str) -> bool:
        """Whether the API's OpenAPI document lists ``path`` (for features newer than some deployments)."""
        return path in (self._call("GET", "/openapi.json").get("paths") or {})


def _chunks(response: httpx.Response, url: str) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes()
    except httpx.HTTPError as exc:
        raise UnreachableError(f"the export from {url} broke off: {_reason(exc)} / 从 {url} 导出时连接中断") from None


def _seg(value: str) -> str:
    """One path segment, percent-encoded (ids never contain '/', but a typo must not change the route)."""
    from urllib.parse import quote

    return quote(value, safe="")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return text or type(exc).__name__
