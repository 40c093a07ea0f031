"""Safe handling of the app-message XML users paste from vendor callbacks.

Users paste three shapes: the bare ``<appmsg>`` node, a whole ``<msg>`` document, or the inside of
``<msg>`` starting at ``<appmsg>`` with siblings after it (seed 000). We wrap the input in a synthetic root
so all three parse, find the first ``<appmsg>`` and serialize it alone: that is what every vendor's XML
endpoint wants.

The XML is untrusted, so it is refused before parsing when it is over :data:`MAX_XML_BYTES` or declares a
DTD or entities (billion laughs, external entities), and lxml parses it with entity resolution, network
access and huge-tree support off as a second line of defence. Placeholders (``{name}``) are substituted
inside the parsed tree, so values are escaped by the serializer wherever they land (text or attribute).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lxml import etree

from worker.errors import MessageError, UnsafeXMLError

#: Largest XML accepted, in UTF-8 bytes. Real app messages are 1-10 KB; a file card with a long
#: fileuploadtoken stays well under this.
MAX_XML_BYTES = 256 * 1024

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DTD_MARKERS = re.compile(rb"<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST)", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_WRAPPER = "broadcast-wrapper"


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
        strip_cdata=False,
    )


def parse_untrusted(xml: str, *, field: str = "xml", max_bytes: int = MAX_XML_BYTES) -> etree._Element:
    """Parse pasted XML (possibly several sibling elements) under a synthetic wrapper root."""
    if not isinstance(xml, str) or not xml.strip():
        raise MessageError(f"{field}: XML is empty", field=field)
    raw = xml.encode("utf-8")
    if len(raw) > max_bytes:
        raise UnsafeXMLError(f"{field}: XML is {len(raw)} bytes, over the {max_bytes}-byte limit", field=field)
    if _DTD_MARKERS.search(raw):
        raise UnsafeXMLError(f"{field}: XML with a DTD or entity declarations is refused", field=field)
    body = _XML_DECLARATION.sub("", xml, count=1)
    try:
        return etree.fromstring(f"<{_WRAPPER}>{body}</{_WRAPPER}>", _parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafeXMLError(f"{field}: XML is not well-formed: {exc.msg}", field=field) from None


def find_appmsg(xml: str, *, field: str = "xml") -> etree._Element:
    """Return the first ``<appmsg>`` element of pasted XML, or raise naming the field."""
    root = parse_untrusted(xml, field=field)
    for element in root.iter("appmsg"):
        return element
    raise MessageError(f"{field}: XML has no <appmsg> element", field=field)


def serialize(element: etree._Element) -> str:
    """Serialize one element alone (no tail, no siblings)."""
    return str(etree.tostring(element, encoding="unicode", with_tail=False))


def extract_appmsg(xml: str, *, field: str = "xml") -> str:
    """The ``<appmsg>…</appmsg>`` node of pasted XML, serialized alone."""
    return serialize(find_appmsg(xml, field=field))


def _pasted_msg(root: etree._Element) -> etree._Element | None:
    """The pasted ``<msg>`` element when the paste is one whole callback document holding an ``<appmsg>``."""
    elements = [child for child in root if isinstance(child.tag, str)]
    if len(elements) == 1 and elements[0].tag == "msg" and elements[0].find("appmsg") is not None:
        return elements[0]
    return None


def extract_msg_or_appmsg(xml: str, *, field: str = "xml") -> str:
    """A whole pasted ``<msg>`` document re-serialized (GeWe's forwardMiniApp wants it), else the ``<appmsg>``.

    Re-serializing from the safe parse drops any ``<?xml …?>`` declaration, comments outside ``<msg>`` and
    anything a parser would not keep, so what is stored is known to be well-formed.
    """
    root = parse_untrusted(xml, field=field)
    msg = _pasted_msg(root)
    if msg is not None:
        return serialize(msg)
    for element in root.iter("appmsg"):
        return serialize(element)
    raise MessageError(f"{field}: XML has no <appmsg> element", field=field)


def is_msg_document(xml: str) -> bool:
    """True for what :func:`extract_msg_or_appmsg` kept as a whole ``<msg>`` document."""
    return xml.startswith(("<msg>", "<msg "))


def placeholders(text: str) -> set[str]:
    """Names of the ``{placeholders}`` in a template."""
    return set(PLACEHOLDER.findall(text))


def substitute_text(template: str, variables: Mapping[str, str], *, field: str) -> str:
    """Fill ``{name}`` placeholders in plain text; a missing variable is an error naming it."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise MessageError(f"{field}: no value for placeholder {{{name}}}", field=field)
        return str(variables[name])

    return PLACEHOLDER.sub(replace, template)


def substitute_xml(appmsg_xml: str, variables: Mapping[str, str], *, field: str) -> str:
    """Fill placeholders in text and attribute values of an appmsg; the serializer escapes values."""
    if not PLACEHOLDER.search(appmsg_xml):
        return appmsg_xml
    # a whole <msg> document (kept for GeWe's forwardMiniApp) is filled and kept whole
    element = _pasted_msg(parse_untrusted(appmsg_xml, field=field))
    if element is None:
        element = find_appmsg(appmsg_xml, field=field)
    for node in element.iter():
        if node.text and PLACEHOLDER.search(node.text):
            node.text = substitute_text(node.text, variables, field=field)
        if node is not element and node.tail and PLACEHOLDER.search(node.tail):
            node.tail = substitute_text(node.tail, variables, field=field)
        for key, value in node.attrib.items():
            if PLACEHOLDER.search(value):
                node.set(key, substitute_text(value, variables, field=field))
    return serialize(element)


@dataclass(frozen=True, slots=True)
class MiniProgramCard:
    """The structured fields of a mini-program card (type 33 appmsg)."""

    app_id: str
    username: str
    title: str
    page_path: str
    display_name: str
    cover_url: str | None = None
    icon_url: str | None = None


def _sub(parent: etree._Element, tag: str, text: str | None = None, *, cdata: bool = False) -> etree._Element:
    child = etree.SubElement(parent, tag)
    if text is not None:
        child.text = etree.CDATA(text) if cdata else text
    return child


def build_miniprogram_appmsg(card: MiniProgramCard) -> str:
    """A type-33 ``<appmsg>`` with ``<weappinfo>``, for vendors that only take XML."""
    appmsg = etree.Element("appmsg", appid="", sdkver="0")
    _sub(appmsg, "title", card.title)
    _sub(appmsg, "des", card.display_name)
    _sub(appmsg, "action", "view")
    _sub(appmsg, "type", "33")
    _sub(appmsg, "showtype", "0")
    _sub(
        appmsg,
        "url",
        f"https://mp.weixin.qq.com/mp/waerrpage?appid={card.app_id}&type=upgrade&upgradetype=3#wechat_redirect",
    )
    _sub(appmsg, "appattach")
    _sub(appmsg, "sourceusername", card.username)
    _sub(appmsg, "sourcedisplayname", card.display_name)
    if card.cover_url:
        _sub(appmsg, "thumburl", card.cover_url)
    weappinfo = _sub(appmsg, "weappinfo")
    _sub(weappinfo, "pagepath", card.page_path, cdata=True)
    _sub(weappinfo, "username", card.username, cdata=True)
    _sub(weappinfo, "appid", card.app_id, cdata=True)
    _sub(weappinfo, "type", "2")
    _sub(weappinfo, "version", "0")
    if card.icon_url:
        _sub(weappinfo, "weappiconurl", card.icon_url, cdata=True)
    _sub(weappinfo, "appservicetype", "0")
    return serialize(appmsg)


def build_link_appmsg(*, title: str, description: str, url: str, thumb_url: str) -> str:
    """A type-5 link ``<appmsg>`` (title, des, url, thumburl), for vendors that take only XML (gewe-legacy
    ``sendapp``, MagicCgi CgiCmd 222). Values are set as element text, so lxml escapes them."""
    appmsg = etree.Element("appmsg", appid="", sdkver="0")
    _sub(appmsg, "title", title)
    _sub(appmsg, "des", description)
    _sub(appmsg, "action", "view")
    _sub(appmsg, "type", "5")
    _sub(appmsg, "showtype", "0")
    _sub(appmsg, "url", url)
    _sub(appmsg, "thumburl", thumb_url)
    return serialize(appmsg)


def _text(element: etree._Element, path: str) -> str | None:
    found = element.find(path)
    if found is None or found.text is None:
        return None
    return str(found.text).strip() or None


def parse_miniprogram_appmsg(xml: str, *, field: str = "xml") -> MiniProgramCard:
    """Read the structured card back out of a mini-program appmsg (the inverse of the builder)."""
    appmsg = find_appmsg(xml, field=field)
    if _text(appmsg, "type") != "33" and appmsg.find("weappinfo") is None:
        raise MessageError(f"{field}: not a mini-program appmsg (type 33 with <weappinfo>)", field=field)
    return MiniProgramCard(
        app_id=_text(appmsg, "weappinfo/appid") or "",
        username=_text(appmsg, "weappinfo/username") or _text(appmsg, "sourceusername") or "",
        title=_text(appmsg, "title") or "",
        page_path=_text(appmsg, "weappinfo/pagepath") or "",
        display_name=_text(appmsg, "sourcedisplayname") or "",
        cover_url=_text(appmsg, "thumburl"),
        icon_url=_text(appmsg, "weappinfo/weappiconurl"),
    )
