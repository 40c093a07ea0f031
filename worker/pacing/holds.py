"""What a single vendor answer must not undo: a down account's resume, and a message kind capped for the day.

**Resume after "down".** An account is marked down by a send answer (token expired, ``微信已离线``...).
GeWe's ``checkOnline`` is known to answer ``true`` for days while every send fails with ``微信已离线``
(Devo919/Gewechat#36, #224): a second check after a delay would say ``true`` again, so it proves nothing.
:func:`confirm_back_online` therefore asks the vendor's online check *and* sends one probe message to the
account's own file-transfer helper (``filehelper``, or the account option ``probe_to``); only a successful
probe resumes an account that is down. The down reason stays on the account while it is refused.

**Daily caps per kind.** GeWe refuses mini-programs from an account that sent about 500 of them to groups
in a day ("Too many attempts. Try again later"; lifts after ~12 h: wechaty/python-wechaty#133; GeWe's
``发送小程序失败`` with ``data.code "-2"`` is a refused cover, not a cap: Devo919/Gewechat#176, #182). Other kinds still go out. On a
:class:`~worker.errors.DailyCapError` the worker holds *that kind* for the account until its next local
midnight (:func:`hold_on_daily_cap`), and every later job of that kind is deferred to then without a vendor
call (:func:`defer_if_held`). Jobs are kept (state ``retrying``, due at the end of the hold) and the hold,
with the vendor's words, shows on the account (``holds`` in the account's public view).

**Cool-down after an abandoned call.** A call we stopped waiting for (read timeout, the call's deadline)
may still be in the vendor's hands: the account sends nothing for ``BROADCAST_ABANDONED_COOLDOWN_S``
(default 30 s), shown as the hold ``cooldown`` (:func:`hold_after_abandoned`).

The worker calls these functions from ``worker/execution/runner.py`` (one line each, marked ``worker/pacing/holds.py``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from worker.errors import DailyCapError, MessageError, VendorError
from worker.messages import TextMessage
from worker.pacing.rules import next_local_midnight
from worker.store.accounts import HOLD_PREFIX, Account, AccountStore, KindHold
from worker.vendors.base import VendorBackend

#: The account option naming who receives the resume probe; WeChat's file-transfer helper by default,
#: so the probe lands in the account's own chat list and nobody else's.
PROBE_TO_OPTION = "probe_to"
DEFAULT_PROBE_TO = "filehelper"
PROBE_TEXT = "broadcast: 恢复发送前的在线检查 / online check before resuming"

log = logging.getLogger("broadcast.send")


# --- resume after "down" ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResumeCheck:
    """The verdict on resuming an account: ``ok``, and why (the reason to show either way)."""

    ok: bool
    reason: str


T = TypeVar("T")


class UnderLease(Protocol):
    """Runs one vendor call under the account's lease (``worker.execution.lease.call_under_lease``)."""

    def __call__(self, call: Callable[[], T], /) -> T: ...


def _directly(call: Callable[[], T], /) -> T:
    return call()


def confirm_back_online(
    backend: VendorBackend, account: Account, *, under_lease: UnderLease = _directly
) -> ResumeCheck:
    """Whether an account may resume: the online check must not say offline, and a down account must also
    pass a probe send (one ``true`` from an online check is weak evidence). Each vendor call goes through
    ``under_lease`` (the resume probe's lease, its quick retries)."""
    try:
        online = under_lease(backend.check_online)
    except (VendorError, MessageError) as exc:  # MessageError: the request cannot be built from the account
        return ResumeCheck(False, f"online check failed: {exc}")
    if online is False:
        return ResumeCheck(False, "the vendor reports the account offline")
    if account.status != "down":
        return ResumeCheck(True, "")
    probe_to = account.spec.options.get(PROBE_TO_OPTION, DEFAULT_PROBE_TO)
    was = f" (was down: {account.status_reason})" if account.status_reason else ""
    try:
        under_lease(lambda: backend.send(probe_to, TextMessage(text=PROBE_TEXT)))
    except (VendorError, MessageError) as exc:
        check = "the online check says online" if online else "no online check"
        return ResumeCheck(False, f"still down{was}: {check}, but a probe send to {probe_to} failed: {exc}")
    return ResumeCheck(True, f"resumed after a probe send to {probe_to}{was}")


# --- daily caps per message kind ----------------------------------------------------------------------------


def hold_kind(accounts: AccountStore, account_id: str, kind: str, *, until: float, reason: str) -> KindHold:
    """Hold ``kind`` for the account until ``until``; shows on the account as ``holds.<kind>``."""
    hold = KindHold(kind, until, reason, time.time())
    accounts.redis.hset(accounts.keys.account(account_id), HOLD_PREFIX + kind, json.dumps(hold.to_dict()))
    return hold


def hold_for_daily_cap(
    accounts: AccountStore, account: Account, kind: str, error: VendorError, *, clock_offset_s: float = 0.0
) -> KindHold:
    """A daily cap answer: hold ``kind`` for the account until its next local day (shows on the account)."""
    until = next_local_midnight(time.time() + clock_offset_s, account.spec.limits.timezone) - clock_offset_s
    return hold_kind(accounts, account.id, kind, until=until, reason=f"daily cap: {error}")


#: The hold an account shows while it cools down after an abandoned call (not a message kind: every send
#: waits for it, through the account's next moment in the dispatcher).
COOLDOWN_HOLD = "cooldown"


def hold_after_abandoned(accounts: AccountStore, account_id: str, error: VendorError, *, until: float) -> KindHold:
    """Show the cool-down after a call abandoned unanswered (``BROADCAST_ABANDONED_COOLDOWN_S``) on the
    account as ``holds.cooldown``; the session hands the account back at ``until``."""
    reason = f"a call was abandoned unanswered; the vendor may still be working on it: {error}"
    # the pacing rules read it from the pace hash (the dispatcher and the session alike); the hold shows it
    accounts.redis.hset(accounts.keys.pace(account_id), "cool_until", f"{until:.6f}")
    return hold_kind(accounts, account_id, COOLDOWN_HOLD, until=until, reason=reason)


def account_holds(account: Account) -> dict[str, KindHold]:
    """The holds an account was read with, as KindHold objects (a session keeps them for its sends)."""
    return {
        kind: KindHold(kind, float(h["until"]), str(h["reason"]), float(h["since"]))
        for kind, h in account.holds.items()
    }


def held(holds: dict[str, KindHold], kind: str, now: float | None = None) -> KindHold | None:
    """The hold in force on ``kind`` among a session's holds (read with the account), if any."""
    hold = holds.get(kind)
    return hold if hold is not None and hold.until > (time.time() if now is None else now) else None


def held_entry(entry: dict[str, Any], hold: KindHold, code: str | None = None) -> tuple[str, dict[str, Any]]:
    """The error text and history entry of a job deferred to the end of a hold."""
    ended = time.time()
    started = float(entry.get("started", ended))
    error = f"{hold.kind} held until {hold.until:.0f}: {hold.reason}"
    history = {
        **entry,
        "ended": round(ended, 6),
        "latency_ms": round((ended - started) * 1000, 2),
        "outcome": "held",
        "error_class": DailyCapError.error_class,
        "error": error,
        "code": code,
        "held_until": hold.until,
    }
    return error, history
