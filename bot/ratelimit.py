"""How fast the outbox may send: a bucket for the account and one per sending number.

Each bucket lets one send through every 1/rate seconds (aiolimiter with a capacity of one),
so sends are evenly spaced and no one-second window holds more than the configured rate: a
bucket that let a second's worth through at once would double the rate at the start of a
burst, and the Messages API answers that with 429s.
"""

from __future__ import annotations

from aiolimiter import AsyncLimiter


def _spaced(per_second: float) -> AsyncLimiter:
    return AsyncLimiter(1, 1.0 / per_second)


class SendRate:
    def __init__(self, per_second: float | None, per_number: float | None = None) -> None:
        self._account = _spaced(per_second) if per_second else None
        self._per_number = per_number
        self._numbers: dict[str, AsyncLimiter] = {}

    @property
    def limited(self) -> bool:
        return self._account is not None or self._per_number is not None

    def _buckets(self, sender: str) -> list[AsyncLimiter]:
        buckets = [self._account] if self._account else []
        if self._per_number:
            if sender not in self._numbers:
                self._numbers[sender] = _spaced(self._per_number)
            buckets.append(self._numbers[sender])
        return buckets

    async def acquire(self, sender: str) -> None:
        """Wait until one more message from `sender` may go."""
        for bucket in self._buckets(sender):
            await bucket.acquire()

    def has_capacity(self, sender: str) -> bool:
        return all(bucket.has_capacity() for bucket in self._buckets(sender))
