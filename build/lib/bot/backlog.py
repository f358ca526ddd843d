"""Backpressure: new webhooks are held back (for a moment) while the bot is busy.

Storing a webhook takes less than answering it to every member. Without a limit, a burst is
stored at once and then waits in the queues, and every member waits with it. So the 200 is
held, in two stages, and the sender (Vonage) simply sees slower answers:

- while more than HIGH_WATER items wait in the store to be taken (the whole store's, so a
  fleet's too: messages queued behind their group's, retries due, work of other processes;
  sampled every SAMPLE_SECONDS while webhooks arrive, not at all while none do);
- then while the inbox has no free place (see workers.Worker.reserve_within): a webhook
  that gets one is processed at once, so what is accepted is answered promptly.

A webhook is never held longer than MAX_HOLD_SECONDS in all: past that it is stored anyway,
for a claim, so nothing is refused and nothing waits on a sample that went wrong.
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
QUIET_SECONDS = 1.0  # no webhook for this long: no more samples until the next one


class Backlog:
    def __init__(self, store: Store, *, high_water: int = HIGH_WATER) -> None:
        self.store = store
        self.high_water = high_water
        self._clear = asyncio.Event()
        self._clear.set()
        self._arriving = asyncio.Event()  # set while webhooks arrive
        self._last_arrival = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample(), name="groupbot-backlog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def admit(self) -> float:
        """Return when the queues have room, or after MAX_HOLD_SECONDS regardless; return
        how much of MAX_HOLD_SECONDS is left (for the wait for a place in the inbox)."""
        self._last_arrival = arrived = time.monotonic()
        self._arriving.set()
        if self._clear.is_set():
            return MAX_HOLD_SECONDS
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._clear.wait(), MAX_HOLD_SECONDS)
        return max(0.0, MAX_HOLD_SECONDS - (time.monotonic() - arrived))

    async def _sample(self) -> None:
        while True:
            if time.monotonic() - self._last_arrival > QUIET_SECONDS:
                self._arriving.clear()  # an idle bot does not read its store 20 times a second
                await self._arriving.wait()
            try:
                depth = sum((await self.store.waiting(time.time())).values())
            except Exception as exc:  # the store is away: /readyz says so; admit meanwhile
                log.debug("backlog_unknown", error=type(exc).__name__)
                depth = 0
            if depth < self.high_water:
                self._clear.set()
            else:
                self._clear.clear()
            await asyncio.sleep(SAMPLE_SECONDS)
