"""Backpressure: new webhooks are held back (for a moment) while the queues are deep.

Storing a webhook takes less than answering it to every member. Without a limit, a burst is
stored at once and then waits in the queues, and every member waits with it. Holding the
webhook's 200 while more than HIGH_WATER items wait to be taken keeps the queues short, so that
what is accepted is answered promptly; the sender (Vonage) simply sees slower answers. A
webhook is never held longer than MAX_HOLD_SECONDS: past that it is stored anyway, so
nothing is refused and nothing waits on a sample that went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from bot.store import Store

log = structlog.get_logger("groupbot.backlog")

HIGH_WATER = 256  # inbound and outbound items waiting to be taken now, the whole store's
MAX_HOLD_SECONDS = 2.0
SAMPLE_SECONDS = 0.05


class Backlog:
    def __init__(self, store: Store, *, high_water: int = HIGH_WATER) -> None:
        self.store = store
        self.high_water = high_water
        self.depth = 0
        self._clear = asyncio.Event()
        self._clear.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample(), name="groupbot-backlog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def admit(self) -> None:
        """Return when the queues have room, or after MAX_HOLD_SECONDS regardless."""
        if self._clear.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._clear.wait(), MAX_HOLD_SECONDS)

    async def _sample(self) -> None:
        while True:
            try:
                self.depth = sum((await self.store.waiting(time.time())).values())
            except Exception as exc:  # the store is away: /readyz says so; admit meanwhile
                log.debug("backlog_unknown", error=type(exc).__name__)
                self.depth = 0
            if self.depth < self.high_water:
                self._clear.set()
            else:
                self._clear.clear()
            await asyncio.sleep(SAMPLE_SECONDS)
