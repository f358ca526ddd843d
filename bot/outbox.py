"""The outbox: stored outbound messages are sent, retried or given up, and the outcome of each
attempt is recorded as soon as it is known.

At most one message per member of a group is in flight, so members see answers in the order
they were queued. Sends go through the account's rate limit.
"""

from __future__ import annotations

import time

import structlog
from aiolimiter import AsyncLimiter

from bot.client import Provider
from bot.exceptions import PermanentApiError, TransientApiError
from bot.numbers import mask
from bot.retry import RetryPolicy
from bot.store import OutboxItem, Store
from bot.workers import Worker

log = structlog.get_logger("groupbot.outbox")

LEASE_SECONDS = 120.0


class OutboxWorker(Worker[OutboxItem]):
    def __init__(
        self,
        store: Store,
        provider: Provider,
        *,
        rate_per_second: float,
        policy: RetryPolicy | None = None,
        concurrency: int = 32,
        poll_seconds: float = 1.0,
    ) -> None:
        super().__init__("outbox", concurrency=concurrency, poll_seconds=poll_seconds)
        self.store = store
        self.provider = provider
        self.policy = policy or RetryPolicy()
        # A bucket of one second's worth of sends: the rate holds over any one-second window.
        self.limiter = AsyncLimiter(rate_per_second, 1.0)

    async def claim(self, limit: int) -> list[OutboxItem]:
        return await self.store.claim_outbound(limit, time.time(), LEASE_SECONDS)

    async def idle_seconds(self) -> float:
        due = await self.store.next_due()
        if due is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(0.0, due - time.time()))

    async def handle(self, item: OutboxItem) -> None:
        structlog.contextvars.bind_contextvars(
            broadcast=item.broadcast_id, group=item.group_key, to=mask(item.message.to)
        )
        async with self.limiter:
            try:
                message_uuid = await self.provider.send(item.message)
            except PermanentApiError as exc:
                await self.store.record_failed(item.id, str(exc), time.time())
                log.error("send_failed", error=str(exc), status=exc.status, attempts=item.attempts)
                return
            except TransientApiError as exc:
                now = time.time()
                at = self.policy.next_attempt_at(
                    attempts=item.attempts,
                    created_at=item.created_at,
                    now=now,
                    retry_after=exc.retry_after,
                )
                if at is None:
                    await self.store.record_failed(item.id, f"gave up: {exc}", now)
                    log.error("send_gave_up", error=str(exc), attempts=item.attempts)
                else:
                    await self.store.record_retry(item.id, str(exc), at)
                    log.warning(
                        "send_retry",
                        error=str(exc),
                        attempts=item.attempts,
                        in_seconds=round(at - now, 2),
                    )
                return
        await self.store.record_sent(item.id, message_uuid, time.time())
        log.info("sent", provider_uuid=message_uuid, attempts=item.attempts)
