"""An ``Offline`` callback is checked with the vendor before it marks the account down.

Whoever holds an account's callback URL can post a GeWe ``Offline`` (dedupe stops replays, not forgeries:
``scheduler/intake/callbacks.py``). Taken on its word, a leaked URL stops the account each time an operator
resumes it. So the dispatcher hands a fresh notice to a worker (the task ``broadcast.check_offline``), which
asks the vendor's online check under the account's lease, as the resume probe does
(:func:`~worker.execution.lease.call_under_lease`: one call in flight per account, counted by its pacing):

- ``false``, the vendor refusing the account (token expired, offline), or a vendor without an online check:
  the account is marked ``down`` with the notice's words, unless its status changed since the notice came;
- ``true``: the account keeps sending; the audit trail records ``callback.offline_refuted``. GeWe's ``true``
  is weak evidence (``worker/pacing/holds.py``): an account really logged out that the check calls online
  is marked down by its next send's ``微信已离线`` answer, so nothing is sent from it either way;
- a session holds the account, or the check failed (timeout, a vendor error): checked again later
  (:data:`RECHECK_S`, :data:`RECHECKS` times); after that it is left to the sends, which find a logged-out
  account at their first call, and the audit trail records ``callback.offline_unconfirmed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum

from worker.errors import AccountDownError, ConfigError, VendorError
from worker.execution.lease import call_under_lease
from worker.settings import Settings
from worker.store.accounts import Account, AccountStore
from worker.store.audit import AuditLog
from worker.vendors.base import VendorBackend

log = logging.getLogger("broadcast.callbacks")

#: How long a notice waits before it is checked again (the account busy, the check failed), and how often.
RECHECK_S = 30.0
RECHECKS = 10


class OfflineVerdict(StrEnum):
    """What became of an ``Offline`` notice (the task's result in Flower)."""

    DOWN = "down"  # the vendor agrees: marked down
    REFUTED = "refuted"  # the vendor says online: the account keeps sending
    UNCHANGED = "unchanged"  # gone, or its status changed after the notice (an operator acted): nothing done
    BUSY = "busy"  # a session holds the account: checked again later
    UNCONFIRMED = "unconfirmed"  # the check failed: checked again later, then left to the sends


def check_offline_notice(
    accounts: AccountStore,
    audit: AuditLog,
    backend_for: Callable[[Account], VendorBackend],
    settings: Settings,
    *,
    account_id: str,
    reason: str,
    received: float,
    last_try: bool,
) -> OfflineVerdict:
    """Check one notice (received at ``received``, epoch seconds) with the vendor and act on the answer.
    ``last_try``: a failed check is recorded as unconfirmed (earlier tries are checked again)."""
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
        return OfflineVerdict.BUSY
    except AccountDownError as exc:  # the vendor refuses the account itself: that is the notice confirmed
        online, reason = False, f"{reason}; {exc}"
    except VendorError as exc:
        if last_try:
            _record(audit, "callback.offline_unconfirmed", target)
            log.warning(
                "offline callback not confirmed: the online check failed; left to the sends",
                extra={"account": account_id, "error": str(exc)},
            )
        return OfflineVerdict.UNCONFIRMED
    if online:
        _record(audit, "callback.offline_refuted", target)
        log.warning("offline callback refuted: the vendor says the account is online", extra={"account": account_id})
        return OfflineVerdict.REFUTED
    if not accounts.set_status(account_id, "down", reason, unchanged_since=account.status_changed):
        return OfflineVerdict.UNCHANGED  # paused, resumed or marked down meanwhile: that stands
    _record(audit, "account.down", target)
    log.warning("account down by callback, confirmed by the vendor", extra={"account": account_id, "error": reason})
    return OfflineVerdict.DOWN


def _record(audit: AuditLog, action: str, target: str) -> None:
    """On the record under the key "callback", as the callback processor's own changes are."""
    audit.record(key="callback", role="callback", action=action, target=target, status=200)
