"""An ``Offline`` callback is checked with the vendor before it marks the account down.

Whoever holds an account's callback URL can post a GeWe ``Offline`` (dedupe stops replays, not forgeries:
``scheduler/intake/callbacks.py``). Taken on its word, a leaked URL stops the account each time an operator
resumes it. So the dispatcher hands a fresh notice to a worker (the task ``broadcast.check_offline``), which
asks the vendor's online check under the account's lease, as the resume probe does
(:func:`~worker.execution.lease.call_under_lease`: one call in flight per account, counted by its pacing):

- ``false``, or the vendor refusing the account (token expired, offline): the account is marked ``down``
  with the notice's words, unless its status changed since the notice came;
- ``true``: the account keeps sending; the audit trail records ``callback.offline_refuted``. GeWe's ``true``
  is weak evidence (``worker/pacing/holds.py``): an account really logged out that the check calls online
  is marked down by its next send's ``微信已离线`` answer, so nothing is sent from it either way;
- a session holds the account (no vendor call made): checked again every :data:`RECHECK_S`, up to
  :data:`BUSY_RECHECKS` times; the check failed (a timeout, a vendor error, an answer that is neither true nor
  false): again up to :data:`FAILED_RECHECKS` times, so forged notices cost the vendor few calls. After that
  it is left to the sends, which find a logged-out account at their first call, and the audit trail records
  ``callback.offline_unconfirmed``.

A check to make again is kept in Redis (:class:`OfflineRechecks`, a sorted set by due time) and sent again
by the dispatcher, not held by a worker as a Celery countdown: a worker that stops (a deploy, a crash) would
hold such a message unacknowledged until the broker's visibility timeout, an hour.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from enum import StrEnum

import redis

from worker.errors import AccountDownError, ConfigError, VendorError
from worker.execution.lease import call_under_lease
from worker.settings import Settings
from worker.store.accounts import Account, AccountStore
from worker.store.audit import CALLBACK, AuditLog
from worker.store.keys import Keys
from worker.vendors.base import VendorBackend

log = logging.getLogger("broadcast.callbacks")

#: How long a notice waits before it is checked again, and how often: while a session holds the account (no
#: vendor call was made), and after a check that failed (each one a vendor call the pacing counts).
RECHECK_S = 30.0
BUSY_RECHECKS = 10
FAILED_RECHECKS = 2


class OfflineVerdict(StrEnum):
    """What became of an ``Offline`` notice (the task's result in Flower)."""

    DOWN = "down"  # the vendor agrees: marked down
    REFUTED = "refuted"  # the vendor says online: the account keeps sending
    UNCHANGED = "unchanged"  # gone, or its status changed after the notice (an operator acted): nothing done
    BUSY = "busy"  # a session holds the account: checked again later
    UNCONFIRMED = "unconfirmed"  # the check failed: checked again later, then left to the sends


def gives_up(verdict: OfflineVerdict, tries: int) -> bool:
    """Whether a notice checked ``tries`` times before this one (0 the first) is left to the sends now."""
    if verdict is OfflineVerdict.BUSY:
        return tries >= BUSY_RECHECKS
    return verdict is OfflineVerdict.UNCONFIRMED and tries >= FAILED_RECHECKS


def checks_again(verdict: OfflineVerdict, tries: int) -> bool:
    """Whether the notice is to be checked again (:class:`OfflineRechecks`): not made or failed, and not
    given up yet."""
    return verdict in (OfflineVerdict.BUSY, OfflineVerdict.UNCONFIRMED) and not gives_up(verdict, tries)


def check_offline_notice(
    accounts: AccountStore,
    audit: AuditLog,
    backend_for: Callable[[Account], VendorBackend],
    settings: Settings,
    *,
    account_id: str,
    reason: str,
    received: float,
    tries: int = 0,
) -> OfflineVerdict:
    """Check one notice (received at ``received``, epoch seconds; checked ``tries`` times before) with the
    vendor and act on the answer. A check that is not made or fails again past its rechecks (:func:`gives_up`)
    is recorded as unconfirmed: the caller checks it again otherwise (:class:`OfflineRechecks`)."""
    account = accounts.get(account_id)
    # a status change stored after the notice came (kept to the millisecond, rounded: so not one in the
    # same millisecond) is an operator's or a send's word, newer than the notice
    if account is None or account.status != "active" or account.status_changed > received + 0.001:
        return OfflineVerdict.UNCHANGED
    target = f"account:{account_id}"
    try:
        with accounts.probing(account.id, ttl_s=2 * settings.longest_vendor_call_s) as probe:
            probe.made_a_call()  # the pacing counts the check, whatever its answer
            online = call_under_lease(backend_for(account).check_online, settings, probe.renew)
    except ConfigError:
        return _unconfirmed(audit, OfflineVerdict.BUSY, tries, target, "a session held the account throughout")
    except AccountDownError as exc:  # the vendor refuses the account itself: that is the notice confirmed
        online, reason = False, f"{reason}; {exc}"
    except VendorError as exc:
        return _unconfirmed(audit, OfflineVerdict.UNCONFIRMED, tries, target, f"the online check failed: {exc}")
    if online is None:  # neither true nor false: it tells nothing (GeWe is the one vendor posting Offline)
        return _unconfirmed(audit, OfflineVerdict.UNCONFIRMED, tries, target, "the online check did not say")
    if online:
        audit.record_own(CALLBACK, "callback.offline_refuted", target)
        log.warning("offline callback refuted: the vendor says the account is online", extra={"account": account_id})
        return OfflineVerdict.REFUTED
    if not accounts.set_status(account_id, "down", reason, unchanged_since=account.status_changed):
        return OfflineVerdict.UNCHANGED  # paused, resumed or marked down meanwhile: that stands
    audit.record_own(CALLBACK, "account.down", target)
    log.warning("account down by callback, confirmed by the vendor", extra={"account": account_id, "error": reason})
    return OfflineVerdict.DOWN


def _unconfirmed(audit: AuditLog, verdict: OfflineVerdict, tries: int, target: str, why: str) -> OfflineVerdict:
    """A check not made or failed: recorded as unconfirmed once it is left to the sends (:func:`gives_up`)."""
    if gives_up(verdict, tries):
        audit.record_own(CALLBACK, "callback.offline_unconfirmed", target)
        log.warning("offline callback not confirmed (%s): left to the sends", why, extra={"target": target})
    return verdict


class OfflineRechecks:
    """Notices to check again, by due time (a sorted set): kept in Redis, so a worker stopping does not hold
    them; the dispatcher sends each due one to a worker again (:meth:`take_due`)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.key = Keys(prefix).offline_rechecks

    def later(self, account_id: str, reason: str, received: float, tries: int, *, after_s: float = RECHECK_S) -> None:
        """Check the notice again in ``after_s`` seconds (its ``tries`` so far counted)."""
        member = json.dumps([account_id, reason, received, tries, uuid.uuid4().hex[:8]])
        self.redis.zadd(self.key, {member: time.time() + after_s})

    def take_due(self, send: Callable[[str, str, float, int], None], now: float, limit: int = 100) -> int:
        """Hand each notice due by ``now`` to ``send`` (account, reason, received, tries), then forget it: a
        dispatcher dying in between sends it again (a check made twice), never loses it. Returns how many."""
        due = [str(m) for m in self.redis.zrangebyscore(self.key, "-inf", now, start=0, num=limit)]
        for member in due:
            account_id, reason, received, tries, _ = json.loads(member)
            send(str(account_id), str(reason), float(received), int(tries))
            self.redis.zrem(self.key, member)
        return len(due)
