"""The message model: what a user asks us to send, validated once at the door.

Three kinds (the design contract): ``text`` (with mentions or mention-all), ``miniprogram`` (structured
card fields, or pasted XML with an optional fresh cover) and ``appmsg`` (pasted XML: links, files,
video-channel posts). Pasted XML is parsed safely and normalized to its ``<appmsg>`` node at validation,
so a stored job holds only what the vendor needs, already known to be well-formed.

Personalisation: :meth:`render` fills ``{placeholders}`` from a recipient's variables. Validation of a
template against a recipient (:meth:`missing_variables`) is cheap, so a campaign can refuse a recipient
before anything is stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from worker import xmlsafe
from worker.errors import MessageError

MAX_TEXT_CHARS = 20_000


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    def placeholders(self) -> set[str]:
        """Every ``{name}`` used by the template fields of this message."""
        names: set[str] = set()
        for value in self.model_dump(exclude={"kind"}).values():
            if isinstance(value, str):
                names |= xmlsafe.placeholders(value)
        return names

    def missing_variables(self, variables: dict[str, str] | None) -> set[str]:
        """Placeholders this message uses that ``variables`` does not fill."""
        return self.placeholders() - set(variables or {})


class TextMessage(_Base):
    """Plain text. ``content`` must itself contain ``@nickname`` for each mention (vendor rule)."""

    kind: Literal["text"] = "text"
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    mentions: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list, max_length=500)
    mention_all: bool = False

    def render(self, variables: dict[str, str] | None) -> TextMessage:
        """The message with placeholders filled."""
        if not variables and not self.placeholders():
            return self
        text = xmlsafe.substitute_text(self.text, variables or {}, field="message.text")
        return self.model_copy(update={"text": text})


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
        values = variables or {}
        update: dict[str, Any] = {}
        for name, value in self.model_dump(exclude={"kind"}).items():
            if not isinstance(value, str) or not xmlsafe.placeholders(value):
                continue
            field = f"message.{name}"
            if name == "xml":
                update[name] = xmlsafe.substitute_xml(value, values, field=field)
            else:
                update[name] = xmlsafe.substitute_text(value, values, field=field)
        return self.model_copy(update=update)


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
        return self.model_copy(update={"xml": xmlsafe.substitute_xml(self.xml, variables or {}, field="message.xml")})


def _extract(value: str, field: str, *, keep_msg: bool = False) -> str:
    try:
        if keep_msg:
            return xmlsafe.extract_msg_or_appmsg(value, field=field)
        return xmlsafe.extract_appmsg(value, field=field)
    except MessageError as exc:
        # pydantic wants ValueError; the message already names the field.
        raise ValueError(str(exc).removeprefix(f"{field}: ")) from None


Message = Annotated[TextMessage | MiniProgramMessage | AppMsgMessage, Field(discriminator="kind")]
MESSAGE_ADAPTER: TypeAdapter[TextMessage | MiniProgramMessage | AppMsgMessage] = TypeAdapter(Message)


def parse_message(data: Any) -> TextMessage | MiniProgramMessage | AppMsgMessage:
    """Validate a message from JSON-like data; errors become :class:`MessageError` naming the field."""
    from pydantic import ValidationError

    try:
        return MESSAGE_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise MessageError(_describe(exc, prefix="message"), field=_first_field(exc, "message")) from None


def _loc(loc: tuple[int | str, ...], prefix: str) -> str:
    # drop the union tag pydantic puts first ("text", "miniprogram"...) once the discriminator matched
    if loc and loc[0] in ("text", "miniprogram", "appmsg"):
        loc = loc[1:]
    parts = [str(p) for p in loc]
    return ".".join([prefix, *parts]) if parts else prefix


def _first_field(exc: Any, prefix: str) -> str:
    errors = exc.errors()
    return _loc(tuple(errors[0]["loc"]), prefix) if errors else prefix


def _describe(exc: Any, *, prefix: str) -> str:
    return "; ".join(f"{_loc(tuple(e['loc']), prefix)}: {e['msg']}" for e in exc.errors())
