"""Vendor backends, one module each, registered by name (``VendorName`` in ``base.py`` is the list)."""

from worker.messages import AnyMessage
from worker.vendors import ecloud, gewe, gewe_legacy, ohwxapi
from worker.vendors.base import (
    SendResult,
    VendorAccount,
    VendorBackend,
    backend_for,
    registered_vendors,
    vendors_without_revoke,
)


def check_message_for(vendor: str, message: AnyMessage) -> None:
    """Refuse at the door what this vendor cannot send well (raises MessageError naming the field)."""
    if vendor == "ecloud":
        ecloud.check_message(message)


__all__ = [
    "SendResult",
    "VendorAccount",
    "VendorBackend",
    "backend_for",
    "check_message_for",
    "ecloud",
    "gewe",
    "gewe_legacy",
    "ohwxapi",
    "registered_vendors",
    "vendors_without_revoke",
]
