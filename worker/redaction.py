"""The forms a secret may be echoed back in, for the log filter and the error texts to scrub them all.

Below every other worker module (errors and logs both use it): it imports nothing of the project."""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus


def secret_forms(secret: str) -> set[str]:
    """The ways a vendor or a proxy may echo a secret back: as it is, upper- or lower-cased, URL-encoded,
    base64 (standard or URL-safe, with or without padding). Forms of 3 characters or fewer are left out."""
    if not secret or len(secret) <= 3:
        return set()
    raw = secret.encode("utf-8", "surrogatepass")
    forms = {secret, secret.upper(), secret.lower(), quote(secret, safe=""), quote_plus(secret)}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encode(raw).decode("ascii")
        forms |= {encoded, encoded.rstrip("=")}
    return {form for form in forms if len(form) > 3}
