"""Group identity: who is in a conversation, and who is listed in each member's message."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from bot.exceptions import InvalidInput
from bot.numbers import only_north_american, reaches_by_mms


@dataclass(frozen=True)
class Group:
    """The members of one conversation: phone numbers as E.164 digits, the bot excluded.

    Members keep the order they were first seen in (sender first), so that participant lists
    read the same way on every send; identity (`key`) ignores order.
    """

    members: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise InvalidInput("members", "a group needs at least one member besides the bot")
        if len(set(self.members)) != len(self.members):
            raise InvalidInput("members", "a group lists each member once")

    @classmethod
    def of(cls, numbers: Iterable[str], *, bot_number: str) -> Group:
        """Members from already-normalised numbers: deduplicated, the bot's own number dropped."""
        seen = dict.fromkeys(n for n in numbers if n != bot_number)
        return cls(tuple(seen))

    @classmethod
    def for_broadcast(
        cls, numbers: Iterable[str], *, bot_number: str, max_size: int, field: str = "to"
    ) -> Group:
        """The members a broadcast may go to, or InvalidInput naming `field`."""
        members = tuple(dict.fromkeys(n for n in numbers if n != bot_number))
        for n, member in enumerate(members):
            if not reaches_by_mms(member):
                raise InvalidInput(f"{field}[{n}]", only_north_american(member))
        if not members:
            raise InvalidInput(field, "expected at least one number besides the bot's own")
        if len(members) > max_size:
            raise InvalidInput(field, f"expected at most {max_size} members, got {len(members)}")
        return cls(members)

    @functools.cached_property
    def key(self) -> str:
        """A stable identifier that does not reveal the numbers (safe in logs and URLs)."""
        digest = hashlib.sha256(",".join(sorted(self.members)).encode()).hexdigest()
        return f"g{digest[:16]}"

    def others(self, member: str) -> list[str]:
        """The participants listed in `member`'s message: everyone but them."""
        return [m for m in self.members if m != member]
