"""Carrier rules for a 10DLC sender, before any routing: STOP, START and HELP.

A message that is exactly one of the words (case, spaces and punctuation aside) is answered
to its sender alone, and never reaches a route. STOP opts the number out of every group of
this bot (one confirmation, then nothing more); START opts it back in; HELP says who is
writing and how to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.config import ComplianceSettings
from bot.routing import words

Action = Literal["stop", "start", "help"]

TEMPLATE_VARIABLES = frozenset({"business", "sender"})  # what a keyword's template sees

DEFAULT_TEXTS: dict[Action, str] = {
    "stop": "You are unsubscribed from {business} and will get no more messages. "
    "Reply START to resubscribe.",
    "start": "You are subscribed to {business} again. Reply STOP to unsubscribe, HELP for help.",
    "help": "{business}: messages about your service in this group. "
    "Reply STOP to unsubscribe, START to resubscribe. Msg & data rates may apply.",
}
# START from a number that had not opted out: nothing changed, and "again" would be untrue.
ALREADY_SUBSCRIBED = "You are subscribed to {business}. Reply STOP to unsubscribe, HELP for help."


@dataclass(frozen=True)
class Keywords:
    by_words: dict[tuple[str, ...], Action]

    @classmethod
    def of(cls, settings: ComplianceSettings) -> Keywords:
        lists: tuple[tuple[Action, list[str]], ...] = (
            ("stop", settings.stop_words),
            ("start", settings.start_words),
            ("help", settings.help_words),
        )
        return cls({words(word): action for action, listed in lists for word in listed})

    def action(self, text: str) -> Action | None:
        """The keyword action a whole message asks for, if it is one of the words."""
        return self.by_words.get(words(text))
