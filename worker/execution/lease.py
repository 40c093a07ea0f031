"""One vendor call made under an account's lease: the single path for sends, sequence parts, revokes,
contact-sync steps and the resume probe.

Whoever holds the account's lease (a send session, a contact-sync step, an operator's probe) makes its
vendor calls through :func:`call_under_lease`: the quick retries of ``retry.call_with_quick_retries`` for
what provably never left (``vendors.md``; the table in ``docs/design.md``), the lease renewed before each
retry so it outlives the call, and no retry once the lease is lost. What is retried and what counts as an
unknown outcome is decided in one place (``_is_quick_retryable`` and the vendor layer's mapping); each holder
only brings its own renewal (the session's ``touch``, the step's ``holds``, the probe's ``renew``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from worker.execution.retry import call_with_quick_retries
from worker.pacing.holds import ResumeCheck, confirm_back_online
from worker.settings import Settings
from worker.store.accounts import Account, AccountStore
from worker.vendors.base import VendorBackend

T = TypeVar("T")


def call_under_lease(
    call: Callable[[], T],
    settings: Settings,
    renew: Callable[[], bool],
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Run one vendor call under a held lease: quick retries only for what provably never left, ``renew``
    (True: the lease is still ours, now extended) before each retry; a lost lease stops the retries and the
    last error is raised."""
    return call_with_quick_retries(call, settings, sleep=sleep, before_retry=renew)


def probe_resume(
    accounts: AccountStore,
    account: Account,
    backend: VendorBackend,
    settings: Settings,
    *,
    sleep: Callable[[float], None] | None = None,
) -> ResumeCheck:
    """The resume check (online check, and a probe send for a down account) under the account's lease, each
    call through :func:`call_under_lease`. Raises ConfigError when a session holds the account."""
    with accounts.probing(account.id, ttl_s=2 * settings.longest_vendor_call_s) as probe:
        probe.made_a_call()  # the pacing counts the check, whatever its answer

        def under_lease(call: Callable[[], T]) -> T:
            return call_under_lease(call, settings, probe.renew, sleep)

        return confirm_back_online(backend, account, under_lease=under_lease)
