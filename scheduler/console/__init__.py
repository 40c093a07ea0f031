"""The operator console (``/console``): static pages served by the API process, no build step, no CDN.

The page is plain HTML + one JS file + one CSS file shipped as package data. It calls the same ``/v1``
routes as the CLI with the bearer token the operator typed once (kept in ``sessionStorage``, never in a
URL). The only route added here is ``POST /v1/messages/check``: a dry run of message validation so the
new-campaign form can show what the product extracted from pasted XML and how a recipient's row renders.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, cast

import redis
from fastapi import FastAPI, params
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from worker.messages import AnyMessage, AppMsgMessage, LinkMessage, MiniProgramMessage, SequenceMessage, parts_of
from worker.messages import Message as MessageModel
from worker.pacing.rules import PaceState, local_day
from worker.store.accounts import Account
from worker.store.keys import Keys
from worker.vendors import KINDS

STATIC = Path(__file__).parent / "static"

#: Everything the page loads comes from this origin: a CDN (or any other host) is refused by the browser.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class MessageCheckIn(BaseModel):
    """``POST /v1/messages/check``: a message and optionally one recipient's variables."""

    model_config = ConfigDict(extra="forbid")
    message: MessageModel
    vars: dict[str, str | int | float] | None = Field(default=None, max_length=500)


def check_message(body: MessageCheckIn) -> dict[str, Any]:
    """What the product makes of a message: normalized fields, placeholders, the XML it would send and,
    with ``vars``, the rendered message. Nothing is stored."""
    message = body.message
    variables = {k: str(v) for k, v in (body.vars or {}).items()}
    answer: dict[str, Any] = {
        "message": message.model_dump(exclude_none=True),
        "placeholders": sorted(message.placeholders()),
    }
    if body.vars is not None:
        answer["rendered"] = message.render(variables).model_dump(exclude_none=True)
    if isinstance(message, SequenceMessage):
        answer["parts"] = [{"kind": part.kind, **_xml_of(part)} for part in message.parts]
    else:
        answer.update(_xml_of(message))
    # the vendors that carry every kind in it (others answer 422 at submission)
    kinds = {part.kind for part in parts_of(message)}
    answer["vendors"] = sorted(vendor for vendor, carried in KINDS.items() if kinds <= carried)
    return answer


def _xml_of(message: AnyMessage) -> dict[str, str]:
    """The app XML an XML-only vendor is sent (a link's generated type-5 card included), when there is one."""
    if isinstance(message, MiniProgramMessage | LinkMessage):
        return {"xml": message.appmsg_xml()}
    if isinstance(message, AppMsgMessage):
        return {"xml": message.xml}
    return {}


def with_next_firings(schedule: dict[str, Any], count: int = 3, now: float | None = None) -> dict[str, Any]:
    """A schedule with its next ``count`` fire times (epoch seconds), for people planning around them."""
    from scheduler.dispatch.schedules import next_fire

    firings: list[float] = []
    if schedule.get("paused"):
        return {**schedule, "next_firings": firings}
    after = now or time.time()
    # croniter raises several types for a cron that stops firing: then fewer times are listed
    with contextlib.suppress(Exception):
        for _ in range(count):
            after = next_fire(schedule["cron"], schedule["timezone"], after)
            firings.append(after)
    return {**schedule, "next_firings": firings}


def sent_today(client: redis.Redis, prefix: str, account: Account, now: float | None = None) -> int:
    """Sends counted today (the account's local day) against its daily cap."""
    pace = cast(dict[str, str], client.hgetall(Keys(prefix).pace(account.id)))
    day = local_day(now or time.time(), account.spec.limits.timezone)
    return PaceState.from_redis(pace, ()).sent_on(day)


def mount_console(app: FastAPI, auth: list[params.Depends]) -> None:
    """Serve the console at ``/console`` and its assets at ``/console/static``; add the message check."""

    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

    @app.get("/console", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(
            STATIC / "index.html",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        """Browsers ask for it on every page (the console, /docs): a small icon instead of a 404 in the logs."""
        return FileResponse(
            STATIC / "favicon.svg", media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"}
        )

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        """The address the dev banner labels "API": a browser opening it lands on the console (307)."""
        return RedirectResponse("/console")

    @app.get("/console/", include_in_schema=False)
    def console_slash() -> RedirectResponse:
        return RedirectResponse("/console")

    @app.post("/v1/messages/check", dependencies=auth, tags=["messages"])
    def post_message_check(body: MessageCheckIn) -> dict[str, Any]:
        """Validate a message without storing it: what was extracted from pasted XML, and how it renders."""
        return check_message(body)
