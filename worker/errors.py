"""One exception tree for everything that can go wrong with a send.

Vendor modules translate httpx errors and vendor answer codes into these classes at the boundary, so the
pipeline decides what to do (retry, slow the account, pause it, dead-letter) from the class alone and never
sees an ``httpx`` exception or a vendor's envelope::

    BroadcastError
    ├── MessageError                 bad input: the message, its XML or its variables (never retried)
    │   └── UnsafeXMLError           XML with a DTD/entities, or over the size cap
    ├── ConfigError                  an account or setting that cannot work
    └── VendorError                  the vendor call failed; ``error_class`` says how
        ├── TransientError           not sent; retry with backoff          ("transient")
        │   └── ThrottledError       the vendor says "too fast"; slow the account, retry  ("throttled")
        ├── VendorFailure            vendor's generic "failed", no detail; retry a few times  ("failure")
        ├── AmbiguousError           the request left and no answer came back: may have been sent  ("ambiguous")
        ├── AccountDownError         token invalid, offline, unknown device: pause the account  ("account_down")
        ├── PermanentError           bad parameters, not a friend, removed or muted: dead-letter  ("permanent")
        ├── DailyCapError            this kind is capped for today (GeWe mini-programs): hold the kind  ("daily_cap")
        └── UnsupportedError         this vendor cannot do that (e.g. revoke on gewe-legacy)  ("unsupported")
    RevokeRefusedError               a revoke without the exact ids the vendor needs: never sent (a 4xx)

Error messages never contain tokens: vendor modules build them from the vendor's answer text, and
:func:`redact` scrubs anything that looks like a configured secret before an error is stored or logged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from worker.redaction import secret_forms


class BroadcastError(Exception):
    """Root of every error this product raises on purpose."""


class MessageError(BroadcastError, ValueError):
    """The message cannot be sent as given; ``field`` names the offending input."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnsafeXMLError(MessageError):
    """XML refused before or while parsing: DTD, entity declarations, size cap, or not well-formed."""


class ConfigError(BroadcastError):
    """An account or setting that cannot work (unknown vendor, missing instance...)."""


#: Longest vendor text kept in an error (histories, dead letters, reasons, logs): enough for any real answer.
MAX_ERROR_CHARS = 1000


def printable(text: str) -> str:
    """A vendor's words made safe to store, log and print: line breaks and tabs become spaces, other control
    characters are shown escaped (a vendor, or whoever sits between, must not forge log lines or drive a
    terminal), and the text is cut at :data:`MAX_ERROR_CHARS`."""
    if text.isprintable() and len(text) <= MAX_ERROR_CHARS:
        return text
    out = "".join(
        " " if ch in "\r\n\t" else (f"\\x{ord(ch):02x}" if unicodedata.category(ch) == "Cc" else ch) for ch in text
    )
    return out if len(out) <= MAX_ERROR_CHARS else out[: MAX_ERROR_CHARS - 1] + "…"


class VendorError(BroadcastError):
    """A vendor call that did not succeed. ``error_class`` drives the retry policy."""

    error_class = "vendor"

    def __init__(
        self,
        message: str,
        *,
        vendor: str = "",
        code: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(printable(message))
        self.vendor = vendor
        self.code = code
        self.http_status = http_status

    def to_dict(self) -> dict[str, object]:
        """A JSON-safe summary for attempt histories and API answers."""
        return {
            "error_class": self.error_class,
            "type": type(self).__name__,
            "message": str(self),
            "vendor": self.vendor,
            "code": self.code,
            "http_status": self.http_status,
        }


class TransientError(VendorError):
    """Not sent (connection refused, 5xx without an envelope, unparseable body): safe to retry."""

    error_class = "transient"


class ThrottledError(TransientError):
    """The vendor says the account sends too fast: slow the whole account, then retry."""

    error_class = "throttled"


class VendorFailure(VendorError):
    """The vendor's generic failure without a reason: retry a small bounded number of times."""

    error_class = "failure"


class AmbiguousError(VendorError):
    """The request left but no answer arrived: the message may be out. Never resend blindly."""

    error_class = "ambiguous"


class AbandonedError(AmbiguousError):
    """An unknown outcome because we stopped waiting (read timeout or the call's deadline) while the vendor
    may still be working on the request: the account cools down before its next send."""


class AccountDownError(VendorError):
    """Token invalid or expired, account offline, unknown device: every send from it will fail."""

    error_class = "account_down"


class PermanentError(VendorError):
    """Bad parameters, recipient not a friend, removed from or muted in a group: retrying cannot help."""

    error_class = "permanent"


class NotFriendError(PermanentError):
    """The recipient is not (or no longer) a friend of the account: dead, and suppressed for that account so
    the next campaign does not try again (a retry policy sees a plain permanent error)."""


class DailyCapError(VendorError):
    """The vendor refuses this kind of message from the account until a day has passed.

    GeWe answers ``发送小程序失败`` with ``data.code "-2"`` or "Too many attempts. Try again later" once an
    account sent about 500 mini-programs to groups in a day (lifts after ~12 h; Devo919/Gewechat#176,
    wechaty/python-wechaty#133). Other kinds still go out, so only this kind is held, and its jobs are kept.
    """

    error_class = "daily_cap"


class RevokeRefusedError(BroadcastError, ValueError):
    """A revoke we refuse to send: an id the vendor needs is missing or zero.

    GeWe answers "操作成功" to a revoke with a wrong id and does nothing (Devo919/Gewechat#70, #166), so a
    guessed id (``"None"``, ``null``, ``0``) would report a revoke that never happened.
    """

    def __init__(self, message: str, *, vendor: str = "", missing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.vendor = vendor
        self.missing = missing


class UnsupportedError(VendorError):
    """The vendor has no documented way to do this."""

    error_class = "unsupported"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of a secret (longer than 3 chars), in any of its :func:`secret_forms`
    and any letter case, with ``***``."""
    forms = {form for secret in secrets for form in secret_forms(secret)}
    if not forms:
        return text
    pattern = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
    return re.sub(pattern, "***", text, flags=re.IGNORECASE)
