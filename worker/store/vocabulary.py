"""The words the store's Python and its Lua scripts share: job states, outcomes, reasons, campaign statuses.

Each is a :class:`~enum.StrEnum` here and nowhere else. A Lua script names a value through
:data:`LUA_TABLES` (``STATE.SENDING`` is ``JobState.SENDING``); :func:`worker.store.scripts.spell` writes
the value in as the script is composed, refusing a member the enum lacks, and tests/test_layout.py fails
when a script spells one of these values by hand.
This module imports nothing of the store, so :mod:`~worker.store.scripts` can read it without a cycle.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class JobState(StrEnum):
    """A job's state (docs/design.md, "States and transitions"); the scripts in ``lua/`` move it."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"
    RETRYING = "retrying"
    DEAD = "dead"
    CANCELLED = "cancelled"
    #: not sent, on purpose, at the moment of sending: ``skip_reason`` says why (:class:`SkipReason`)
    SKIPPED = "skipped"


class SkipReason(StrEnum):
    """Why a job ended ``skipped`` (begin.lua): no vendor call was made."""

    SUPPRESSED = "suppressed"  # the recipient is on the account's (or every account's) suppression list
    FREQUENCY_CAP = "frequency_cap"  # the account's recipient_cap was reached for this recipient


class BeginStatus(StrEnum):
    """What ``begin.lua`` answers (:class:`worker.store.ledger.Begin`)."""

    GO = "go"  # the job is now ``sending``: call the vendor
    EARLY = "early"  # the pacing start has not come on Redis's clock: wait ``wait_s``
    LOST = "lost"  # the lease is gone (recovered): stop without touching anything
    YIELD = "yield"  # the lease was flagged: something the session was claimed under changed
    SKIP = "skip"  # not to be sent (cancelled, missing, already finished): go on with the next


class RecallOutcome(StrEnum):
    """What became of a sent job's revoke (field ``recall`` of the job; docs/design.md, "Recall")."""

    PENDING = "pending"  # a revoke job waits on the account's high-priority queue
    RECALLED = "recalled"  # the vendor took the revoke
    TOO_LATE = "too_late"  # past the revoke window: no call
    UNSUPPORTED = "unsupported"  # the vendor has no documented revoke: no call
    FAILED = "failed"  # refused, or the answer was unreadable (never retried: exactly once)


class DeadReason(StrEnum):
    """Why a job is dead (the ``reason`` of a dead letter; ``GET /v1/dead-letters?reason=``)."""

    PERMANENT = "permanent"  # the vendor refused it for good (not a friend, bad parameters)
    RETRIES_EXHAUSTED = "retries_exhausted"  # transient failures outlasted the retry budget
    UNKNOWN_OUTCOME = "unknown_outcome"  # it may have been sent: a person decides (replay needs force)
    INVALID_MESSAGE = "invalid_message"  # it cannot be built for this vendor: never sent
    ACCOUNT_MISSING = "account_missing"  # its account was deleted
    #: a sequence's part failed after earlier parts went out: the rest are skipped, never retried later
    #: (they would arrive apart from the first ones); a replay sends the parts not yet sent
    SEQUENCE_STOPPED = "sequence_stopped"


class CancelReason(StrEnum):
    """Why a job ended ``cancelled`` without a person cancelling it (its ``reason``; begin.lua)."""

    #: the operator key that submitted it was revoked while it was being sent; it was not tried again
    OWNER_REVOKED = "owner_revoked"


class CampaignStatus(StrEnum):
    """A campaign's stored ``status`` (the campaign hash). A campaign whose jobs have all ended is still
    stored ``active``: the API reports it ``finished``, computed from its counts."""

    DRAFT = "draft"  # created with ``draft``: edited and test-sent, never sent until started
    SCHEDULED = "scheduled"  # staged until its ``send_at``
    ACTIVE = "active"  # its jobs are live in its accounts' queues
    PAUSED = "paused"  # by an operator or an auto-pause: CLAIM skips it
    CANCELLED = "cancelled"  # for good: its unsent jobs are cancelled


#: The Lua name of each shared enum: ``STATE.SENDING`` in a script is ``'sending'`` once composed.
LUA_TABLES: Final[dict[str, type[StrEnum]]] = {
    "STATE": JobState,
    "SKIP_REASON": SkipReason,
    "BEGIN": BeginStatus,
    "RECALL": RecallOutcome,
    "DEAD_REASON": DeadReason,
    "CANCEL_REASON": CancelReason,
    "CAMPAIGN": CampaignStatus,
}
