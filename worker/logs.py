"""Logging: one line per send attempt, plain or JSON, with secrets redacted in every record.

The redaction filter replaces configured secrets (vendor tokens, API tokens) wherever they would appear,
as a net under the rule that no code logs a token in the first place.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterable

from worker.redaction import secret_forms

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Scrubs known secrets from the message and every extra field.

    A worker knows one token per account it sends for: thousands. Trying each with ``str.replace`` on every
    field of every record cost milliseconds a line (profiled under ``bench.envelope`` with 5,000 accounts),
    so secrets are indexed by their first four characters and a text is scanned once: at each position a
    dict lookup, and a comparison only where a secret could start. Adding a secret is O(1).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._by_prefix: dict[str, tuple[str, ...]] = {}
        #: the secrets given already: a session adds its account's token each time, its forms are known
        self._given: set[str] = set()
        self.add(*secrets)

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(s for group in self._by_prefix.values() for s in group)

    def add(self, *secrets: str) -> None:
        fresh = [given for given in secrets if given not in self._given]
        if not fresh:
            return
        for secret in {form for given in fresh for form in secret_forms(given)}:
            group = self._by_prefix.get(secret[:4], ())
            if secret not in group:
                with self._lock:  # longest first, so a secret that extends another is scrubbed whole
                    group = self._by_prefix.get(secret[:4], ())
                    self._by_prefix[secret[:4]] = tuple(sorted({*group, secret}, key=len, reverse=True))
        self._given.update(fresh)  # after its forms are in: a thread seeing it given finds them scrubbed

    def _scrub(self, text: str) -> str:
        index = self._by_prefix
        out: list[str] = []
        i = start = 0
        end = len(text) - 3
        while i < end:
            group = index.get(text[i : i + 4])
            if group is not None:
                found = next((s for s in group if text.startswith(s, i)), None)
                if found is not None:
                    out.append(text[start:i])
                    out.append("***")
                    i = start = i + len(found)
                    continue
            i += 1
        if not out:
            return text
        out.append(text[start:])
        return "".join(out)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._by_prefix:
            record.msg = self._scrub(record.getMessage())
            record.args = None
            for key, value in list(record.__dict__.items()):
                if key not in _STANDARD and isinstance(value, str):
                    setattr(record, key, self._scrub(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every extra field."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class KeyValueFormatter(logging.Formatter):
    """Human-readable line with the extra fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = " ".join(
            f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
        )
        return f"{base} {extras}" if extras else base


REDACTOR = RedactingFilter()


def setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    """Configure the root logger once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(REDACTOR)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(JsonFormatter() if json_lines else KeyValueFormatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Celery's own "task received" / "task succeeded" lines and httpx's "HTTP Request: POST …" line repeat
    # what our one line per send says, for hundreds of sends a second; Flower shows the tasks. Kept at DEBUG.
    quiet = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    for name in ("celery.app.trace", "celery.worker.strategy", "httpx"):
        logging.getLogger(name).setLevel(quiet)
