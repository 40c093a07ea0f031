"""A whole pasted ``<msg>`` callback document is kept whole (GeWe's forwardMiniApp wants it), safely."""

from __future__ import annotations

import pytest

from tests.worker.test_xmlsafe import BILLION_LAUGHS, XXE
from tests.worker.vendors.test_against_simulator import MESSAGES
from worker.errors import MessageError
from worker.messages import MiniProgramMessage, parse_message
from worker.xmlsafe import extract_msg_or_appmsg

WHOLE = (
    '<?xml version="1.0"?>\n<msg>\n\t<appmsg appid="" sdkver="0"><title>{name} 的小程序</title><type>33</type></appmsg>'
    "\n\t<fromusername>wxid_sender</fromusername>\n\t<appinfo><version>1</version></appinfo>\n</msg>"
)


def test_a_whole_msg_is_kept_without_its_declaration_and_the_appmsg_is_still_reachable() -> None:
    message = parse_message({"kind": "miniprogram", "xml": WHOLE, "cover_url": "https://c/1.jpg"})
    assert isinstance(message, MiniProgramMessage)
    assert message.xml is not None and message.xml.startswith("<msg>\n\t<appmsg")
    assert message.msg_document() == message.xml
    assert message.appmsg_xml().startswith("<appmsg") and "fromusername" not in message.appmsg_xml()


def test_placeholders_are_filled_inside_the_whole_document_which_stays_whole() -> None:
    message = parse_message({"kind": "miniprogram", "xml": WHOLE, "cover_url": "https://c/1.jpg"})
    rendered = message.render({"name": "<小王&>"})
    assert isinstance(rendered, MiniProgramMessage)
    document = rendered.msg_document()
    assert document is not None and "<fromusername>wxid_sender</fromusername>" in document
    assert "&lt;小王&amp;&gt; 的小程序" in document  # escaped by the serializer


@pytest.mark.parametrize(
    "pasted",
    [
        MESSAGES["mini-xml"]["xml"],  # the inside of <msg> from <appmsg> on, with siblings (seed 000)
        "<appmsg><title>t</title><type>33</type></appmsg>",
        "<msg><fromusername>x</fromusername></msg><appmsg><type>33</type></appmsg>",  # no <appmsg> in <msg>
    ],
)
def test_anything_but_one_whole_msg_keeps_only_the_appmsg(pasted: str) -> None:
    assert extract_msg_or_appmsg(pasted).startswith("<appmsg")
    message = parse_message({"kind": "miniprogram", "xml": pasted})
    assert isinstance(message, MiniProgramMessage) and message.msg_document() is None


@pytest.mark.parametrize("hostile", [BILLION_LAUGHS, XXE])
def test_hostile_documents_are_refused(hostile: str) -> None:
    with pytest.raises(MessageError):
        extract_msg_or_appmsg(hostile, field="message.xml")
