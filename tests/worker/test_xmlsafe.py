"""Pasted XML: the three shapes users paste, hostile XML, the structured ↔ XML round trip, placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from worker.errors import MessageError, UnsafeXMLError
from worker.messages import parse_message
from worker.xmlsafe import (
    MAX_XML_BYTES,
    MiniProgramCard,
    build_miniprogram_appmsg,
    extract_appmsg,
    parse_miniprogram_appmsg,
)

DATA = Path(__file__).resolve().parents[1] / "data"
FRAGMENT = (DATA / "seed000_callback_fragment.xml").read_text()
FILE_APPMSG = (DATA / "seed002_file_appmsg.xml").read_text()
MINI_APPMSG = (DATA / "seed001_miniprogram_appmsg.xml").read_text()

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10))
    + "]><msg><appmsg><title>&lol9;</title></appmsg></msg>"
)
XXE = '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]><appmsg><title>&x;</title></appmsg>'


def test_seed000_fragment_with_siblings_yields_only_the_appmsg() -> None:
    out = extract_appmsg(FRAGMENT)
    assert out.startswith("<appmsg") and out.endswith("</appmsg>")
    assert "fromusername" not in out and "<appinfo>" not in out
    root = etree.fromstring(out)
    assert root.findtext("weappinfo/appid") == "wx9c4062d486855e2f"
    # CDATA and escaped ampersands survive untouched
    assert "<![CDATA[pages/venue/list.html]]>" in out
    assert "appid=wx9c4062d486855e2f&amp;type=upgrade" in out


def test_whole_msg_document_and_bare_node_give_the_same_appmsg() -> None:
    bare = extract_appmsg(FILE_APPMSG)
    wrapped = extract_appmsg(
        f'<?xml version="1.0" encoding="utf-8"?>\n<msg>{FILE_APPMSG}<fromusername>a</fromusername></msg>'
    )
    assert bare == wrapped
    assert etree.fromstring(bare).findtext("appattach/fileext") == "pdf"


@pytest.mark.parametrize("hostile", [BILLION_LAUGHS, XXE], ids=["billion-laughs", "xxe"])
def test_dtd_and_entities_are_refused(hostile: str) -> None:
    with pytest.raises(UnsafeXMLError, match="DTD or entity"):
        extract_appmsg(hostile)


def test_oversized_xml_is_refused_before_parsing() -> None:
    huge = "<appmsg><title>" + "x" * (MAX_XML_BYTES + 1) + "</title></appmsg>"
    with pytest.raises(UnsafeXMLError, match="over the"):
        extract_appmsg(huge)


@pytest.mark.parametrize(
    ("xml", "message"),
    [("<appmsg><title>x</appmsg>", "not well-formed"), ("<msg><img/></msg>", "no <appmsg>"), ("   ", "empty")],
)
def test_bad_xml_errors_name_the_field(xml: str, message: str) -> None:
    with pytest.raises(MessageError, match=message) as info:
        extract_appmsg(xml, field="message.xml")
    assert info.value.field == "message.xml"
    assert str(info.value).startswith("message.xml:")


def test_structured_miniprogram_round_trips_through_xml() -> None:
    card = MiniProgramCard(
        app_id="wx1f9ea355b47256dd",
        username="gh_690acf47ea05@app",
        title="最快29分钟 好吃水果送到家 & <more>",
        page_path="pages/homeDelivery/index.html?a=1&b=2",
        display_name="百果园+",
        cover_url="https://example.com/c.jpg?x=1&y=2",
        icon_url="https://example.com/i.png",
    )
    xml = build_miniprogram_appmsg(card)
    root = etree.fromstring(xml)
    assert root.tag == "appmsg" and root.findtext("type") == "33"
    assert parse_miniprogram_appmsg(xml) == card
    # and the built XML is accepted by the model as pasted mini-program XML
    assert parse_message({"kind": "miniprogram", "xml": xml}).xml == xml


def test_seed_miniprogram_xml_reads_back_its_card() -> None:
    card = parse_miniprogram_appmsg(MINI_APPMSG)
    assert card.app_id == "wx07af7e375d21a08c"
    assert card.username == "gh_12566478d436@app"
    assert card.page_path.startswith("pages/home/dashboard/index.html?shopAutoEnter=1")


def test_placeholders_in_xml_are_escaped_in_text_and_attributes() -> None:
    message = parse_message(
        {
            "kind": "appmsg",
            "xml": '<appmsg appid="{app}"><title>Hi {name}</title><des><![CDATA[{name}]]></des></appmsg>',
        }
    )
    assert message.placeholders() == {"app", "name"}
    rendered = message.render({"name": '</title><evil x="1">&', "app": 'a"b'})
    root = etree.fromstring(rendered.xml)
    assert root.findtext("title") == 'Hi </title><evil x="1">&'
    assert root.findtext("des") == '</title><evil x="1">&'
    assert root.get("appid") == 'a"b'
    assert root.find("evil") is None


def test_missing_placeholder_value_names_it() -> None:
    message = parse_message({"kind": "text", "text": "你好 {name}, code {code}"})
    assert message.missing_variables({"name": "x"}) == {"code"}
    with pytest.raises(MessageError, match=r"\{code\}"):
        message.render({"name": "x"})
    assert message.render({"name": "张三", "code": "42"}).text == "你好 张三, code 42"


def test_structured_miniprogram_fields_are_personalised_and_escaped_in_generated_xml() -> None:
    message = parse_message(
        {
            "kind": "miniprogram",
            "app_id": "wx1",
            "username": "gh_1@app",
            "title": "给 {name} 的券",
            "page_path": "pages/i?u={uid}",
            "cover_url": "https://c/x.jpg",
            "display_name": "店",
        }
    )
    rendered = message.render({"name": "<A&B>", "uid": "7&8"})
    card = parse_miniprogram_appmsg(rendered.appmsg_xml())
    assert card.title == "给 <A&B> 的券"
    assert card.page_path == "pages/i?u=7&8"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"kind": "text"}, "message.text"),
        ({"kind": "text", "text": ""}, "message.text"),
        ({"kind": "text", "text": "x", "colour": "red"}, "message.colour"),
        ({"kind": "miniprogram", "title": "t"}, "message"),
        ({"kind": "appmsg", "xml": "<x/>"}, "message.xml"),
        ({"kind": "appmsg", "xml": XXE}, "message.xml"),
        ({"kind": "video"}, "message"),
        ({"text": "no kind"}, "message"),
    ],
)
def test_invalid_messages_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(MessageError) as info:
        parse_message(data)
    assert info.value.field == field
    assert field in str(info.value)


def test_miniprogram_missing_fields_are_listed() -> None:
    with pytest.raises(MessageError, match="missing: app_id, username, page_path, cover_url, display_name"):
        parse_message({"kind": "miniprogram", "title": "t"})
