"""The loop both queues share: claim what is due, handle each item in its own task, sleep
until woken (new work in this process) or until the poll interval (work from other processes,
retries coming due)."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

import structlog

T = TypeVar("T")
log = structlog.get_logger("groupbot.workers")

MIN_IDLE_SECONDS = 0.005
# A claim outlives the work's own timeout (handler or request) by this much before another
# worker may take it over.
LEASE_MARGIN_SECONDS = 30.0


class Worker(ABC, Generic[T]):
    def __init__(self, name: str, *, concurrency: int, poll_seconds: float) -> None:
        self.name = name
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False

    @abstractmethod
    async def claim(self, limit: int) -> list[T]: ...

    @abstractmethod
    async def handle(self, item: T) -> None: ...

    async def idle_seconds(self) -> float:
        """How long to sleep when nothing was claimed, unless woken first."""
        return self.poll_seconds

    def wake(self) -> None:
        self._wake.set()

    @property
    def alive(self) -> bool:
        """True while the loop runs (for readiness): a loop that died serves nothing."""
        return self._loop is not None and not self._loop.done()

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name=f"groupbot-{self.name}")

    async def _run(self) -> None:
        while not self._stopping:
            try:
                timeout = await self._step()
            except Exception:
                log.exception("worker_step_failed", worker=self.name)
                timeout = self.poll_seconds
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

    async def _step(self) -> float:
        """Claim and start what is due; return how long to wait before the next step."""
        self._wake.clear()
        free = self.concurrency - len(self._tasks)
        if free <= 0:
            return self.poll_seconds  # a finishing task wakes us
        claimed = await self.claim(free)
        for item in claimed:
            task = asyncio.create_task(self._handle(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if claimed:
            # There may be more where these came from: claim again until a claim comes back
            # empty (a rate-limited claim takes one at a time, and must not wait for it).
            return 0
        return max(MIN_IDLE_SECONDS, await self.idle_seconds())

    async def _handle(self, item: T) -> None:
        try:
            await self.handle(item)
        except Exception:
            # The item stays claimed until its lease runs out, then is taken up again.
            log.exception("worker_item_failed", worker=self.name)
        finally:
            self._wake.set()  # a slot is free, and finishing may have made more work due

    async def stop(self, grace_seconds: float) -> None:
        """Stop claiming; give in-flight items `grace_seconds`, then cancel what is left.

        The loop is stopped first, so nothing is claimed after the drain begins. A cancelled
        item stays claimed in the store and is taken up again after its lease.
        """
        self._stopping = True
        self._wake.set()
        if self._loop is not None:
            done, _ = await asyncio.wait({self._loop}, timeout=grace_seconds)
            if not done:
                self._loop.cancel()
                await asyncio.gather(self._loop, return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
