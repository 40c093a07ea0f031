"""The simulator's ASGI app: the vendors' real paths plus a small admin API under `/_sim`.

Plain Starlette routes (no FastAPI, no middleware, no per-request logging) keep the per-request cost
at a few dozen microseconds. GeWe v2 is mounted twice, under the hosted prefix `/gewe/v2/api` and the
self-hosted `/v2/api`; the exact path `/v2/api` is MagicCgi (ohwxapi), so both coexist as they would
behind one reverse proxy.

The admin API needs no auth: the simulator is a test double bound to loopback by default.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from simulator.callbacks import Callbacks
from simulator.contacts import ContactHandlers, Contacts
from simulator.protocols import Handlers, JSONResponse, read_json_object
from simulator.state import SimAccount, SimState

GEWE_PREFIXES = ("/gewe/v2/api", "/v2/api")


def _bad_request(message: str, status_code: int = 400) -> Response:
    return JSONResponse({"error": message}, status_code=status_code)


class Admin:
    """The `/_sim` endpoints, bound to one `SimState`."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    async def health(self, request: Request) -> Response:
        """GET /_sim/health."""
        return JSONResponse({"ok": True})

    async def sends(self, request: Request) -> Response:
        """GET /_sim/sends?vendor=&instance=&to=&since_seq=."""
        query = request.query_params
        since_raw = query.get("since_seq")
        since_seq: int | None = None
        if since_raw:
            try:
                since_seq = int(since_raw)
            except ValueError:
                return _bad_request("since_seq must be an integer")
        records = self.state.sends(
            vendor=query.get("vendor") or None,
            instance=query.get("instance") or None,
            to=query.get("to") or None,
            since_seq=since_seq,
        )
        return JSONResponse({"sends": [r.to_json() for r in records]})

    async def revokes(self, request: Request) -> Response:
        """GET /_sim/revokes?vendor=&instance=: every revoke call, with the ids it named and its outcome."""
        query = request.query_params
        records = self.state.revokes(vendor=query.get("vendor") or None, instance=query.get("instance") or None)
        return JSONResponse({"revokes": [r.to_json() for r in records]})

    async def get_revoke_window(self, request: Request) -> Response:
        """GET /_sim/revoke_window → {"window_s"}."""
        return JSONResponse({"window_s": self.state.revoke_window()})

    async def set_revoke_window(self, request: Request) -> Response:
        """POST /_sim/revoke_window {"window_s": 5}: revokes later than that after createTime fail (default
        120 s, as WeChat; reset restores it)."""
        body = await read_json_object(request)
        if body is None or set(body) != {"window_s"}:
            return _bad_request('body must be {"window_s": seconds}')
        try:
            self.state.set_revoke_window(body["window_s"])
        except ValueError as exc:
            return _bad_request(str(exc))
        return await self.get_revoke_window(request)

    async def list_accounts(self, request: Request) -> Response:
        """GET /_sim/accounts (tokens masked)."""
        return JSONResponse({"accounts": [a.public() for a in self.state.accounts()]})

    async def put_account(self, request: Request) -> Response:
        """POST /_sim/accounts: register or replace one account."""
        body = await read_json_object(request)
        if body is None:
            return _bad_request("body must be a JSON object")
        try:
            account = SimAccount.from_json(body)
        except ValueError as exc:
            return _bad_request(str(exc))
        self.state.add_account(account)
        return JSONResponse({"account": account.public()})

    async def add_fault(self, request: Request) -> Response:
        """POST /_sim/faults → {"id": n}."""
        body = await read_json_object(request)
        if body is None:
            return _bad_request("body must be a JSON object")
        try:
            fault = self.state.add_fault_json(body)
        except ValueError as exc:
            return _bad_request(str(exc))
        return JSONResponse({"id": fault.id})

    async def list_faults(self, request: Request) -> Response:
        """GET /_sim/faults."""
        return JSONResponse({"faults": [f.to_json() for f in self.state.faults()]})

    async def clear_faults(self, request: Request) -> Response:
        """DELETE /_sim/faults."""
        return JSONResponse({"removed": self.state.clear_faults()})

    async def remove_fault(self, request: Request) -> Response:
        """DELETE /_sim/faults/{id}."""
        fault_id: int = request.path_params["fault_id"]
        if not self.state.remove_fault(fault_id):
            return _bad_request(f"no fault {fault_id}", status_code=404)
        return JSONResponse({"removed": 1})

    async def get_latency(self, request: Request) -> Response:
        """GET /_sim/latency → {"latency_s", "spread_s", "media_s": [low, high]}."""
        latency, spread = self.state.latency()
        return JSONResponse({"latency_s": latency, "spread_s": spread, "media_s": list(self.state.media_latency())})

    async def set_latency(self, request: Request) -> Response:
        """POST /_sim/latency {"latency_s": 0.3, "spread_s": 0.2}: every send answers after 0.3 ± 0.2 s;
        ``"media_s": [2, 10]``: image and file sends take 2–10 s more (the vendor fetches the URL). Each
        part given is set; the other is kept."""
        body = await read_json_object(request)
        if body is None:
            return _bad_request("body must be a JSON object")
        unknown = set(body) - {"latency_s", "spread_s", "media_s"}
        if unknown:
            return _bad_request(f"unknown latency field(s): {', '.join(sorted(unknown))}")
        media = body.get("media_s")
        if media is not None and not (isinstance(media, list) and len(media) == 2):
            return _bad_request("media_s must be [low, high] seconds")
        try:
            if media is not None:
                self.state.set_media_latency(media[0], media[1])
            if "latency_s" in body or "spread_s" in body or media is None:
                self.state.set_latency(body.get("latency_s", 0.0), body.get("spread_s", 0.0))
        except ValueError as exc:
            return _bad_request(str(exc))
        return await self.get_latency(request)

    async def reset(self, request: Request) -> Response:
        """POST /_sim/reset: clear sends, revokes, faults, latency and the revoke window, keep accounts."""
        self.state.reset()
        return JSONResponse({"ok": True})


def create_app(state: SimState) -> Starlette:
    """Build the simulator app serving all four vendor protocols over `state`."""
    h = Handlers(state)
    admin = Admin(state)
    c = ContactHandlers(state, Contacts(state), h.authenticate)
    callbacks = Callbacks(state)
    post = ["POST"]
    routes: list[BaseRoute] = []
    for prefix in GEWE_PREFIXES:
        routes += [
            Route(f"{prefix}/message/postText", h.gewe_post_text, methods=post),
            Route(f"{prefix}/message/postAppMsg", h.gewe_post_app_msg, methods=post),
            Route(f"{prefix}/message/postMiniApp", h.gewe_post_mini_app, methods=post),
            Route(f"{prefix}/message/forwardMiniApp", h.gewe_forward_mini_app, methods=post),
            Route(f"{prefix}/message/postImage", h.gewe_post_image, methods=post),
            Route(f"{prefix}/message/postFile", h.gewe_post_file, methods=post),
            Route(f"{prefix}/message/postLink", h.gewe_post_link, methods=post),
            Route(f"{prefix}/message/revokeMsg", h.gewe_revoke, methods=post),
            Route(f"{prefix}/login/checkOnline", h.gewe_check_online, methods=post),
            Route(f"{prefix}/label/list", c.gewe_labels, methods=post),
            Route(f"{prefix}/contacts/fetchContactsList", c.gewe_fetch, methods=post),
            Route(f"{prefix}/contacts/fetchContactsListCache", c.gewe_fetch_cache, methods=post),
            Route(f"{prefix}/contacts/getBriefInfo", c.gewe_brief, methods=post),
            Route(f"{prefix}/group/getChatroomMemberList", c.gewe_members, methods=post),
            Route(f"{prefix}/login/setCallback", callbacks.gewe_set_callback, methods=post),
        ]
    routes += [
        Route("/v2/api", h.ohwx_magic_cgi, methods=post),
        Route("/api/message/sendapp", h.legacy_send_app, methods=post),
        Route("/api/message/sendmsg", h.legacy_send_msg, methods=post),
        Route("/sendText", h.ecloud_send_text, methods=post),
        Route("/sendApp", h.ecloud_send_app, methods=post),
        Route("/sendApplet", h.ecloud_send_applet, methods=post),
        Route("/sendApplets", h.ecloud_send_applets, methods=post),
        Route("/sendImage2", h.ecloud_send_image, methods=post),
        Route("/sendFile", h.ecloud_send_file, methods=post),
        Route("/sendUrl", h.ecloud_send_url, methods=post),
        Route("/revokeMsg", h.ecloud_revoke, methods=post),
        Route("/isOnline", h.ecloud_is_online, methods=post),
        Route("/getContactLabelList", c.ecloud_labels, methods=post),
        Route("/initAddressList", c.ecloud_init, methods=post),
        Route("/getAddressList", c.ecloud_list, methods=post),
        Route("/getContact", c.ecloud_contact, methods=post),
        Route("/getChatRoomMember", c.ecloud_members, methods=post),
        Route("/_sim/contacts", c.configure, methods=post),
        Route("/_sim/contact_calls", c.list_calls, methods=["GET"]),
        Route("/setHttpCallbackUrl", callbacks.ecloud_set_callback, methods=post),
        Route("/_sim/callbacks", callbacks.post_callbacks, methods=post),
        Route("/_sim/health", admin.health, methods=["GET"]),
        Route("/_sim/sends", admin.sends, methods=["GET"]),
        Route("/_sim/revokes", admin.revokes, methods=["GET"]),
        Route("/_sim/revoke_window", admin.get_revoke_window, methods=["GET"]),
        Route("/_sim/revoke_window", admin.set_revoke_window, methods=post),
        Route("/_sim/accounts", admin.list_accounts, methods=["GET"]),
        Route("/_sim/accounts", admin.put_account, methods=post),
        Route("/_sim/faults", admin.list_faults, methods=["GET"]),
        Route("/_sim/faults", admin.add_fault, methods=post),
        Route("/_sim/faults", admin.clear_faults, methods=["DELETE"]),
        Route("/_sim/faults/{fault_id:int}", admin.remove_fault, methods=["DELETE"]),
        Route("/_sim/latency", admin.get_latency, methods=["GET"]),
        Route("/_sim/latency", admin.set_latency, methods=post),
        Route("/_sim/reset", admin.reset, methods=post),
    ]
    app = Starlette(routes=routes)
    app.state.sim = state
    return app
