"""Vendor backends, one module each, registered by name (``gewe``, ``gewe-legacy``, ``ecloud``, ``ohwxapi``)."""

from worker.vendors import ecloud, gewe, gewe_legacy, ohwxapi
from worker.vendors.base import (
    DEFAULT_TIMEOUT,
    SendResult,
    VendorAccount,
    VendorBackend,
    backend_for,
    registered_vendors,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "SendResult",
    "VendorAccount",
    "VendorBackend",
    "backend_for",
    "ecloud",
    "gewe",
    "gewe_legacy",
    "ohwxapi",
    "registered_vendors",
]
