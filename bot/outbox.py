"""The outbox: stored outbound messages are sent, retried or given up, and the outcome of each
attempt is recorded as soon as it is known.

At most one message per member of a group is in flight, so members see answers in order.
When sending is rate-limited, each claimed message waits for its slot (see ratelimit); a
429 pauses all sending for its `Retry-After`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from bot.client import Provider
from bot.exceptions import LeaseLost, PermanentApiError, TransientApiError
from bot.metrics import Metrics
from bot.numbers import mask
from bot.ratelimit import SLOT_LATENESS_SECONDS, SendRate
from bot.retry import RetryPolicy
from bot.store import OutboxItem, Store
from bot.workers import LEASE_MARGIN_SECONDS, Worker

log = structlog.get_logger("groupbot.outbox")

# A rate-limited worker claims no further ahead than this: what it has claimed is sent
# within about this long, far inside the claims' leases.
SCHEDULE_HORIZON_SECONDS = 0.25
MAX_RESLOTS = 10  # a process this overloaded sends anyway rather than never
CLAIM_SAFETY_SECONDS = 5.0  # of a claim's lease margin, kept clear of waiting for a slot


class OutboxWorker(Worker[OutboxItem]):
    def __init__(
        self,
        store: Store,
        provider: Provider,
        *,
        rate: SendRate,
        sender: str,
        request_timeout_seconds: float,
        policy: RetryPolicy | None = None,
        concurrency: int = 64,
        poll_seconds: float = 1.0,
        broadcast_id: str | None = None,
        on_change: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(
            "outbox",
            concurrency=concurrency,
            poll_seconds=poll_seconds,
            lease_seconds=request_timeout_seconds + LEASE_MARGIN_SECONDS,
        )
        self.store = store
        self.provider = provider
        self.policy = policy or RetryPolicy()
        self.rate = rate
        self.sender = sender  # every message goes out from the bot's number
        self.broadcast_id = broadcast_id  # set: send only this broadcast (`groupbot send`)
        self._paused_until = 0.0
        # Claimed message id -> (its slot, the latest it may leave), monotonic. A message that
        # has not left by then gives its claim back: the request must end (timeout included)
        # before the lease does, or another process may send it too.
        self._slots: dict[int, tuple[float, float]] = {}
        self._booked_until = 0.0  # the latest slot this worker holds (monotonic)
        self.on_change = on_change  # told after each recorded outcome (live web chat)
        self.metrics = metrics or Metrics()

    async def claim(self, limit: int) -> list[OutboxItem]:
        if time.time() < self._paused_until:
            return []
        if not self.rate.limited:
            return await self._claim(limit)
        # Rate-limited: claim what the slots can send within the horizon, then reserve that
        # many slots (after the claim, so an idle worker reserves none that another process
        # of a fleet could use); each message waits for its own slot in handle().
        ahead = self._booked_until - time.monotonic() - SCHEDULE_HORIZON_SECONDS
        if ahead > 0:
            await asyncio.sleep(ahead)  # booked far enough: claims wait, leases stay short
        claimed = await self._claim(min(limit, self.rate.batch(SCHEDULE_HORIZON_SECONDS)))
        if claimed:
            await self._book(claimed)
        return claimed

    async def _book(self, items: list[OutboxItem]) -> None:
        """Reserve a send slot for each of `items`, just claimed."""
        delays = await self.rate.schedule(self.sender, len(items))
        # Counted from the answer, not the question: a slot taken as later than it is only
        # delays a send, one taken as earlier could crowd another process's second.
        start = time.monotonic()
        latest = start + LEASE_MARGIN_SECONDS - CLAIM_SAFETY_SECONDS
        for item, delay in zip(items, delays, strict=True):
            self._slots[item.id] = (start + delay, latest)
        self._booked_until = max(self._booked_until, start + delays[-1])

    def taking(self) -> bool:
        if time.time() < self._paused_until or self.broadcast_id is not None:
            return False  # a 429's pause; a worker for one broadcast sends what it claims
        if self.rate.limited and self._booked_until - time.monotonic() > SCHEDULE_HORIZON_SECONDS:
            return False  # booked far enough ahead: the rest waits in the store, as claims do
        return super().taking()

    async def _claim(self, limit: int) -> list[OutboxItem]:
        now = time.time()
        return await self.store.claim_outbound(
            limit,
            now,
            self.lease_seconds,
            self.policy.attempt_limit,
            broadcast_id=self.broadcast_id,
            created_before=now - self.policy.ttl_seconds,
        )

    async def idle_seconds(self) -> float:
        now = time.time()
        if now < self._paused_until:
            return self._paused_until - now
        due = await self.store.next_due()
        if due is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(0.0, due - now))

    async def handle(self, item: OutboxItem) -> None:
        try:
            if self.rate.limited and item.id not in self._slots:
                await self._book([item])  # taken as it was stored, not claimed
            slot = self._slots.pop(item.id, None)
            if slot is not None and not await self._wait_for_slot(*slot):
                log.warning("send_slot_too_late", **_about(item))
                await self._hold_back(item, "no send slot in time", time.time())
                return
            if time.time() < self._paused_until:
                # A 429 came back while this one waited: it goes when the pause is over.
                await self._hold_back(item, "held back by a 429", self._paused_until)
            else:
                await self._send(item)
        except LeaseLost:
            log.warning("send_lease_lost", **_about(item))
        self.on_change()

    async def _hold_back(self, item: OutboxItem, reason: str, until: float) -> None:
        """Give `item` back unsent until `until` (no attempt spent), or give it up if that is
        past the message's age limit: held back, it must not outlive a message retried."""
        if not self.policy.in_time(until, created_at=item.created_at):
            self.metrics.outbound.labels("failed").inc()
            failed = f"gave up: {reason}, past ttl_seconds"
            await self.store.record_failed(item, failed, time.time(), sent=False)
            log.error("send_gave_up", error=reason, **_about(item))
            return
        await self.store.record_retry(item, reason, until, sent=False)
        self.wake()

    async def _wait_for_slot(self, at: float, deadline: float) -> bool:
        """Wait for the slot at `at` (monotonic); if this process was too busy to go on time,
        take a new slot: a send that leaves late could crowd the next second. False when no
        slot comes before `deadline` (the claim's lease, less the request's time)."""
        for _ in range(MAX_RESLOTS):
            if at > deadline:
                return False
            if (wait := at - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if time.monotonic() - at <= SLOT_LATENESS_SECONDS:
                return True
            [delay] = await self.rate.schedule(self.sender, 1)
            at = time.monotonic() + delay
        log.warning("send_slots_missed", times=MAX_RESLOTS)
        return time.monotonic() <= deadline

    async def _send(self, item: OutboxItem) -> None:
        try:
            with self.metrics.send_seconds.time():
                message_uuid = await self.provider.send(item.message)
        except PermanentApiError as exc:
            self.metrics.send_problems.labels("rejected").inc()
            self.metrics.outbound.labels("failed").inc()
            await self.store.record_failed(item, str(exc), time.time())
            log.error("send_failed", error=str(exc), status=exc.status, **_about(item))
            return
        except TransientApiError as exc:
            self.metrics.send_problems.labels(_kind(exc)).inc()
            if exc.status == 429:
                self._pause(exc.retry_after)
            await self._retry_or_give_up(item, str(exc), exc.retry_after)
            return
        except Exception as exc:  # a bug or an unexpected failure: bounded like any other
            self.metrics.send_problems.labels("error").inc()
            log.exception("send_error", **_about(item))
            await self._retry_or_give_up(item, f"{type(exc).__name__}: {exc}", None)
            return
        self.metrics.outbound.labels("sent").inc()
        now = time.time()
        if await self.store.record_sent(item, message_uuid, now):
            self.metrics.delivery_seconds.observe(now - item.origin_at)
        log.info("sent", provider_uuid=message_uuid, **_about(item))

    async def _retry_or_give_up(
        self, item: OutboxItem, error: str, retry_after: float | None
    ) -> None:
        now = time.time()
        at = self.policy.next_attempt_at(
            attempts=item.attempts, created_at=item.created_at, now=now, retry_after=retry_after
        )
        self.metrics.outbound.labels("failed" if at is None else "retry").inc()
        if at is None:
            await self.store.record_failed(item, f"gave up: {error}", now)
            log.error("send_gave_up", error=error, **_about(item))
        else:
            await self.store.record_retry(item, error, at)
            self.wake()  # the claims look again when it is due
            log.warning("send_retry", error=error, in_seconds=round(at - now, 2), **_about(item))

    def _pause(self, retry_after: float | None) -> None:
        # A 429 speaks for the whole account: every send waits, not only this one.
        until = time.time() + (retry_after if retry_after is not None else 1.0)
        if until > self._paused_until:
            self._paused_until = until
            log.warning("send_paused", seconds=round(until - time.time(), 2))


def _kind(exc: TransientApiError) -> str:
    """What kept a send from going, for an operator's alert: the account's rate, the API
    failing, or the API out of reach."""
    if exc.status == 429:
        return "rate_limited"
    return "server_error" if exc.status is not None else "unreachable"


def _about(item: OutboxItem) -> dict[str, object]:
    """What each log line of a send says of it (passed along, not bound to the context:
    most sends log nothing at the usual level, and binding costs on every one)."""
    return {
        "broadcast": item.broadcast_id,
        "group": item.group_key,
        "to": mask(item.message.to),
        "attempts": item.attempts,
    }
