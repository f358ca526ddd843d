"""A broadcast that answers no message (`groupbot send`, `POST /api/messages`): its Reply.

Text as given, a template rendered with `members`, `bot_number` and the caller's variables,
or one attachment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bot.context import Media, Reply
from bot.exceptions import HandlerError, InvalidInput, TemplateError
from bot.templates import Templates


def compose(
    templates: Templates,
    *,
    bot_number: str,
    members: Sequence[str],
    text: str | None = None,
    template: str | None = None,
    variables: Mapping[str, Any] | None = None,
    media: Media | None = None,
) -> Reply:
    """Build the Reply; raise InvalidInput naming the field that is wrong."""
    given = [name for name, v in (("text", text), ("template", template), ("media", media)) if v]
    if len(given) != 1:
        raise InvalidInput(
            "text",
            f"expected exactly one of text, template or media, got {', '.join(given) or 'none'}",
        )
    if template is not None:
        # The built-in names win: a caller's variable cannot change who the group is.
        values = {**(variables or {}), "members": list(members), "bot_number": bot_number}
        try:
            text = templates.render(template, values)
        except TemplateError as exc:
            raise InvalidInput("template", str(exc)) from None
        if not text:
            raise InvalidInput("template", f"template {template!r} rendered no text")
    try:
        return Reply(media=media) if media else Reply(text)
    except HandlerError as exc:
        raise InvalidInput("text", str(exc)) from None
