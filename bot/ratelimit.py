"""How fast the outbox may send: one limit for the account and one per sending number.

Each limit is a schedule of slots, one every 1/rate seconds: a send first reserves the next
free slot, then waits for it. Sends are evenly spaced, so no one-second window holds more
than the configured rate (a bucket that let a second's worth through at once would double
the rate at the start of a burst, and the Messages API answers that with 429s).

Where the slots are kept is the store's choice (`Store.reserve_send`): in the process for
SQLite, in a row of the database for PostgreSQL, so that the account's limit holds for a
whole fleet of processes and not for each one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Reserve = Callable[[str, float], Awaitable[float]]  # (key, interval) -> seconds to wait


class LocalSlots:
    """Slots kept in this process: enough when one process sends."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._next: dict[str, float] = {}
        self._clock = clock

    async def reserve(self, key: str, interval_seconds: float) -> float:
        now = self._clock()
        slot = max(self._next.get(key, now), now)
        self._next[key] = slot + interval_seconds
        return slot - now


class SendRate:
    def __init__(
        self,
        per_second: float | None,
        per_number: float | None = None,
        *,
        reserve: Reserve | None = None,
    ) -> None:
        self.per_second = per_second
        self.per_number = per_number
        self._reserve = reserve or LocalSlots().reserve

    @property
    def limited(self) -> bool:
        return bool(self.per_second or self.per_number)

    async def acquire(self, sender: str) -> None:
        """Wait until one more message from `sender` may go."""
        for key, rate in (("account", self.per_second), (f"number:{sender}", self.per_number)):
            if rate:
                wait = await self._reserve(key, 1.0 / rate)
                if wait > 0:
                    await asyncio.sleep(wait)
