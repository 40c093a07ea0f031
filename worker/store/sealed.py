"""Vendor tokens are encrypted at rest: whoever reads Redis (a backup, a replica, ``MONITOR``) must not get a
key to the operator's WeChat accounts.

``BROADCAST_SECRET_KEY`` holds one or more Fernet keys (``cryptography``: AES-128-CBC with HMAC-SHA256,
timestamped, authenticated), comma-separated: the first encrypts, every one decrypts (``MultiFernet``),
which is how a key is rotated (docs/deployment.md). A sealed token is stored as ``enc1:<fernet token>``;
anything else is a token stored before encryption (or without a key), read as it is and sealed the next
time it is written (:meth:`~worker.store.accounts.AccountStore.reseal` does all of them at API start).
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from worker.errors import ConfigError

SEALED = "enc1:"


class SecretKeyRequired(ConfigError):
    """A token was to be stored in prod without ``BROADCAST_SECRET_KEY``: refused, nothing stored."""


class TokenCipher:
    """Seal and open stored tokens with the configured keys; without keys, tokens stay as they are — unless
    ``required`` (prod): then a token is never stored in plain text (:class:`SecretKeyRequired`)."""

    def __init__(self, keys: list[str], *, required: bool = False) -> None:
        self.required = required
        try:
            self._keys = [Fernet(key.strip().encode()) for key in keys if key.strip()]
        except ValueError:
            raise ConfigError(
                "BROADCAST_SECRET_KEY: each key must be a Fernet key (32 url-safe base64-encoded bytes; "
                'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())")'
            ) from None
        self._all = MultiFernet(self._keys) if self._keys else None

    @property
    def enabled(self) -> bool:
        return self._all is not None

    def seal(self, token: str) -> str:
        """What to store for ``token`` (encrypted with the first key; as it is without keys or when empty)."""
        if self._all is None and token and self.required:
            raise SecretKeyRequired(
                "token: BROADCAST_SECRET_KEY is not set; in prod vendor tokens are stored only encrypted "
                "(set a Fernet key, docs/deployment.md#security-settings)"
            )
        if not token or self._all is None:
            return token
        return SEALED + self._all.encrypt(token.encode()).decode()

    def open(self, stored: str) -> str | None:
        """The token a stored value holds; None when it is sealed and no configured key opens it."""
        if not stored.startswith(SEALED):
            return stored
        if self._all is None:
            return None
        try:
            return self._all.decrypt(stored[len(SEALED) :].encode()).decode()
        except InvalidToken:
            return None

    def is_current(self, stored: str) -> bool:
        """Whether ``stored`` needs no re-sealing: empty, sealed with the first key, or no keys configured."""
        if not stored or self._all is None:
            return True
        if not stored.startswith(SEALED):
            return False
        try:
            self._keys[0].decrypt(stored[len(SEALED) :].encode())
        except InvalidToken:
            return False
        return True
