"""What every waiting command (``send --wait``, ``campaign watch``, ``campaign recall --watch``) shares: it says
once why nothing moves when an account it waits on is down, paused or held, and it gives up after
``--timeout`` seconds (exit 4) instead of waiting silently forever."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Annotated, Any

import typer

from scheduler.cli.client import ClientError
from scheduler.cli.render import err, fail, visible

#: Exit code of a wait that ran out of ``--timeout`` (the work itself goes on).
TIMED_OUT = 4
#: Seconds between two looks at the accounts (each look is one ``GET /v1/accounts/{id}`` per account).
LOOK_EVERY_S = 2.0
#: Accounts looked at, at most, per look (a campaign over hundreds of accounts names the first ones).
LOOK_AT_MOST = 20
_STATUS_ZH = {"down": "掉线", "paused": "已暂停"}

TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout", help="give up waiting after this many seconds (exit 4; 0: never) / 等待超时秒数（退出码 4）"
    ),
]


def account_trouble(account: dict[str, Any]) -> str | None:
    """One bilingual line when an account cannot send now (down, paused, or a kind held), else None."""
    name, status = account.get("id"), account.get("status")
    reason = account.get("status_reason") or ""
    if status != "active":
        why = f" ({reason})" if reason else ""
        zh = _STATUS_ZH.get(str(status), str(status))
        return (
            f"account {name} is {status}{why}: its messages wait until it is back (broadcast accounts show {name}) "
            f"/ 账号 {name} {zh}{why}，消息等待其恢复"
        )
    holds = account.get("holds") or {}
    if holds:
        held = "; ".join(f"{kind}: {hold.get('reason', '')}" for kind, hold in holds.items())
        return f"account {name} holds {held} / 账号 {name} 暂停发送部分类型：{held}"
    return None


class Waiting:
    """A wait's deadline, and a look at its accounts every few seconds that prints each new trouble once."""

    def __init__(self, api: Any, timeout: float) -> None:
        self.api = api
        self.deadline = time.monotonic() + timeout if timeout > 0 else None
        self._next_look = time.monotonic() + LOOK_EVERY_S / 4  # a queued job usually moves within a moment
        self._said: set[str] = set()

    def look(self, accounts: Iterable[str]) -> None:
        """Print (stderr, once each) why an account these jobs wait on cannot send now."""
        if time.monotonic() < self._next_look:
            return
        self._next_look = time.monotonic() + LOOK_EVERY_S
        for name in list(dict.fromkeys(accounts))[:LOOK_AT_MOST]:
            try:
                line = account_trouble(self.api.account(name))
            except ClientError:  # an account deleted meanwhile, or a key that may not read accounts
                continue
            if line and line not in self._said:
                self._said.add(line)
                err.print(visible(line), markup=False, highlight=False, soft_wrap=True)

    def expired(self, what: str) -> typer.Exit | None:
        """The exit to raise when the deadline has passed (``what`` goes on, and says so)."""
        if self.deadline is None or time.monotonic() < self.deadline:
            return None
        return fail(f"timed out waiting; {what} goes on / 等待超时，任务仍在继续", TIMED_OUT)
