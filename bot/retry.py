"""When to try a failed send again: exponential backoff with jitter, bounded by attempts and age.

A `Retry-After` from the API is a floor: the next attempt never comes sooner than it asks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# What "no limit" is for the stores' crash-loop check (`attempts >= ?`): an INTEGER column's
# largest, never reached.
UNBOUNDED = 2**31 - 1


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int | None = None  # None: bounded by ttl_seconds alone
    base_seconds: float = 1.0
    max_delay_seconds: float = 300.0
    ttl_seconds: float = 24 * 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts: expected at least 1")
        if not 0 < self.base_seconds <= self.max_delay_seconds:
            raise ValueError("RetryPolicy: expected 0 < base_seconds <= max_delay_seconds")

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        # The exponent is clamped first: 2.0 ** 1100 overflows long before the cap applies.
        doublings = min(max(attempts - 1, 0), 60)
        ceiling = min(self.max_delay_seconds, self.base_seconds * 2.0**doublings)
        # "Equal jitter": never less than half the backoff, so retries of many members spread
        # out without any of them coming back almost at once.
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not secrecy
        return max(delay, retry_after or 0.0)

    def next_attempt_at(
        self, *, attempts: int, created_at: float, now: float, retry_after: float | None = None
    ) -> float | None:
        """When to try again, or None when the attempts or the message's age are used up."""
        if attempts >= self.attempt_limit:
            return None
        at = now + self.delay(attempts, retry_after)
        return at if self.in_time(at, created_at=created_at) else None

    @property
    def attempt_limit(self) -> int:
        return UNBOUNDED if self.max_attempts is None else self.max_attempts

    def in_time(self, at: float, *, created_at: float) -> bool:
        """Whether a message created at `created_at` may still go at `at` (ttl_seconds)."""
        return at - created_at <= self.ttl_seconds
