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

import time
from collections.abc import Awaitable, Callable

# (key, interval, count) -> seconds until the first of `count` consecutive slots
Reserve = Callable[[str, float, int], Awaitable[float]]

# A send may leave a little after its slot (a busy event loop, a slow claim) while the next
# leaves on time. Slots are spread so that `rate` of them span this much more than a second,
# so that no second holds more than `rate` sends even then. A send later than
# SLOT_LATENESS_SECONDS takes a new slot (see the outbox); the rest of the allowance is for
# the request's own way to the API.
LATENESS_ALLOWANCE_SECONDS = 0.05
SLOT_LATENESS_SECONDS = 0.02


class LocalSlots:
    """Slots kept in this process: enough when one process sends."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._next: dict[str, float] = {}
        self._clock = clock

    async def reserve(self, key: str, interval_seconds: float, count: int = 1) -> float:
        now = self._clock()
        slot = max(self._next.get(key, now), now)
        self._next[key] = slot + count * interval_seconds
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

    def batch(self, horizon_seconds: float) -> int:
        """How many sends fit in `horizon_seconds` at the tightest limit (at least one)."""
        rates = [r for r in (self.per_second, self.per_number) if r]
        return max(1, int(min(rates) * horizon_seconds)) if rates else 1

    async def schedule(self, sender: str, count: int) -> list[float]:
        """Reserve slots for `count` messages from `sender`; the seconds from now until each
        may go, in order."""
        delays = [0.0] * count
        for key, rate in (("account", self.per_second), (f"number:{sender}", self.per_number)):
            if rate:
                interval = (1.0 + LATENESS_ALLOWANCE_SECONDS) / rate
                first = await self._reserve(key, interval, count)
                delays = [max(d, first + n * interval) for n, d in enumerate(delays)]
        return delays
