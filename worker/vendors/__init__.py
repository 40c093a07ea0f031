"""Vendor backends, one module each, registered by name (``VendorName`` in ``base.py`` is the list)."""

from worker.errors import MessageError
from worker.messages import AnyMessage, SequenceMessage, parts_of
from worker.vendors import ecloud, gewe, gewe_legacy, ohwxapi
from worker.vendors.base import (
    SendResult,
    VendorAccount,
    VendorBackend,
    backend_for,
    registered_vendors,
    vendors_without_revoke,
)

#: The message kinds each vendor carries (its backend's ``kinds``): the README's vendor table.
KINDS: dict[str, frozenset[str]] = {
    backend.name: backend.kinds
    for backend in (gewe.GeweBackend, gewe_legacy.GeweLegacyBackend, ecloud.ECloudBackend, ohwxapi.OhwxapiBackend)
}


def check_message_for(vendor: str, message: AnyMessage) -> None:
    """Refuse at the door what this vendor cannot send (raises MessageError naming the field): a kind it
    documents no endpoint for, or what it cannot send well (E云: a pasted mini-program needs a cover).
    Every part of a sequence is checked (``message.parts[<i>].kind``)."""
    parts = parts_of(message)
    for i, part in enumerate(parts):
        where = f"message.parts[{i}]" if isinstance(message, SequenceMessage) else "message"
        kinds = KINDS.get(vendor)
        if kinds is not None and part.kind not in kinds:
            carried = ", ".join(sorted(kinds))
            raise MessageError(
                f"{where}.kind: {vendor} cannot send {part.kind!r} messages (it documents no endpoint for it; "
                f"it carries: {carried}) / {vendor} 不支持发送 {part.kind} 消息（该服务商的接口文档中没有；可发送：{carried}）",
                field=f"{where}.kind",
            )
        if vendor == "ecloud":
            ecloud.check_message(part)


__all__ = [
    "KINDS",
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
