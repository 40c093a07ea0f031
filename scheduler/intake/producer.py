"""Submitting work: validate everything first, then store the job in one atomic step.

Used by the CLI and tests now, and by the HTTP API. Nothing is stored unless the account exists, the
message is valid and every placeholder has a value.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.errors import MessageError
from worker.messages import (
    WECHAT_ID_MAX,
    WECHAT_ID_PATTERN,
    AnyMessage,
    check_text,
    check_variables,
    parse_message,
)
from worker.store.accounts import AccountStore
from worker.store.ledger import Job, Ledger
from worker.vendors import check_message_for

#: The longest recipient id (also the API's length limit on ``to``).
RECIPIENT_MAX = WECHAT_ID_MAX
RECIPIENT = re.compile(WECHAT_ID_PATTERN)


class UnknownAccountError(MessageError):
    """The job names an account that is not configured."""


class IdempotencyConflict(MessageError):
    """An idempotency key reused with a different request: answering the old job would mislead."""


@dataclass(frozen=True, slots=True)
class Submitted:
    """The answer to a submission."""

    id: str
    status: str
    created: bool


def validate_recipient(to: Any, field: str = "to") -> str:
    """A wxid, a ``…@chatroom`` id or ``filehelper``."""
    if not isinstance(to, str) or not RECIPIENT.fullmatch(to):
        raise MessageError(f"{field}: not a WeChat id (wxid, …@chatroom)", field=field)
    return to


class Producer:
    """Validates and stores messages."""

    def __init__(self, ledger: Ledger, accounts: AccountStore) -> None:
        self.ledger = ledger
        self.accounts = accounts
        self._known: dict[str, tuple[float, str]] = {}

    def submit_message(
        self,
        *,
        account: str,
        to: str,
        message: Mapping[str, Any] | AnyMessage,
        variables: Mapping[str, str] | None = None,
        send_at: float | None = None,
        idempotency_key: str | None = None,
        priority: str = "normal",
        test_of: str | None = None,
        ignore_suppression: str | None = None,
        created_by: str | None = None,
        creator_key: str = "",
    ) -> Submitted:
        """Submit one message to one recipient from a configured account (``test_of``: a campaign's test send;
        ``ignore_suppression``: who asked that it go even to a suppressed recipient, recorded on the job;
        ``created_by``: the key that submitted it, whose revocation cancels it until it is being sent;
        ``creator_key``: that key's SHA-256, '' for the bootstrap token)."""
        check_text(account, "account")
        if idempotency_key:
            check_text(idempotency_key, "idempotency_key")
        vendor = self._account_vendor(account)
        if vendor is None:
            raise UnknownAccountError(f"account: no account {account!r} is configured", field="account")
        validate_recipient(to)
        parsed = message if not isinstance(message, Mapping) else parse_message(dict(message))
        check_variables(variables)
        # the vendor must carry the kind(s), and E云 needs a pasted mini-program's cover: 422 naming both
        check_message_for(vendor, parsed)
        missing = parsed.missing_variables(dict(variables or {}))
        if missing:
            names = ", ".join(sorted(missing))
            raise MessageError(f"vars: no value for placeholder(s) {names}", field="vars")
        if variables:
            parsed.render(dict(variables))  # proves the template renders (within its limits) before anything is stored
        job_id, created, state = self.ledger.submit(
            account=account,
            to=to,
            message=parsed,
            variables=variables,
            send_at=send_at,
            idempotency_key=idempotency_key,
            priority=priority,
            test_of=test_of,
            ignore_suppression=ignore_suppression,
            created_by=created_by,
            creator_key=creator_key,
        )
        if not state:  # an idempotent replay: answer the job's current state
            job = self.ledger.get(job_id)
            state = job.state if job else "expired"
            asked = _request_digest(
                account, to, parsed.model_dump_json(), variables, send_at, priority, bool(ignore_suppression)
            )
            if job is not None and _stored_digest(job) != asked:
                raise IdempotencyConflict(
                    "idempotency_key: already used for a different message "
                    "(account, recipient, content, variables, send_at, priority or ignore_suppression differ)",
                    field="idempotency_key",
                )
        return Submitted(id=job_id, status=state, created=created)

    def _account_vendor(self, account: str) -> str | None:
        """The account's vendor, or None when it is not configured. Accounts are never deleted, so a positive
        answer is cached for a few seconds (hot path: one read at most). A vendor changed meanwhile is seen
        within them; a kind the new vendor cannot carry that slipped through dies unsent at the worker
        (``invalid_message``: the backend refuses it before any request)."""
        now = time.monotonic()
        known = self._known.get(account)
        if known is not None and known[0] > now:
            return known[1]
        vendor = self.accounts.redis.hget(self.accounts.keys.account(account), "vendor")
        if vendor:
            self._known[account] = (now + 5.0, str(vendor))
            return str(vendor)
        return None


def _request_digest(
    account: str,
    to: str,
    message_json: str | None,
    variables: Mapping[str, str] | None,
    send_at: float | None,
    priority: str,
    ignore_suppression: bool,
) -> str:
    """SHA-256 of everything a message request asks for: equal digests are the same request (a replay that
    adds ignore_suppression asks for more than the stored job carries: a conflict, not a replay)."""
    whole = {
        "account": account,
        "to": to,
        "message": message_json,
        "vars": dict(variables or {}),
        "send_at": f"{send_at:.3f}" if send_at else None,
        "priority": priority or "normal",
        "ignore_suppression": ignore_suppression,
    }
    return hashlib.sha256(json.dumps(whole, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _stored_digest(job: Job) -> str:
    """The request digest of a stored job, from the fields the ledger keeps."""
    send_at = job.fields.get("send_at")
    return _request_digest(
        job.account,
        job.to,
        job.fields.get("message"),
        job.variables,
        float(send_at) if send_at else None,
        job.fields.get("priority", "normal"),
        job.fields.get("nosupp") == "1",
    )
