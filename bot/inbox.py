"""The inbox: webhooks are stored before they are answered, then processed in order per group.

`accept` is the whole synchronous part of a webhook: parse, resolve the group, store durably
(deduplicated by message_uuid). `InboxWorker` does the rest later, from the store, so a slow
handler never delays Vonage and a crash loses nothing that was answered 200.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from bot.dispatch import Dispatcher
from bot.exceptions import InvalidInput
from bot.groups import Group
from bot.models import InboundMessage, parse_inbound
from bot.store import InboxItem, OutboxEntry, Store
from bot.workers import Worker

log = structlog.get_logger("groupbot.inbox")

LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class Accepted:
    message: InboundMessage
    group: Group
    duplicate: bool


async def accept(store: Store, body: bytes, *, bot_number: str) -> Accepted:
    """Validate and durably store one inbound webhook; raise InvalidInput naming the field."""
    message = parse_inbound(body)
    if message.to != bot_number:
        raise InvalidInput("to", f"expected the bot's number {bot_number}, got {message.to}")
    group = Group.of([message.sender, *message.participants], bot_number=bot_number)
    uuid = str(message.message_uuid)
    structlog.contextvars.bind_contextvars(message_uuid=uuid, group=group.key)
    new = await store.accept_inbound(uuid, group.key, group.members, body, time.time())
    log.info("inbound_duplicate" if not new else "inbound_stored", members=len(group.members))
    return Accepted(message, group, duplicate=not new)


class InboxWorker(Worker[InboxItem]):
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        *,
        on_queued: Callable[[], None],
        concurrency: int = 16,
        poll_seconds: float = 1.0,
    ) -> None:
        super().__init__("inbox", concurrency=concurrency, poll_seconds=poll_seconds)
        self.store = store
        self.dispatcher = dispatcher
        self.on_queued = on_queued

    async def claim(self, limit: int) -> list[InboxItem]:
        return await self.store.claim_inbound(limit, time.time(), LEASE_SECONDS)

    async def handle(self, item: InboxItem) -> None:
        structlog.contextvars.bind_contextvars(message_uuid=item.message_uuid, group=item.group_key)
        message = InboundMessage.model_validate_json(item.body)
        group = Group(item.members)
        state = await self.store.load_state(item.group_key)
        outcome = await self.dispatcher.dispatch(message, group, state)
        entries = [
            OutboxEntry(item.message_uuid, item.group_key, m, inbound_uuid=item.message_uuid)
            for m in outcome.messages
        ]
        await self.store.complete_inbound(
            item.message_uuid,
            now=time.time(),
            route=outcome.route,
            outbound=entries,
            state=(item.group_key, outcome.state) if outcome.state is not None else None,
            error=outcome.error,
        )
        log.info("inbound_processed", route=outcome.route, queued=len(entries))
        if entries:
            self.on_queued()
