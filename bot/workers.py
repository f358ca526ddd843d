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


class Worker(ABC, Generic[T]):
    def __init__(self, name: str, *, concurrency: int, poll_seconds: float) -> None:
        self.name = name
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
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
    def busy(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            claimed: list[T] = []
            free = self.concurrency - len(self._tasks)
            if free > 0:
                try:
                    claimed = await self.claim(free)
                except Exception:
                    log.exception("worker_claim_failed", worker=self.name)
            for item in claimed:
                task = asyncio.create_task(self._handle(item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if claimed and len(self._tasks) < self.concurrency:
                continue  # there may be more where these came from
            # Full, or just claimed: wait for a slot (a finishing task wakes us). Idle: sleep
            # until the next item comes due, never less than MIN_IDLE_SECONDS (no busy loop).
            if claimed or free <= 0:
                timeout = self.poll_seconds
            else:
                timeout = max(MIN_IDLE_SECONDS, await self.idle_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

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

        A cancelled item is still claimed in the store and is taken up again after its lease.
        """
        self._stopping = True
        self._wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
