"""A conversation with the bot, in process, with the simulator: what the test kit
(bot.testing) and the terminal chat (`groupbot chat`) are made of.

`say` goes through the same signed webhook path as Vonage's, and returns once the message is
handled and every answer sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from pathlib import Path

from bot.config import Config, load_config, parse_config
from bot.groups import Group
from bot.runtime import Runtime
from bot.simulator.web import inbound_body
from bot.store import OutboxRecord
from bot.webhooks import receive_inbound

POLL_SECONDS = 0.01


class Replies(dict[str, list[str]]):
    """What each member received in answer to one message: member -> texts (a media reply
    reads as `[image] caption`)."""

    @property
    def text(self) -> str | None:
        """The one text every member got, or None when nobody got anything."""
        texts = {text for received in self.values() for text in received}
        if not texts:
            return None
        if len(texts) != 1 or any(len(received) != 1 for received in self.values()):
            raise AssertionError(f"members got different answers: {dict(self)}")
        return texts.pop()


class GroupChat:
    def __init__(self, session: Session, members: tuple[str, ...]) -> None:
        self.session = session
        self.members = members

    async def say(self, member: str, text: str, *, within: float | None = None) -> Replies:
        """`member` writes `text` to the group; the answers, once every one is sent."""
        if member not in self.members:
            raise ValueError(f"{member} is not a member of this group: {self.members}")
        # Long enough for a handler that runs into its timeout, and its error template.
        limit = within if within is not None else self.session.handler_timeout + 5
        return await self.session.deliver(member, self.members, text, limit)


class Session:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.offset = 0.0

    @property
    def handler_timeout(self) -> float:
        return self.runtime.bot.config.handlers.timeout_seconds

    def now(self) -> float:
        return time.time() + self.offset

    def group(self, *members: str) -> GroupChat:
        number = self.runtime.bot.config.bot.number
        return GroupChat(self, Group.of(members, bot_number=number).members)

    async def advance(self, seconds: float) -> None:
        """Move the bot's clock on by `seconds` (ctx.expect windows run out)."""
        self.offset += seconds

    async def deliver(
        self, member: str, members: Iterable[str], text: str, within: float
    ) -> Replies:
        runtime = self.runtime
        number = runtime.bot.config.bot.number
        body = inbound_body(bot_number=number, sender=member, members=list(members), text=text)
        signature = runtime.verifier.sign(body) if runtime.verifier else None
        answer = await receive_inbound(runtime, body, signature)
        if answer.status != 200:
            raise AssertionError(f"the bot refused the message: {answer.status} {answer.text}")
        records = await self._settled(json.loads(body)["message_uuid"], within)
        replies = Replies({m: [] for m in members})
        for record in records:
            replies.setdefault(record.recipient, []).append(record.text)
        return replies

    async def _settled(self, message_uuid: str, within: float) -> list[OutboxRecord]:
        store = self.runtime.store
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            inbound = await store.inbound(message_uuid)
            if inbound is not None and inbound.state in ("done", "failed"):
                records = await store.broadcast(message_uuid)
                if all(r.state in ("sent", "failed") for r in records):
                    return records
            await asyncio.sleep(POLL_SECONDS)
        raise AssertionError(f"message not handled and answered within {within} s")


def simulated_config(path: Path, folder: Path) -> Config:
    """The project's config with the simulator and a fresh store in `folder`."""
    config = load_config(path)
    raw = config.model_dump(mode="json", exclude={"root", "source"})
    raw["provider"] = {**raw["provider"], "kind": "simulator"}
    for secret in ("private_key", "api_secret", "signature_secret"):
        raw["provider"][secret] = ""
    raw["server"]["api_token"] = ""
    raw["storage"] = {"url": f"sqlite:///{folder / 'groupbot.db'}"}
    return parse_config(raw, root=config.root, source=config.source)
