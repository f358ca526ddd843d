"""The live parts of a bot: store, provider and the two workers, started and stopped together.

Used by the web app's lifecycle (`groupbot run`) and by `groupbot send`, so both go through
the same outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import structlog

from bot import broadcast
from bot.backlog import Backlog
from bot.client import VERSION, MessagesClient, Provider
from bot.context import Reply
from bot.core import Bot
from bot.groups import Group
from bot.inbox import InboxWorker
from bot.metrics import Metrics
from bot.models import MessageStatus
from bot.outbox import OutboxWorker
from bot.ratelimit import SendRate
from bot.retry import RetryPolicy
from bot.security import WebhookVerifier
from bot.simulator import SimulatorProvider
from bot.store import OutboxRecord, Store, entries, open_store
from bot.watchdog import LoopWatchdog

log = structlog.get_logger("groupbot.runtime")

# The longest a count of the queues waits for the store (a scrape of /metrics, the line
# `bot_stopped` leaves): a database that stopped answering must not hold them for ever.
STORE_WAIT_SECONDS = 5.0

DRAIN_SECONDS = 10.0
ORPHAN_SWEEP_SECONDS = 5.0


class Changes:
    """A counter that moves whenever a message is stored, answered or sent, so that watchers
    (the web chat's live updates) wake up instead of polling."""

    def __init__(self) -> None:
        self.version = 0
        self._moved = asyncio.Event()

    def notify(self) -> None:
        self.version += 1
        self._moved.set()
        self._moved = asyncio.Event()

    async def wait(self, seen: int, within_seconds: float) -> int:
        """The version once it differs from `seen`, or after `within_seconds` regardless."""
        if self.version == seen:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), within_seconds)
        return self.version


@dataclass
class Runtime:
    bot: Bot
    store: Store
    provider: Provider
    inbox: InboxWorker
    outbox: OutboxWorker
    verifier: WebhookVerifier | None  # None: signatures are not checked (switched off)
    changes: Changes = field(default_factory=Changes)
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False  # set once shutdown begins: not ready for new traffic
    sweeper: asyncio.Task[None] | None = None
    backlog: Backlog | None = None  # holds webhooks back while the queues are deep

    @property
    def alive(self) -> bool:
        return self.inbox.alive and self.outbox.alive

    async def stop(self, grace_seconds: float = DRAIN_SECONDS) -> None:
        self.draining = True
        if self.backlog is not None:
            await self.backlog.stop()
        if self.sweeper is not None:
            self.sweeper.cancel()
            await asyncio.gather(self.sweeper, return_exceptions=True)
        # The inbox first: answers it queues while draining still go out with the outbox.
        await self.inbox.stop(grace_seconds)
        await self.outbox.stop(grace_seconds)

    async def send(self, reply: Reply, group: Group, *, broadcast_id: str | None = None) -> str:
        """Queue a broadcast to `group` (under `broadcast_id`, or a new one); return its id."""
        config = self.bot.config
        broadcast_id = broadcast_id or f"b-{uuid.uuid4()}"
        messages = broadcast.plan(
            reply,
            group,
            bot_number=config.bot.number,
            skip=await self.store.opted_out(group.members),
            keep_skipped_in_participants=config.compliance.keep_opted_out_in_participants,
        )
        await self.store.enqueue(
            entries(broadcast_id, group.key, messages), group.members, time.time()
        )
        log.info("broadcast_queued", broadcast=broadcast_id, group=group.key, members=len(messages))
        self.outbox.wake()
        return broadcast_id

    async def deliver(self, broadcast_id: str, within_seconds: float) -> list[OutboxRecord]:
        """Send one broadcast from this process and wait until every member's message is sent
        or failed (or the time is up). A bot running on the same store may take some of them:
        claims make sure no message goes twice."""
        worker = outbox_worker(self.bot, self.store, self.provider, broadcast_id=broadcast_id)
        worker.start()
        try:
            return await self.wait_finished(broadcast_id, within_seconds)
        finally:
            await worker.stop(DRAIN_SECONDS)

    async def wait_finished(
        self, broadcast_id: str, within_seconds: float, poll_seconds: float = 0.05
    ) -> list[OutboxRecord]:
        deadline = time.monotonic() + within_seconds
        while True:
            records = await self.store.broadcast(broadcast_id)
            if all(r.state in ("sent", "failed") for r in records) or time.monotonic() > deadline:
                return records
            await asyncio.sleep(poll_seconds)


def make_verifier(bot: Bot) -> WebhookVerifier | None:
    settings = bot.config.provider
    if not settings.verify_signatures:
        log.warning("webhook_signatures_off")
        return None
    # The simulator signs its own webhooks; without a configured secret it makes one up.
    secret = settings.signature_secret.get_secret_value() or secrets.token_hex(32)
    return WebhookVerifier(secret, max_age_seconds=settings.signature_max_age_seconds)


def make_provider(bot: Bot) -> Provider:
    settings = bot.config.provider
    if settings.kind == "simulator":
        return SimulatorProvider()
    return MessagesClient(settings, root=bot.config.root)


def outbox_worker(
    bot: Bot,
    store: Store,
    provider: Provider,
    *,
    broadcast_id: str | None = None,
    on_change: Callable[[], None] = lambda: None,
    metrics: Metrics | None = None,
) -> OutboxWorker:
    settings = bot.config.provider
    retry = settings.retry
    return OutboxWorker(
        store,
        provider,
        rate=SendRate(
            settings.rate_limit_per_second,
            settings.rate_limit_per_number,
            reserve=store.reserve_send,  # shared by a fleet on PostgreSQL
        ),
        sender=bot.config.bot.number,
        request_timeout_seconds=settings.timeout_seconds,
        policy=RetryPolicy(
            max_attempts=retry.max_attempts,
            base_seconds=retry.base_seconds,
            max_delay_seconds=retry.max_delay_seconds,
            ttl_seconds=retry.ttl_seconds,
        ),
        concurrency=store.places.outbox,
        broadcast_id=broadcast_id,
        on_change=on_change,
        metrics=metrics,
    )


@contextlib.asynccontextmanager
async def running(
    bot: Bot, *, workers: bool = True, clock: Callable[[], float] = time.time
) -> AsyncIterator[Runtime]:
    """Open the store and provider and (unless `workers` is False) start both workers;
    on exit drain and stop them, then close the provider and the store."""
    config = bot.config
    provider = make_provider(bot)
    store = await open_store(
        config.storage.url, root=config.root, pool_size=config.storage.pool_size, warm=workers
    )
    if freed := await store.release_orphans():
        log.warning("claims_released", count=freed)  # left by a process that was killed
    changes = Changes()
    metrics = Metrics()
    metrics.info.info({"version": VERSION, "provider": config.provider.kind})
    outbox = outbox_worker(bot, store, provider, on_change=changes.notify, metrics=metrics)

    inbox = InboxWorker(
        store,
        bot.dispatcher,
        outbox=outbox,
        on_queued=changes.notify,
        concurrency=store.places.inbox,
        clock=clock,
        daily_limit=config.limits.daily_messages,
        metrics=metrics,
    )
    runtime = Runtime(bot, store, provider, inbox, outbox, make_verifier(bot), changes, metrics)
    if isinstance(provider, SimulatorProvider):

        async def report(status: MessageStatus) -> None:
            await store.record_status(
                status, status.model_dump_json(by_alias=True).encode(), time.time()
            )
            changes.notify()

        provider.on_status = report
    if workers:
        inbox.start()
        outbox.start()

        def notified(what: str) -> None:  # another process of the fleet stored or queued
            changes.notify()
            (inbox if what == "inbox" else outbox).wake()

        store.listen(notified)
        runtime.sweeper = asyncio.create_task(_sweep_orphans(store, inbox, outbox))
        runtime.backlog = Backlog(store)
        runtime.backlog.start()
    watchdog = LoopWatchdog()  # a handler that blocks the loop stalls every group: say so
    watchdog.start()
    try:
        try:
            yield runtime
        finally:
            await runtime.stop()
            await _log_left(store)
            await provider.close()
            await store.close()
    finally:
        watchdog.stop()


async def _log_left(store: Store) -> None:
    """Say what stays queued for the next start (or another process of the fleet)."""
    try:
        async with asyncio.timeout(STORE_WAIT_SECONDS):
            left = await store.depths()
    except Exception as exc:  # the store may be what failed
        log.warning("bot_stopped", left="unknown", error=f"{type(exc).__name__}: {exc}")
        return
    log.info("bot_stopped", left=left)


async def _sweep_orphans(store: Store, inbox: InboxWorker, outbox: OutboxWorker) -> None:
    """Free the claims of processes of this host that died (a fleet's sibling killed), so
    their work is taken over now rather than when the leases run out."""
    while True:
        await asyncio.sleep(ORPHAN_SWEEP_SECONDS)
        try:
            freed = await store.release_orphans()
        except Exception as exc:  # the store is down: /readyz says so; try again later
            log.warning("orphan_sweep_failed", error=type(exc).__name__)
            continue
        if freed:
            log.warning("claims_released", count=freed)
            inbox.wake()
            outbox.wake()
