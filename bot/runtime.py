"""The live parts of a bot: store, provider and the two workers, started and stopped together.

Used by the web app's lifecycle (`groupbot run`) and by `groupbot send`, so both go through
the same outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import structlog

from bot import broadcast
from bot.client import MessagesClient, Provider
from bot.context import Reply
from bot.core import Bot
from bot.groups import Group
from bot.inbox import InboxWorker
from bot.outbox import OutboxWorker
from bot.simulator import SimulatorProvider
from bot.store import OutboxEntry, OutboxRecord, Store, open_store

log = structlog.get_logger("groupbot.runtime")

DRAIN_SECONDS = 10.0


@dataclass
class Runtime:
    bot: Bot
    store: Store
    provider: Provider
    inbox: InboxWorker
    outbox: OutboxWorker
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def simulator(self) -> SimulatorProvider | None:
        return self.provider if isinstance(self.provider, SimulatorProvider) else None

    def start(self, *, inbox: bool = True) -> None:
        if inbox:
            self._tasks.append(asyncio.create_task(self.inbox.run(), name="inbox"))
        self._tasks.append(asyncio.create_task(self.outbox.run(), name="outbox"))

    async def stop(self, grace_seconds: float = DRAIN_SECONDS) -> None:
        await asyncio.gather(self.inbox.stop(grace_seconds), self.outbox.stop(grace_seconds))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def send(self, reply: Reply, to: Sequence[str]) -> tuple[str, Group]:
        """Queue a broadcast to `to` (already normalised numbers); return its id and group."""
        number = self.bot.config.bot.number
        group = Group.of(to, bot_number=number)
        broadcast_id = f"b-{uuid.uuid4()}"
        entries = [
            OutboxEntry(broadcast_id, group.key, message)
            for message in broadcast.plan(reply, group, bot_number=number)
        ]
        await self.store.enqueue(entries, group.members, time.time())
        log.info("broadcast_queued", broadcast=broadcast_id, group=group.key, members=len(entries))
        self.outbox.wake()
        return broadcast_id, group

    async def wait_delivered(
        self, broadcast_id: str, within_seconds: float, poll_seconds: float = 0.05
    ) -> list[OutboxRecord]:
        """Poll until every message of the broadcast is sent or failed, or the time is up."""
        deadline = time.monotonic() + within_seconds
        while True:
            records = await self.store.broadcast(broadcast_id)
            if all(r.state in ("sent", "failed") for r in records) or time.monotonic() > deadline:
                return records
            await asyncio.sleep(poll_seconds)


def make_provider(bot: Bot) -> Provider:
    settings = bot.config.provider
    if settings.kind == "simulator":
        return SimulatorProvider()
    return MessagesClient(settings, root=bot.config.root)


@contextlib.asynccontextmanager
async def running(bot: Bot, *, inbox: bool = True) -> AsyncIterator[Runtime]:
    """Open the store and provider, start the workers; on exit drain, stop and close all."""
    config = bot.config
    provider = make_provider(bot)
    store = await open_store(config.storage.url, root=config.root)
    outbox = OutboxWorker(store, provider, rate_per_second=config.provider.rate_limit_per_second)
    worker = InboxWorker(store, bot.dispatcher, on_queued=outbox.wake)
    runtime = Runtime(bot, store, provider, worker, outbox)
    runtime.start(inbox=inbox)
    try:
        yield runtime
    finally:
        await runtime.stop()
        await provider.close()
        await store.close()
