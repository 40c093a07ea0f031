"""``/v1/accounts/{id}/contacts``, ``…/labels`` and ``/v1/audiences/preview``: an account's own friends,
groups and labels, synced from its vendor, and whom an audience would reach (docs/api.md, "Audiences")."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from scheduler.api.errors import ApiError
from scheduler.api.models import AccountId
from scheduler.api.state import AUTH, ApiState, Stores
from scheduler.intake.audience import AudienceIn, contacts_unsupported
from worker.errors import MessageError
from worker.messages import AnyMessage, TextMessage, parse_message
from worker.store.accounts import Account
from worker.store.contacts import ContactBook, ContactStore
from worker.vendors.base import vendors_with_contacts

router = APIRouter(tags=["contacts"], dependencies=AUTH)

#: Contacts in one page of a listing at most.
PAGE_MAX = 500


def _store(state: ApiState) -> ContactStore:
    return state.campaigns.contacts


def _account(state: ApiState, account_id: str) -> Account:
    account = state.accounts.get(account_id)
    if account is None:
        raise ApiError(404, "not_found", f"no account {account_id!r}", "account_id")
    return account


def _book(state: ApiState, account_id: str) -> ContactBook:
    _account(state, account_id)
    book = _store(state).book(account_id)
    if book is None:
        raise ApiError(
            409,
            "contacts_not_synced",
            f"account {account_id!r} has never synced its contacts: POST /v1/accounts/{account_id}/contacts/sync"
            f" / 账号 {account_id!r} 尚未同步通讯录，请先同步",
            "account_id",
        )
    return book


@router.post("/v1/accounts/{account_id}/contacts/sync", status_code=202)
def start_sync(account_id: AccountId, state: Stores, response: Response) -> dict[str, Any]:
    """Sync the account's friends, groups and labels from its vendor, in paced steps under the account's
    lease (never beside a send). 202 with the run's status; a sync already running is answered as it is (200)."""
    account = _account(state, account_id)
    vendor = account.spec.vendor
    if vendor not in vendors_with_contacts():
        raise ApiError(
            409,
            "contacts_unsupported",
            contacts_unsupported(vendor),
            "account_id",
        )
    status, started = _store(state).start(account_id)
    if not started:
        response.status_code = 200
    return status


@router.get("/v1/accounts/{account_id}/contacts/sync")
def sync_status(account_id: AccountId, state: Stores) -> dict[str, Any]:
    """``running``/``done``/``failed``/``cancelled`` (``never`` before the first), the last finished sync's
    counts and time, progress of the running one, and why a sync failed."""
    _account(state, account_id)
    return _store(state).status(account_id)


@router.delete("/v1/accounts/{account_id}/contacts/sync")
def cancel_sync(account_id: AccountId, state: Stores) -> dict[str, Any]:
    """Stop a running sync: no further vendor call; the last finished sync stays in use."""
    _account(state, account_id)
    cancelled = _store(state).cancel(account_id)
    if cancelled is None:
        raise ApiError(409, "not_running", f"no contact sync is running for {account_id!r}", "account_id")
    return cancelled


@router.post("/v1/accounts/{account_id}/contacts/sync/cancel")
def cancel_sync_post(account_id: AccountId, state: Stores) -> dict[str, Any]:
    """The same as ``DELETE …/contacts/sync`` (for clients without DELETE)."""
    return cancel_sync(account_id, state)


@router.get("/v1/accounts/{account_id}/contacts")
def list_contacts(
    account_id: AccountId,
    state: Stores,
    kind: Literal["friend", "chatroom", "gh"] | None = None,
    label: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=100, description="in wxid, nickname or remark")] = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,9}$")] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
) -> dict[str, Any]:
    """The account's contacts as of its last sync, filtered; ``next`` is the cursor of the next page."""
    book = _book(state, account_id)
    contacts = book.of_kind(kind)
    if label is not None:
        ids = set(book.label_ids(label))
        if not ids:
            raise ApiError(422, "invalid", f"label: account {account_id!r} has no label {label!r}", "label")
        contacts = [c for c in contacts if ids.intersection(c.labels)]
    if q is not None:
        needle = q.casefold()
        contacts = [c for c in contacts if needle in f"{c.wxid}\n{c.nickname}\n{c.remark}".casefold()]
    start = int(cursor or 0)
    page = contacts[start : start + limit]
    items = [
        {
            "wxid": c.wxid,
            "kind": c.kind,
            "nickname": c.nickname,
            "remark": c.remark,
            "labels": book.label_names(c),
            **({"members": c.members} if c.kind == "chatroom" else {}),
        }
        for c in page
    ]
    more = start + limit < len(contacts)
    return {
        "items": items,
        "next": str(start + limit) if more else None,
        "total": len(contacts),
        "synced_at": book.synced_at,
    }


@router.get("/v1/accounts/{account_id}/labels")
def list_labels(account_id: AccountId, state: Stores) -> dict[str, Any]:
    """The account's labels with how many friends carry each (as of its last sync)."""
    book = _book(state, account_id)
    counts: dict[str, int] = dict.fromkeys(book.labels, 0)
    for friend in book.friends:
        for lid in friend.labels:
            if lid in counts:
                counts[lid] += 1
    items = [{"id": lid, "name": name, "count": counts[lid]} for lid, name in book.labels.items()]
    return {"items": items, "synced_at": book.synced_at}


class PreviewIn(BaseModel):
    """``POST /v1/audiences/preview``: whom an audience reaches now, stored nowhere."""

    model_config = ConfigDict(extra="forbid")
    audience: AudienceIn
    #: Raw: a message still being typed must not stop the audience preview (``POST /v1/messages/check`` judges it).
    message: dict[str, Any] | None = Field(
        default=None, description="checked for placeholders a contact cannot fill, once it is a valid message"
    )
    accounts: list[str] | None = Field(default=None, description="the campaign's accounts, when it names them")


@router.post("/v1/audiences/preview")
def preview_audience(body: PreviewIn, state: Stores) -> dict[str, Any]:
    """Resolve an audience against the last syncs: total, duplicates, excluded, each account's sync age,
    the first rows. The same checks and errors as a campaign creation with that audience. A message that does
    not validate (yet: the operator is still typing it) is left out, ``message_checked: false``: the audience
    does not depend on it, and its own errors are the message check's."""
    message: AnyMessage = TextMessage(text="{name}")
    checked = False
    if body.message is not None:
        with contextlib.suppress(MessageError):  # unfinished: previewed without it
            message, checked = parse_message(body.message), True
    summary = state.campaigns.resolve_audience(body.audience, message, body.accounts).summary()
    return {**summary, "message_checked": checked}
