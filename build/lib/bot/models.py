"""Wire formats of the Messages API, with its official field names.

Inbound webhooks are validated here once; everything past this module trusts them.
Numbers are normalised to E.164 digits on the way in, so `mms.participants[1]` is named
in the error when it is not a phone number.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from bot.exceptions import InvalidInput, InvalidNumber
from bot.numbers import normalize

MediaKind = Literal["image", "audio", "video", "file", "vcard"]
MessageType = Literal["text", "image", "audio", "video", "file", "vcard"]
MEDIA_KINDS: tuple[MediaKind, ...] = ("image", "audio", "video", "file", "vcard")


def field_path(loc: Iterable[int | str]) -> str:
    """('mms', 'participants', 1) -> 'mms.participants[1]'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path = f"{path}[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or "(body)"


def first_error(exc: ValidationError) -> InvalidInput:
    """The first problem of a validation error, as the InvalidInput that names its field."""
    error = exc.errors()[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "required field is missing"
    loc = tuple(error["loc"])
    if not loc and ": " in message:
        # A model-level check names its field as "field: reason" (see _payload_matches_type).
        field, message = message.split(": ", 1)
        return InvalidInput(field, message)
    return InvalidInput(field_path(loc), message)


def _number(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a phone number as a string of digits, got {value!r}")
    try:
        return normalize(value)
    except InvalidNumber as exc:
        raise ValueError(exc.message) from None


_DIGITS = re.compile(r"[0-9]{7,15}")


def _e164_digits(value: object) -> str:
    # What the API writes is exactly E.164 digits; anything else did not come from it.
    if not isinstance(value, str) or not _DIGITS.fullmatch(value):
        raise ValueError(f"expected E.164 digits without '+' (7 to 15 digits), got {value!r}")
    return _number(value)


class _Wire(BaseModel):
    # Vonage adds fields over time; unknown ones are kept in the stored raw body, not refused.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


# A number as people write it (`+1 (123) 456-7891`), for commands and the admin API.
Number = Annotated[str, BeforeValidator(_number)]
# A number as the API writes it (`11234567891`), for webhooks: nothing else is accepted.
E164 = Annotated[str, BeforeValidator(_e164_digits)]


class Mms(_Wire):
    participants: list[E164] = []


class OutboundMms(_Wire):
    participants: list[str]  # the group's own numbers, normalised when the group was made


class InboundMedia(_Wire):
    url: Annotated[str, Field(min_length=1)]
    name: str | None = None
    caption: str | None = None


class ContentItem(_Wire):
    type: MediaKind
    url: Annotated[str, Field(min_length=1)]
    name: str | None = None
    caption: str | None = None


class Origin(_Wire):
    network_code: str | None = None


class InboundMessage(_Wire):
    """An inbound MMS webhook (`inboundMessageMMS` in the OpenAPI spec)."""

    channel: Literal["mms"]
    message_uuid: UUID
    to: E164
    from_: E164 = Field(alias="from")
    timestamp: datetime
    message_type: MessageType
    text: str | None = None
    image: InboundMedia | None = None
    audio: InboundMedia | None = None
    video: InboundMedia | None = None
    file: InboundMedia | None = None
    vcard: InboundMedia | None = None
    content: list[ContentItem] | None = None
    mms: Mms | None = None
    origin: Origin | None = None

    @model_validator(mode="after")
    def _payload_matches_type(self) -> InboundMessage:
        if getattr(self, self.message_type) is None:
            raise ValueError(
                f"{self.message_type}: required when message_type is {self.message_type!r}"
            )
        return self

    @property
    def sender(self) -> str:
        return self.from_

    @property
    def participants(self) -> list[str]:
        return self.mms.participants if self.mms else []

    @property
    def body_text(self) -> str:
        """What routing reads: the text, or the caption of an attachment."""
        if self.text is not None:
            return self.text
        single = getattr(self, self.message_type)
        if isinstance(single, InboundMedia) and single.caption:
            return single.caption
        return next((item.caption for item in self.content or () if item.caption), "")

    @property
    def media(self) -> list[ContentItem]:
        """Every attachment as a typed item: `content[]` when present, else the single one."""
        if self.content:
            return list(self.content)
        if self.message_type == "text":
            return []
        single = getattr(self, self.message_type)
        assert isinstance(single, InboundMedia)
        return [ContentItem(type=self.message_type, **single.model_dump())]


def parse_inbound(body: bytes) -> InboundMessage:
    """Parse a raw webhook body; raise InvalidInput naming the first bad field."""
    try:
        return InboundMessage.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_input(exc) from None


def invalid_input(exc: ValidationError) -> InvalidInput:
    """A validation error of a JSON body as the InvalidInput naming its first bad field."""
    error = exc.errors()[0]
    if error["type"] == "json_invalid":
        reason = error.get("ctx", {}).get("error", "invalid JSON")
        return InvalidInput("(body)", f"expected a JSON object: {reason}")
    if error["type"] == "model_type":
        return InvalidInput("(body)", "expected a JSON object")
    return first_error(exc)


class OutboundMedia(_Wire):
    url: str
    caption: str | None = None


class OutboundMessage(_Wire):
    """One member's message of a broadcast: the body of `POST /v1/messages`."""

    to: str
    from_: str = Field(alias="from")
    channel: Literal["mms"] = "mms"
    message_type: MessageType
    text: str | None = None
    image: OutboundMedia | None = None
    audio: OutboundMedia | None = None
    video: OutboundMedia | None = None
    file: OutboundMedia | None = None
    vcard: OutboundMedia | None = None
    mms: OutboundMms | None = None
    client_ref: str | None = None

    def to_api(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @functools.cached_property
    def api_json(self) -> bytes:
        """The request body as JSON: serialised once, stored and sent as it is."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("api_json", None)  # a copy's body is its own (pydantic copies it)
        return copied

    @property
    def participants(self) -> list[str]:
        return self.mms.participants if self.mms else []

    def summary(self) -> str:
        """The text a person sees first: the text, or the attachment and its caption."""
        if self.text is not None:
            return self.text
        media = getattr(self, self.message_type)
        assert isinstance(media, OutboundMedia)
        return f"[{self.message_type}] {media.caption or media.url}"


class StatusError(_Wire):
    type: str | None = None
    title: str | None = None
    detail: str | None = None
    instance: str | None = None


class Usage(_Wire):
    currency: str | None = None
    price: str | None = None


class MessageStatus(_Wire):
    """A status callback (`messageStatusMMS`) for one outbound message."""

    message_uuid: UUID
    to: str
    from_: str = Field(alias="from")
    channel: str
    timestamp: datetime
    status: Literal["submitted", "delivered", "rejected", "undeliverable"]
    error: StatusError | None = None
    usage: Usage | None = None
    client_ref: str | None = None


def parse_status(body: bytes) -> MessageStatus:
    try:
        return MessageStatus.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_input(exc) from None


class Accepted(_Wire):
    """The Messages API's 202 answer."""

    message_uuid: str
    workflow_id: str | None = None


def normalize_all(values: Sequence[str], field: str) -> list[str]:
    """Normalise a list of numbers, naming `field[i]` for the first bad one."""
    return [normalize(value, field=f"{field}[{i}]") for i, value in enumerate(values)]
