"""The message model: what a user asks us to send, validated once at the door.

Kinds: ``text`` (with mentions or mention-all), ``miniprogram`` (structured card fields, or pasted XML
with an optional fresh cover), ``appmsg`` (pasted XML: links, files, video-channel posts), and the media
kinds ``image``, ``file`` and ``link`` (issue 20; which vendor carries which is ``worker.vendors.KINDS``). Pasted XML is parsed safely and normalized to its ``<appmsg>`` node at validation,
so a stored job holds only what the vendor needs, already known to be well-formed.

Personalisation: :meth:`render` fills ``{placeholders}`` from a recipient's variables. Validation of a
template against a recipient (:meth:`missing_variables`, :meth:`size_plan`) is cheap, so a campaign can
refuse a recipient before anything is stored, and a small request can never render into a huge message:
the rendered size is computed from placeholder counts × value lengths *before* any string is built.

Text that cannot travel (C0/C1 control characters other than tab and line breaks, lone surrogates,
U+FFFE/U+FFFF) is refused in every field and variable: it cannot be encoded as UTF-8 or put into XML, so
accepting it would only fail later, in the worker, after the job was promised.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, get_args

from annotated_types import MaxLen
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from worker import xmlsafe
from worker.errors import MessageError

MAX_TEXT_CHARS = 20_000
#: The longest WeChat id (a recipient, a mention).
WECHAT_ID_MAX = 128
#: What a WeChat id looks like: a wxid, a ``…@chatroom`` id, ``filehelper``.
WECHAT_ID_PATTERN = rf"^[A-Za-z0-9_@.\-]{{1,{WECHAT_ID_MAX}}}$"
_WECHAT_ID = re.compile(WECHAT_ID_PATTERN)

#: Not encodable (lone surrogates) or not allowed in XML 1.0 / a chat message (controls but tab, CR, LF).
_UNSENDABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
#: Identifiers and URLs of a mini-program card: no control character at all, line breaks included.
_UNSENDABLE_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
#: Fields that are identifiers or URLs (one line): mini-program cards, media and link URLs, file names.
_ONE_LINE_FIELDS = frozenset({"app_id", "username", "page_path", "cover_url", "icon_url", "url", "thumb_url", "name"})
#: A URL the vendor fetches or the recipient opens: http(s), no whitespace.
_URL_PATTERN = r"^https?://\S+$"
MAX_URL_CHARS = 2048
#: What the XML serializer may turn one character into, at most (``"`` → ``&quot;``): bytes added.
_XML_ESCAPE_GROWTH = 5
_XML_ESCAPED = re.compile('[&<>"\t\n\r]')


def unsendable(value: str, *, one_line: bool = False) -> str | None:
    """Why ``value`` cannot be sent (a character and its position), or None. Never quotes the value."""
    found = (_UNSENDABLE_ONE_LINE if one_line else _UNSENDABLE).search(value)
    if found is None:
        return None
    what = "a lone surrogate" if "\ud800" <= found.group() <= "\udfff" else "a control character"
    return f"contains {what} (U+{ord(found.group()):04X} at position {found.start()})"


def check_text(value: str, field: str, *, one_line: bool = False) -> None:
    """Raise :class:`MessageError` naming ``field`` when ``value`` holds an unsendable character."""
    problem = unsendable(value, one_line=one_line)
    if problem:
        raise MessageError(f"{field}: {problem}", field=field)


def check_variables(variables: Mapping[str, str] | None, field: str = "vars") -> None:
    """Names and values of a recipient's variables must be sendable text (``field.name`` is named)."""
    for name, value in (variables or {}).items():
        check_text(name, field)
        check_text(value, f"{field}.{name}")


def _sendable(value: str | None, *, one_line: bool = False) -> str | None:
    """A pydantic field validator body: refuse unsendable characters (ValueError names no value)."""
    if value is not None:
        problem = unsendable(value, one_line=one_line)
        if problem:
            raise ValueError(problem)
    return value


@dataclass(frozen=True, slots=True)
class _FieldPlan:
    """One template field: its size without placeholders and how often each placeholder occurs."""

    name: str
    base: int
    uses: Counter[str]
    limit: int
    xml: bool
    one_line: bool


@dataclass(frozen=True, slots=True)
class SizePlan:
    """Checks a recipient's variables against the template's per-field limits without rendering.

    Built once per template (:meth:`_Base.size_plan`); :meth:`check` costs a few additions per placeholder,
    so a campaign checks every recipient up front. Text sizes are exact (characters); XML sizes are an
    upper bound in UTF-8 bytes, counting every escapable character at its longest escape."""

    fields: tuple[_FieldPlan, ...]

    def check(self, variables: Mapping[str, str] | None, *, field: str = "vars", prefix: str = "message") -> None:
        """Raise :class:`MessageError` naming ``field`` when a field would render over its limit."""
        values = variables or {}
        for plan in self.fields:
            size = plan.base
            for name, count in plan.uses.items():
                value = values.get(name, "")
                if plan.one_line and value:
                    check_text(value, f"{field}.{name}", one_line=True)
                size += count * (_xml_size(value) if plan.xml else len(value))
                if size > plan.limit:
                    unit = "bytes" if plan.xml else "characters"
                    raise MessageError(
                        f"{field}: {prefix}.{plan.name} would be over its limit of {plan.limit} {unit} once "
                        f"placeholders are filled",
                        field=field,
                    )


def _xml_size(value: str) -> int:
    """The most UTF-8 bytes ``value`` can take once XML-escaped."""
    return len(value.encode("utf-8", "surrogatepass")) + _XML_ESCAPE_GROWTH * len(_XML_ESCAPED.findall(value))


def _field_limit(model: type[BaseModel], name: str) -> int:
    for meta in model.model_fields[name].metadata:
        if isinstance(meta, MaxLen):
            return int(meta.max_length)
    return xmlsafe.MAX_XML_BYTES if name == "xml" else MAX_TEXT_CHARS


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    def string_fields(self) -> Iterator[tuple[str, str]]:
        """The message's text fields that are set (``kind`` aside), in their order: what templates are made of.
        Read from the fields themselves, not a ``model_dump`` (which copies the whole message: this runs at
        every send)."""
        for name, value in self.__dict__.items():
            if name != "kind" and isinstance(value, str):
                yield name, value

    def placeholders(self) -> set[str]:
        """Every ``{name}`` used by the template fields of this message."""
        names: set[str] = set()
        for _, value in self.string_fields():
            names |= xmlsafe.placeholders(value)
        return names

    def missing_variables(self, variables: dict[str, str] | None) -> set[str]:
        """Placeholders this message uses that ``variables`` does not fill."""
        return self.placeholders() - set(variables or {})

    def size_plan(self) -> SizePlan:
        """What rendering can make of each template field, for :meth:`SizePlan.check`."""
        plans = []
        for name, value in self.string_fields():
            found = xmlsafe.PLACEHOLDER.findall(value)
            if not found:
                continue
            xml = name == "xml"
            tokens = sum(len(n) + 2 for n in found)
            base = len(value.encode("utf-8")) - tokens if xml else len(value) - tokens
            plans.append(
                _FieldPlan(name, base, Counter(found), _field_limit(type(self), name), xml, name in _ONE_LINE_FIELDS)
            )
        return SizePlan(tuple(plans))

    def _before_render(self, variables: dict[str, str] | None) -> None:
        """Refuse unsendable variables and over-limit results before any string is built."""
        check_variables(variables)
        self.size_plan().check(variables)

    def _after_render(self, rendered: _Base) -> None:
        """The per-kind limits and character rules hold for the rendered message too."""
        for name, value in rendered.string_fields():
            limit = _field_limit(type(self), name)
            size = len(value.encode("utf-8")) if name == "xml" else len(value)
            if size > limit:
                raise MessageError(f"message.{name}: over its limit of {limit} once rendered", field="vars")
            check_text(value, f"message.{name}", one_line=name in _ONE_LINE_FIELDS)


#: WeChat's id for "everyone in the group" in a mention list.
MENTION_ALL = "notify@all"


class TextMessage(_Base):
    """Plain text. ``content`` must itself contain ``@nickname`` for each mention (vendor rule)."""

    kind: Literal["text"] = "text"
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    #: wxids to @ in a group (the shape of a recipient: ``<img …>`` is no one)
    mentions: list[Annotated[str, Field(min_length=1, max_length=WECHAT_ID_MAX)]] = Field(
        default_factory=list, max_length=500
    )
    mention_all: bool = False

    def mention_ids(self) -> list[str]:
        """The ids to @ as WeChat's protocol spells them: ``notify@all`` mentions everyone in the group
        (GeWe postText ``ats``, E云 sendText ``at``, seeds 001-003)."""
        return [MENTION_ALL] if self.mention_all else list(self.mentions)

    @field_validator("text")
    @classmethod
    def _text_sendable(cls, value: str) -> str:
        return _sendable(value) or value

    @field_validator("mentions")
    @classmethod
    def _mentions_sendable(cls, value: list[str]) -> list[str]:
        for mention in value:
            if not _WECHAT_ID.fullmatch(mention):
                raise ValueError(f"{mention[:40]!r} is not a WeChat id (wxid, …@chatroom)")
        return value

    def render(self, variables: dict[str, str] | None) -> TextMessage:
        """The message with placeholders filled."""
        if not variables and not self.placeholders():
            return self
        self._before_render(variables)
        text = xmlsafe.substitute_text(self.text, variables or {}, field="message.text")
        rendered = self.model_copy(update={"text": text})
        self._after_render(rendered)
        return rendered


class MiniProgramMessage(_Base):
    """A mini-program card: structured fields, or pasted XML plus an optional fresh cover URL."""

    kind: Literal["miniprogram"] = "miniprogram"
    xml: str | None = None
    cover_url: str | None = Field(default=None, min_length=1, max_length=2048)
    app_id: str | None = Field(default=None, min_length=1, max_length=128)
    username: str | None = Field(default=None, min_length=1, max_length=128)
    title: str | None = Field(default=None, min_length=1, max_length=512)
    page_path: str | None = Field(default=None, min_length=1, max_length=2048)
    display_name: str | None = Field(default=None, min_length=1, max_length=256)
    icon_url: str | None = Field(default=None, min_length=1, max_length=2048)

    @field_validator("xml")
    @classmethod
    def _normalize_xml(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # a whole pasted <msg> stays whole: GeWe's forwardMiniApp wants the callback document as pasted
        return _extract(value, "message.xml", keep_msg=True)

    @field_validator("app_id", "username", "page_path", "cover_url", "icon_url")
    @classmethod
    def _one_line_sendable(cls, value: str | None) -> str | None:
        return _sendable(value, one_line=True)

    @field_validator("title", "display_name")
    @classmethod
    def _text_sendable(cls, value: str | None) -> str | None:
        return _sendable(value)

    @model_validator(mode="after")
    def _structured_or_xml(self) -> MiniProgramMessage:
        if self.xml is not None:
            return self
        required = ("app_id", "username", "title", "page_path", "cover_url", "display_name")
        missing = [name for name in required if getattr(self, name) is None]
        if missing:
            raise ValueError(
                "a mini-program needs either xml or all of app_id, username, title, page_path, "
                f"cover_url, display_name; missing: {', '.join(missing)}"
            )
        return self

    @property
    def is_structured(self) -> bool:
        """True when built from fields, False when pasted XML."""
        return self.xml is None

    def card(self) -> xmlsafe.MiniProgramCard:
        """The structured fields as a card (structured messages only)."""
        assert self.is_structured
        return xmlsafe.MiniProgramCard(
            app_id=self.app_id or "",
            username=self.username or "",
            title=self.title or "",
            page_path=self.page_path or "",
            display_name=self.display_name or "",
            cover_url=self.cover_url,
            icon_url=self.icon_url,
        )

    def appmsg_xml(self) -> str:
        """The ``<appmsg>`` node to send through XML-only endpoints."""
        if self.xml is None:
            return xmlsafe.build_miniprogram_appmsg(self.card())
        return xmlsafe.extract_appmsg(self.xml) if xmlsafe.is_msg_document(self.xml) else self.xml

    def msg_document(self) -> str | None:
        """The whole ``<msg>`` callback document when the user pasted one, else None."""
        return self.xml if self.xml is not None and xmlsafe.is_msg_document(self.xml) else None

    def render(self, variables: dict[str, str] | None) -> MiniProgramMessage:
        """The message with placeholders filled (values XML-escaped inside XML)."""
        if not self.placeholders():
            return self
        self._before_render(variables)
        values = variables or {}
        update: dict[str, Any] = {}
        for name, value in self.string_fields():
            if not xmlsafe.placeholders(value):
                continue
            field = f"message.{name}"
            if name == "xml":
                update[name] = xmlsafe.substitute_xml(value, values, field=field)
            else:
                update[name] = xmlsafe.substitute_text(value, values, field=field)
        rendered = self.model_copy(update=update)
        self._after_render(rendered)
        return rendered


class AppMsgMessage(_Base):
    """Any app message by XML: links, files, video-channel posts, mini-programs."""

    kind: Literal["appmsg"] = "appmsg"
    xml: str

    @field_validator("xml")
    @classmethod
    def _normalize_xml(cls, value: str) -> str:
        return _extract(value, "message.xml")

    def appmsg_xml(self) -> str:
        """The ``<appmsg>`` node, already extracted at validation."""
        return self.xml

    def render(self, variables: dict[str, str] | None) -> AppMsgMessage:
        """The message with placeholders filled (values XML-escaped)."""
        if not self.placeholders():
            return self
        self._before_render(variables)
        rendered = self.model_copy(
            update={"xml": xmlsafe.substitute_xml(self.xml, variables or {}, field="message.xml")}
        )
        self._after_render(rendered)
        return rendered


class _PlainFields(_Base):
    """A kind made of plain one-line or text fields (no XML): placeholders are filled as text."""

    def render(self, variables: dict[str, str] | None) -> Any:
        """The message with placeholders filled."""
        if not self.placeholders():
            return self
        self._before_render(variables)
        values = variables or {}
        update = {
            name: xmlsafe.substitute_text(value, values, field=f"message.{name}")
            for name, value in self.string_fields()
            if xmlsafe.placeholders(value)
        }
        rendered = self.model_copy(update=update)
        self._after_render(rendered)
        return rendered


class ImageMessage(_PlainFields):
    """An image the vendor fetches from ``url`` (GeWe ``postImage``, E云 ``sendImage2``): a poster."""

    kind: Literal["image"] = "image"
    url: str = Field(min_length=1, max_length=MAX_URL_CHARS, pattern=_URL_PATTERN)


class FileMessage(_PlainFields):
    """A file the vendor fetches from ``url`` and shows as ``name`` (GeWe ``postFile``, E云 ``sendFile``)."""

    kind: Literal["file"] = "file"
    url: str = Field(min_length=1, max_length=MAX_URL_CHARS, pattern=_URL_PATTERN)
    name: str = Field(min_length=1, max_length=255)

    @field_validator("name")
    @classmethod
    def _name_sendable(cls, value: str) -> str:
        if "/" in value or "\\" in value:
            raise ValueError("a file name has no path separators")
        return _sendable(value, one_line=True) or value


class LinkMessage(_PlainFields):
    """A link card: GeWe ``postLink``, E云 ``sendUrl``; a type-5 app XML where only XML is taken."""

    kind: Literal["link"] = "link"
    title: str = Field(min_length=1, max_length=512)
    description: str = Field(default="", max_length=1024)
    url: str = Field(min_length=1, max_length=MAX_URL_CHARS, pattern=_URL_PATTERN)
    #: the card's picture: GeWe postLink and E云 sendUrl mark it required (E云: under 50 KB)
    thumb_url: str = Field(min_length=1, max_length=MAX_URL_CHARS, pattern=_URL_PATTERN)

    @field_validator("title", "description")
    @classmethod
    def _text_sendable(cls, value: str) -> str:
        return _sendable(value) or value

    def appmsg_xml(self) -> str:
        """The type-5 ``<appmsg>`` for XML-only endpoints (values escaped by the serializer)."""
        return xmlsafe.build_link_appmsg(
            title=self.title, description=self.description, url=self.url, thumb_url=self.thumb_url
        )


def _extract(value: str, field: str, *, keep_msg: bool = False) -> str:
    _sendable(value)
    try:
        if keep_msg:
            return xmlsafe.extract_msg_or_appmsg(value, field=field)
        return xmlsafe.extract_appmsg(value, field=field)
    except MessageError as exc:
        # pydantic wants ValueError; the message already names the field.
        raise ValueError(str(exc).removeprefix(f"{field}: ")) from None


#: The kinds one vendor call sends (a sequence's parts are these).
SingleMessage = TextMessage | MiniProgramMessage | AppMsgMessage | ImageMessage | FileMessage | LinkMessage
#: Parts a sequence may hold ("a line of text, then the image, then the mini-program card").
MAX_PARTS = 5


class SequenceMessage(_Base):
    """Up to five messages to the same recipient, in order, from the same account, each its own vendor
    call paced like a send (docs/design.md, "Sequences"). Placeholders are filled in every part."""

    kind: Literal["sequence"] = "sequence"
    parts: list[Annotated[SingleMessage, Field(discriminator="kind")]] = Field(min_length=1, max_length=MAX_PARTS)

    def placeholders(self) -> set[str]:
        """Every ``{name}`` any part uses."""
        names: set[str] = set()
        for part in self.parts:
            names |= part.placeholders()
        return names

    def size_plan(self) -> SizePlan:
        """Every part's plan, its fields named ``parts.<i>.<field>``."""
        fields: list[_FieldPlan] = []
        for i, part in enumerate(self.parts):
            fields += [replace(plan, name=f"parts.{i}.{plan.name}") for plan in part.size_plan().fields]
        return SizePlan(tuple(fields))

    def render(self, variables: dict[str, str] | None) -> SequenceMessage:
        """Every part with its placeholders filled."""
        if not self.placeholders():
            return self
        return self.model_copy(update={"parts": [part.render(variables) for part in self.parts]})


#: The message kinds, the one list (a new kind is added here and nowhere else).
AnyMessage = SingleMessage | SequenceMessage
Message = Annotated[AnyMessage, Field(discriminator="kind")]
MESSAGE_ADAPTER: TypeAdapter[AnyMessage] = TypeAdapter(Message)


def parts_of(message: AnyMessage) -> list[SingleMessage]:
    """The vendor calls a message takes: a sequence's parts, or the message itself."""
    return list(message.parts) if isinstance(message, SequenceMessage) else [message]


#: The ``kind`` of each message type: pydantic puts the matched one first in an error's location.
MESSAGE_KINDS = frozenset(str(model.model_fields["kind"].default) for model in get_args(AnyMessage))


def parse_message(data: Any) -> AnyMessage:
    """Validate a message from JSON-like data; errors become :class:`MessageError` naming the field."""
    from pydantic import ValidationError

    try:
        return MESSAGE_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise MessageError(_describe(exc, prefix="message"), field=_first_field(exc, "message")) from None


def _loc(loc: tuple[int | str, ...], prefix: str) -> str:
    # drop the union tag pydantic puts first ("text", "miniprogram"...) once the discriminator matched
    if loc and loc[0] in MESSAGE_KINDS:
        loc = loc[1:]
    # and the tag after a sequence part's index ("parts", 1, "image", "url" → parts[1].url, as the API says)
    loc = tuple(p for i, p in enumerate(loc) if not (i and isinstance(loc[i - 1], int) and p in MESSAGE_KINDS))
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int) and parts:
            parts[-1] += f"[{p}]"
        else:
            parts.append(str(p))
    return ".".join([prefix, *parts]) if parts else prefix


def _first_field(exc: Any, prefix: str) -> str:
    errors = exc.errors()
    return _loc(tuple(errors[0]["loc"]), prefix) if errors else prefix


def _describe(exc: Any, *, prefix: str) -> str:
    return "; ".join(f"{_loc(tuple(e['loc']), prefix)}: {e['msg']}" for e in exc.errors())
