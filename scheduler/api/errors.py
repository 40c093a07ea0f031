"""The API's one error shape, ``{"error": {"code", "message", "field"}}``, and what answers with it.

Every refusal names the offending field in the words of the request (``message.text``,
``recipients[3].to``), without a library's prefix; a 4xx means nothing was stored.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from scheduler.intake.audience import AudienceError
from scheduler.intake.campaigns import CampaignNotFound, CampaignStateError
from scheduler.intake.producer import IdempotencyConflict
from worker.errors import MessageError
from worker.messages import MESSAGE_KINDS


class ApiError(Exception):
    """An error answered as ``{"error": {...}}`` with its status code."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: what went wrong and which field."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "Body is not valid JSON"),
        (401, "Missing, unknown or revoked bearer key"),
        (403, "The key's role may not call this route; the message names the role needed"),
        (404, "Not found"),
        (409, "Not possible in the current state"),
        (502, "The vendor refused"),
        (413, "Body too large"),
        (415, "The route takes another content type (a form, CSV)"),
        (422, "Invalid input; `field` names it"),
        (429, "Too many requests for this key this minute; see Retry-After"),
        (500, "Internal error (logged on the server)"),
        (503, "Redis unreachable; nothing was stored"),
    )
}


def error_response(
    status: int, code: str, message: str, field: str | None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "field": field}}, status_code=status, headers=headers
    )


def field_path(loc: tuple[Any, ...]) -> str:
    """``("body", "message", "text", "text")`` → ``message.text`` (drops "body" and the union tag)."""
    parts: list[str] = []
    previous: Any = None
    for part in loc:
        if part == "body" and previous is None:
            previous = part
            continue
        if part in MESSAGE_KINDS and (
            previous == "message" or (isinstance(previous, int) and parts[-1:] and parts[-1].startswith("parts["))
        ):
            previous = part + "#tag"  # a sequence part's tag too: message.parts[1].url
            continue
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        else:
            parts.append(str(part))
        previous = part
    return ".".join(parts)


#: Prefixes pydantic puts before the text of an error raised in a validator: not for our users' eyes.
_LIBRARY_PREFIXES = ("Value error, ", "Assertion failed, ")


def plain(message: str) -> str:
    """An error message without a library's prefix (``Value error, …``), also inside ``field: …`` lists."""
    for prefix in _LIBRARY_PREFIXES:
        message = message.removeprefix(prefix).replace(f": {prefix}", ": ")
    return message


def invalid(exc: ValidationError, prefix: str = "") -> ApiError:
    """The 422 for a model validated by hand: its first error, the field placed by ``prefix`` (``spec.``)."""
    first = exc.errors()[0]
    field = prefix + field_path(tuple(first["loc"]))
    return ApiError(422, "invalid", f"{field}: {plain(first['msg'])}", field)


#: fastapi/routing.py's detail for a body it could not decode (not a JSONDecodeError)
_FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error the routes and the stores raise in the one shape, with the right status."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        response = error_response(exc.status, exc.code, exc.message, exc.field)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = field_path(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            return error_response(400, "invalid_json", "body is not valid JSON", "body")
        details = [
            {"field": field_path(tuple(e.get("loc", ()))), "message": plain(e.get("msg", ""))} for e in errors[:20]
        ]
        response = error_response(422, "invalid", f"{field}: {plain(str(first.get('msg')))}", field or None)
        body = json.loads(bytes(response.body))
        body["error"]["details"] = details
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_PARSE_ERROR:
            # FastAPI's answer when decoding raised something other than JSONDecodeError: bytes that are not
            # UTF-8, an integer past Python's 4,300 digits
            return error_response(
                400, "invalid_json", "body is not valid JSON (not UTF-8, or a number too long)", "body"
            )
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        return error_response(exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail), None)

    @app.exception_handler(IdempotencyConflict)
    async def _idempotency_conflict(_: Request, exc: IdempotencyConflict) -> JSONResponse:
        return error_response(409, "idempotency_conflict", str(exc), exc.field)

    @app.exception_handler(MessageError)
    async def _message_error(_: Request, exc: MessageError) -> JSONResponse:
        return error_response(422, "invalid", plain(str(exc)), exc.field)

    @app.exception_handler(AudienceError)
    async def _audience_error(_: Request, exc: AudienceError) -> JSONResponse:
        return error_response(exc.status, exc.code, plain(str(exc)), exc.field)

    @app.exception_handler(CampaignNotFound)
    async def _no_campaign(_: Request, exc: CampaignNotFound) -> JSONResponse:
        return error_response(404, "not_found", f"no campaign {exc.args[0]!r}", None)

    @app.exception_handler(CampaignStateError)
    async def _campaign_state(_: Request, exc: CampaignStateError) -> JSONResponse:
        return error_response(409, exc.code, str(exc), None)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, exc: ClientDisconnect) -> JSONResponse:
        # the client left before its body arrived whole: nobody reads this answer, but as a 4xx it is a
        # refusal in the audit trail (capped per key and minute) instead of a 500 with a traceback each
        return error_response(400, "client_disconnected", "the client went away before its body arrived", None)

    @app.exception_handler(UnicodeEncodeError)
    async def _unencodable(_: Request, exc: UnicodeEncodeError) -> JSONResponse:
        # second line behind the field checks: a lone surrogate can't be stored or sent
        return error_response(422, "invalid", "text contains a lone surrogate (not encodable as UTF-8)", None)

    @app.exception_handler(redis.ResponseError)
    async def _wrong_type(_: Request, exc: redis.ResponseError) -> JSONResponse:
        # second line behind the id patterns: a name that lands on another kind of key is not there
        if str(exc).startswith("WRONGTYPE"):
            return error_response(404, "not_found", "no such object", None)
        raise exc

    @app.exception_handler(redis.ConnectionError)
    async def _redis_down(_: Request, exc: redis.ConnectionError) -> JSONResponse:
        return error_response(
            503, "store_unavailable", "the job store (Redis) is unreachable; nothing was stored", None
        )
