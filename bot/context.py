"""What a handler receives (`Context`) and what it may return (`Reply`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from bot.exceptions import HandlerError
from bot.groups import Group
from bot.models import MEDIA_KINDS, ContentItem, InboundMessage, MediaKind
from bot.templates import Templates

MAX_CAPTION = 3000  # the Messages API's caption maxLength
# What every route's template sees (Context.variables), before what its handler adds.
TEMPLATE_VARIABLES = frozenset(
    {"text", "sender", "members", "bot_number", "route", "match", "state"}
)
# File types the Messages API takes for each kind of MMS attachment (its OpenAPI description);
# a file attachment may be of any type.
EXTENSIONS: dict[str, frozenset[str]] = {
    "image": frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp"}),
    "audio": frozenset({".mp3", ".amr", ".midi", ".mid", ".wav", ".ac3"}),
    "video": frozenset({".mp4", ".3gp", ".3gpp", ".avi", ".mpg", ".mpeg"}),
    "vcard": frozenset({".vcf"}),
}


@dataclass(frozen=True)
class Media:
    """An attachment to send: a publicly reachable URL, and a caption where MMS allows one."""

    kind: MediaKind
    url: str
    caption: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in MEDIA_KINDS:
            raise HandlerError(
                f"Media.kind: expected one of {', '.join(MEDIA_KINDS)}, got {self.kind!r}"
            )
        if not self.url.startswith(("https://", "http://")):
            raise HandlerError(f"Media.url: expected an http(s) URL, got {self.url!r}")
        allowed = EXTENSIONS.get(self.kind)
        suffix = PurePosixPath(urlsplit(self.url).path).suffix.lower()
        if allowed is not None and suffix not in allowed:
            raise HandlerError(
                f"Media.url: a {self.kind} must be one of {', '.join(sorted(allowed))}, "
                f"got {suffix or 'no extension'} in {self.url!r}"
            )
        if self.caption is not None and not self.caption.strip():
            # The API refuses an empty caption (minLength 1): no caption is what was meant.
            object.__setattr__(self, "caption", None)
        elif self.caption is not None and len(self.caption) > MAX_CAPTION:
            raise HandlerError(
                f"Media.caption: expected at most {MAX_CAPTION} characters, got {len(self.caption)}"
            )


@dataclass(frozen=True)
class Reply:
    """A handler's answer: text or one attachment, to the whole group or to the sender alone.

    `Reply("On my way")` answers the group; `Reply("Your code is 1234", to_sender_only=True)`
    answers only the member who wrote; `Reply.image(url, caption=...)` sends a picture.
    """

    text: str | None = None
    media: Media | None = None
    to_sender_only: bool = False

    def __post_init__(self) -> None:
        if (self.text is None) == (self.media is None):
            raise HandlerError("Reply: expected exactly one of text or media")
        if self.text is not None and not self.text.strip():
            raise HandlerError("Reply.text: expected some text, got an empty string")

    @classmethod
    def image(cls, url: str, caption: str | None = None, *, to_sender_only: bool = False) -> Reply:
        return cls(media=Media("image", url, caption), to_sender_only=to_sender_only)

    @classmethod
    def audio(cls, url: str, caption: str | None = None, *, to_sender_only: bool = False) -> Reply:
        return cls(media=Media("audio", url, caption), to_sender_only=to_sender_only)

    @classmethod
    def video(cls, url: str, caption: str | None = None, *, to_sender_only: bool = False) -> Reply:
        return cls(media=Media("video", url, caption), to_sender_only=to_sender_only)

    @classmethod
    def file(cls, url: str, caption: str | None = None, *, to_sender_only: bool = False) -> Reply:
        return cls(media=Media("file", url, caption), to_sender_only=to_sender_only)

    @classmethod
    def vcard(cls, url: str, caption: str | None = None, *, to_sender_only: bool = False) -> Reply:
        return cls(media=Media("vcard", url, caption), to_sender_only=to_sender_only)


@dataclass
class Context:
    """Everything a handler may read about the message it answers.

    `state` is this group's mapping, persisted after the handler returns.
    """

    message: InboundMessage
    group: Group
    route: str
    match: Mapping[str, Any]
    state: dict[str, Any]
    bot_number: str
    templates: Templates = field(repr=False)
    routes: frozenset[str] = field(default=frozenset(), repr=False)
    expecting: tuple[str, float] | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        return self.message.body_text

    @property
    def sender(self) -> str:
        return self.message.sender

    @property
    def members(self) -> tuple[str, ...]:
        """Every member of the group, the sender included, the bot excluded."""
        return self.group.members

    @property
    def media(self) -> list[ContentItem]:
        """The message's attachments, typed: `content[]`, or its single image, vcard…"""
        return self.message.media

    def variables(self, **extra: Any) -> dict[str, Any]:
        """What a template sees: the message, the group, the match, the state, and `extra`."""
        return {
            "text": self.text,
            "sender": self.sender,
            "members": list(self.members),
            "bot_number": self.bot_number,
            "route": self.route,
            "match": dict(self.match),
            "state": self.state,
            **extra,
        }

    def expect(self, route: str, within_seconds: float = 300) -> None:
        """Send the group's next message to `route` (if it comes within `within_seconds`),
        unless a keyword or pattern route matches it first: "Which day suits you?" and the
        answer "friday" goes back to the booking handler."""
        if route not in self.routes:
            known = ", ".join(sorted(self.routes)) or "none"
            raise HandlerError(f"ctx.expect: no route named {route!r} (routes: {known})")
        if within_seconds <= 0:
            raise HandlerError("ctx.expect: within_seconds must be more than 0")
        self.expecting = (route, within_seconds)

    def render(self, template: str, **extra: Any) -> str:
        """Render a template with this message's variables plus `extra`."""
        return self.templates.render(template, self.variables(**extra))
