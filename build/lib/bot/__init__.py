"""groupbot: chatbots for US group MMS conversations through the Vonage Messages API.

Handler authors need three names: `handler` to register a function, `Context` for what it
receives, and `Reply` (with `Media`) for what it may return.
"""

from bot.context import Context, Media, Reply
from bot.plugins import handler

__all__ = ["Context", "Media", "Reply", "handler"]
