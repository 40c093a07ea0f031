"""Audiences: a campaign's recipients chosen from its accounts' own contacts (friends, labels, groups).

An audience is resolved once, when the campaign is created (or a schedule fires), against each account's
last finished contact sync, into ordinary recipients — one job per wxid, sent by the account that keeps the
contact — so everything a send checks at send time (pacing, the group gap for ``…@chatroom``, holds,
suppression) applies unchanged. Rules:

- each account sends to its own contacts; a wxid two accounts keep is sent once, by the first account in
  ``accounts`` order (the others are counted as ``duplicates``);
- friends are filtered by label names (``labels_any``: any of them, ``labels_all``: every one of them),
  ``exclude_labels`` removes friends with any of those labels, ``exclude`` removes wxids — it always wins;
- public accounts (``gh_…``) are never part of an audience;
- the variables ``{nickname}``, ``{remark}`` and ``{name}`` (the remark, or else the nickname) come from the
  contact.

Bad input is refused whole, naming the field: an account whose vendor has no contact calls (409
``contacts_unsupported``, as a sync of it is answered), an account never synced (409 ``contacts_not_synced``), a
label no account has (422), a label name two labels of one account share after a rename (409
``label_ambiguous``), an account that is not the campaign's, an audience that resolves to nobody (422).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scheduler.intake.producer import RECIPIENT_MAX
from worker.errors import MessageError
from worker.store.accounts import ACCOUNT_ID_MAX
from worker.store.contacts import Contact, ContactBook, ContactStore
from worker.vendors.base import vendors_with_contacts

#: Variables a contact fills.
CONTACT_VARS: Final = frozenset({"nickname", "remark", "name"})
#: First resolved rows shown by a preview or a draft's answer.
SAMPLE_ROWS: Final = 20

LabelName = Field(min_length=1, max_length=100)


class AudienceIn(BaseModel):
    """``"audience"`` of a campaign or schedule: whom of the accounts' own contacts to send to."""

    model_config = ConfigDict(extra="forbid", strict=True)
    accounts: list[str] = Field(min_length=1, max_length=100, description="in priority order (duplicates: the first)")
    friends: bool | None = Field(
        default=None, description="friends (true unless only chatrooms are asked for; label filters imply it)"
    )
    chatrooms: bool | list[str] = Field(default=False, description="true: every group kept; or these group ids")
    labels_any: list[str] = Field(default_factory=list, max_length=100)
    labels_all: list[str] = Field(default_factory=list, max_length=100)
    exclude_labels: list[str] = Field(default_factory=list, max_length=100)
    exclude: list[str] = Field(default_factory=list, max_length=100_000)

    @model_validator(mode="after")
    def _bounded(self) -> AudienceIn:
        for name in ("accounts", "labels_any", "labels_all", "exclude_labels", "exclude"):
            limit = ACCOUNT_ID_MAX if name == "accounts" else RECIPIENT_MAX if name == "exclude" else 100
            for n, value in enumerate(getattr(self, name)):
                if not value or len(value) > limit:
                    raise ValueError(f"{name}[{n}]: between 1 and {limit} characters")
        if isinstance(self.chatrooms, list):
            for n, value in enumerate(self.chatrooms):
                if not value.endswith("@chatroom") or len(value) > RECIPIENT_MAX:
                    raise ValueError(f"chatrooms[{n}]: a group id ends with @chatroom")
        return self

    @property
    def wants_friends(self) -> bool:
        if self.friends is not None:
            return self.friends
        return bool(self.labels_any or self.labels_all) or self.chatrooms is False or self.chatrooms == []


class AudienceError(MessageError):
    """An audience that cannot be resolved; ``status`` and ``code`` are the API's answer."""

    def __init__(self, message: str, *, field: str, status: int = 422, code: str = "invalid") -> None:
        super().__init__(message, field=field)
        self.status = status
        self.code = code


@dataclass(slots=True)
class Resolved:
    """An audience resolved: its recipients in order and what the operator should see about them."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    excluded: int = 0
    #: per account: synced_at, its age in seconds, recipients it sends to
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self, *, sample: int = SAMPLE_ROWS) -> dict[str, Any]:
        """What an answer shows: counts, sync ages, the first rows."""
        return {
            "total": len(self.rows),
            "duplicates": self.duplicates,
            "excluded": self.excluded,
            "accounts": self.accounts,
            "sample": self.rows[:sample],
        }


def contacts_unsupported(vendor: str) -> str:
    """Why an account of ``vendor`` can neither sync its contacts nor be an audience (409 ``contacts_unsupported``)."""
    return (
        f"vendor {vendor!r} has no documented contact calls (supported: {', '.join(vendors_with_contacts())})"
        f" / 服务商 {vendor!r} 没有公开的通讯录接口"
    )


def _field(base: str, name: str, n: int | None = None) -> str:
    return f"{base}.{name}" if n is None else f"{base}.{name}[{n}]"


def resolve(
    store: ContactStore,
    audience: AudienceIn,
    *,
    placeholders: set[str],
    allowed_accounts: list[str] | None = None,
    known_accounts: set[str] | None = None,
    vendors: Mapping[str, str] | None = None,
    base: str = "audience",
    now: float | None = None,
) -> Resolved:
    """The audience's recipients (``to``, ``account``, ``vars``) in ``accounts`` order, deduplicated.

    ``vendors`` (account id → vendor), when given, refuses an account whose vendor has no contact calls
    before its (never possible) sync is asked for."""
    now = time.time() if now is None else now
    extra = placeholders - CONTACT_VARS
    if extra:
        raise AudienceError(
            f"message: placeholder(s) {', '.join(sorted(extra))} have no value for an audience "
            "(a contact fills only {nickname}, {remark} and {name})",
            field="message",
        )
    books: list[tuple[str, ContactBook]] = []
    for n, account in enumerate(audience.accounts):
        where = _field(base, "accounts", n)
        if known_accounts is not None and account not in known_accounts:
            raise AudienceError(f"{where}: no account {account!r} is configured", field=where)
        if allowed_accounts is not None and account not in allowed_accounts:
            raise AudienceError(
                f"{where}: account {account!r} is not one of the campaign's accounts ({', '.join(allowed_accounts)})",
                field=where,
            )
        if account in (a for a, _ in books):
            raise AudienceError(f"{where}: account {account!r} is listed twice", field=where)
        vendor = None if vendors is None else vendors.get(account)
        if vendor is not None and vendor not in vendors_with_contacts():
            raise AudienceError(
                f"{where}: account {account!r}: {contacts_unsupported(vendor)}",
                field=where,
                status=409,
                code="contacts_unsupported",
            )
        book = store.book(account)
        if book is None:
            raise AudienceError(
                f"{where}: account {account!r} has never synced its contacts (broadcast contacts sync {account})"
                f" / 账号 {account!r} 尚未同步通讯录",
                field=where,
                status=409,
                code="contacts_not_synced",
            )
        books.append((account, book))
    label_sets = {
        name: _label_ids(books, getattr(audience, name), base, name)
        for name in ("labels_any", "labels_all", "exclude_labels")
    }
    wanted_rooms: set[str] | None = None
    if isinstance(audience.chatrooms, list):
        wanted_rooms = set(audience.chatrooms)
        kept = {c.wxid for _, book in books for c in book.chatrooms}
        for n, room in enumerate(audience.chatrooms):
            if room not in kept:
                where = _field(base, "chatrooms", n)
                raise AudienceError(f"{where}: no account of the audience keeps group {room!r}", field=where)
    excluded_ids = set(audience.exclude)
    out = Resolved()
    seen: set[str] = set()
    for account, book in books:
        labels = {name: ids.get(account, []) for name, ids in label_sets.items()}
        picked = 0
        for contact in _candidates(audience, book, wanted_rooms):
            if contact.kind == "friend" and not _labels_match(contact, audience, labels):
                continue
            if contact.wxid in excluded_ids or (
                contact.kind == "friend" and any(lid in contact.labels for lid in _flat(labels["exclude_labels"]))
            ):
                out.excluded += 1
                continue
            if contact.wxid in seen:
                out.duplicates += 1
                continue
            seen.add(contact.wxid)
            row: dict[str, Any] = {"to": contact.wxid, "account": account}
            variables = _vars(contact, placeholders)
            if variables:
                row["vars"] = variables
            out.rows.append(row)
            picked += 1
        out.accounts[account] = {
            "synced_at": book.synced_at,
            "sync_age_s": round(max(0.0, now - book.synced_at), 1),
            "recipients": picked,
        }
    if not out.rows:
        raise AudienceError(f"{base}: the audience resolves to no recipient", field=base)
    return out


def _candidates(audience: AudienceIn, book: ContactBook, wanted_rooms: set[str] | None) -> Iterator[Contact]:
    if audience.wants_friends:
        yield from book.friends
    if wanted_rooms is not None:
        yield from (c for c in book.chatrooms if c.wxid in wanted_rooms)
    elif audience.chatrooms is True:
        yield from book.chatrooms


def _label_ids(
    books: list[tuple[str, ContactBook]], names: list[str], base: str, attr: str
) -> dict[str, list[list[str]]]:
    """Per account, the label ids of each name (one list per name, in order). A name no account has is
    unknown; a name two labels of one account share is ambiguous."""
    out: dict[str, list[list[str]]] = {account: [] for account, _ in books}
    for n, name in enumerate(names):
        where = _field(base, attr, n)
        found = False
        for account, book in books:
            ids = book.label_ids(name)
            if len(ids) > 1:
                raise AudienceError(
                    f"{where}: account {account!r} has {len(ids)} labels named {name!r} (ids {', '.join(ids)}): "
                    "rename one in WeChat and sync again",
                    field=where,
                    status=409,
                    code="label_ambiguous",
                )
            found |= bool(ids)
            out[account].append(ids)
        if not found:
            raise AudienceError(f"{where}: no account of the audience has a label {name!r}", field=where)
    return out


def _flat(lists: list[list[str]]) -> list[str]:
    return [x for ids in lists for x in ids]


def _labels_match(contact: Contact, audience: AudienceIn, labels: Mapping[str, list[list[str]]]) -> bool:
    if audience.labels_any and not any(lid in contact.labels for lid in _flat(labels["labels_any"])):
        return False
    return not audience.labels_all or all(ids and ids[0] in contact.labels for ids in labels["labels_all"])


def _vars(contact: Contact, placeholders: set[str]) -> dict[str, str]:
    values = {"nickname": contact.nickname, "remark": contact.remark, "name": contact.name}
    return {name: values[name] for name in placeholders & CONTACT_VARS}
