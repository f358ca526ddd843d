"""The inbox: webhooks are stored before they are answered, then processed in order per group.

`accept` is the whole synchronous part of a webhook: parse, resolve the group, store durably
(deduplicated by message_uuid). `InboxWorker` does the rest later, from the store, so a slow
handler never delays Vonage and a crash loses nothing that was answered 200.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import time as dt_time

import structlog

from bot import broadcast
from bot.context import Reply
from bot.dispatch import Dispatcher, Outcome
from bot.exceptions import InvalidInput, LeaseLost
from bot.groups import Group
from bot.metrics import Metrics
from bot.models import InboundMessage, parse_inbound
from bot.numbers import only_north_american, reaches_by_mms
from bot.outbox import OutboxWorker
from bot.store import Accepted, InboxItem, OutboxEntry, Store, Take, entries
from bot.workers import LEASE_MARGIN_SECONDS, Worker

log = structlog.get_logger("groupbot.inbox")

# Processing that dies with its process this many times is set aside as failed.
MAX_ATTEMPTS = 5
# How long answers wait for places in the outbox before they are stored for a claim instead.
ANSWER_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class Stored:
    message: InboundMessage
    group: Group
    duplicate: bool
    taken: bool = False  # taken for this process as it was stored, and handled now


async def accept(
    store: Store,
    body: bytes,
    *,
    bot_number: str,
    max_group_size: int,
    jti: str | None = None,
    inbox: InboxWorker,
    hold_seconds: float,
) -> Stored:
    """Validate and durably store one inbound webhook; raise InvalidInput naming the field.

    The message waits (up to `hold_seconds`) for a place in `inbox`, and goes straight to it
    when it heads its group (`Stored.taken`): a busy inbox holds webhooks back.
    """
    message = parse_inbound(body)
    if message.to != bot_number:
        raise InvalidInput("to", f"expected the bot's number {bot_number}, got {message.to}")
    for field, number in (
        ("from", message.sender),
        *((f"mms.participants[{n}]", p) for n, p in enumerate(message.participants)),
    ):
        if number != bot_number and not reaches_by_mms(number):
            raise InvalidInput(field, only_north_american(number))
    group = Group.of([message.sender, *message.participants], bot_number=bot_number)
    if len(group.members) > max_group_size:
        raise InvalidInput(
            "mms.participants",
            f"expected a group of at most {max_group_size} members, got {len(group.members)}",
        )
    uuid = str(message.message_uuid)
    structlog.contextvars.bind_contextvars(message_uuid=uuid, group=group.key)
    reserved = await inbox.reserve_within(1, hold_seconds)
    take = Take.up_to(reserved, inbox.lease_seconds)

    def took(accepted: Accepted) -> list[InboxItem]:
        taken = accepted.item
        return [] if taken is None else [dataclasses.replace(taken, message=message)]

    def store_it(early: Callable[[Accepted], None] | None) -> Awaitable[Accepted]:
        # Handled at once if taken: from as soon as the store has run the call (early), while
        # the commit that makes it durable is on its way; the 200 waits for that commit.
        early = early if inbox.starts_early else None
        return store.accept_inbound(
            uuid, group.key, group.members, body, time.time(), jti=jti, take=take, early=early
        )

    accepted = await inbox.run_taken(reserved, store_it, took)
    log.info("inbound_stored" if accepted.new else "inbound_duplicate", members=len(group.members))
    return Stored(message, group, duplicate=not accepted.new, taken=accepted.item is not None)


class InboxWorker(Worker[InboxItem]):
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        *,
        outbox: OutboxWorker,
        on_queued: Callable[[], None],
        concurrency: int = 32,
        poll_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        daily_limit: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(
            "inbox",
            concurrency=concurrency,
            poll_seconds=poll_seconds,
            lease_seconds=dispatcher.timeout_seconds + LEASE_MARGIN_SECONDS,
        )
        self.store = store
        self.dispatcher = dispatcher
        self.on_queued = on_queued
        self.outbox = outbox  # takes the answers as they are stored, when it has room
        self.clock = clock  # what "now" is for ctx.expect (the test kit moves it forward)
        self.daily_limit = daily_limit  # messages a group's answers may cost per UTC day
        self.metrics = metrics or Metrics()

    @property
    def starts_early(self) -> bool:
        """Whether a message's handling may start before it is durable (as soon as the store
        has run its insert). Not with a daily limit: the day's count is read from what is
        committed, and the answers of the group's message before may not be yet."""
        return self.daily_limit is None

    async def _within_daily_limit(
        self, item: InboxItem, queued: list[OutboxEntry], limit: int
    ) -> list[OutboxEntry]:
        """The answer if the group's day has room for it; else, once a day, a notice."""
        now = self.clock()
        day = datetime.fromtimestamp(now, UTC).date()
        midnight = datetime.combine(day, dt_time.min, UTC).timestamp()
        used = await self.store.queued_since(item.group_key, midnight)
        if used + len(queued) <= limit:
            return queued
        log.warning("daily_limit_reached", limit=limit, used=used, wanted=len(queued))
        notice_id = f"limit-{item.group_key}-{day.isoformat()}"  # one notice a day at most
        if await self.store.broadcast(notice_id):
            return []
        members = Group(item.members)
        reply = Reply(self.dispatcher.limit_notice())
        messages = broadcast.plan(
            reply, members, bot_number=self.dispatcher.bot_number, skip=item.opted_out
        )
        return entries(notice_id, item.group_key, messages, inbound_uuid=item.message_uuid)

    async def claim(self, limit: int) -> list[InboxItem]:
        return await self.store.claim_inbound(limit, time.time(), self.lease_seconds, MAX_ATTEMPTS)

    async def handle(self, item: InboxItem) -> None:
        structlog.contextvars.bind_contextvars(message_uuid=item.message_uuid, group=item.group_key)
        started = time.perf_counter()
        try:
            message = item.message or InboundMessage.model_validate_json(item.body)
            outcome = await self.dispatcher.dispatch(
                message,
                Group(item.members),
                item.state,
                now=self.clock(),
                opted_out=item.opted_out,
            )
        except Exception as exc:
            # Not the handler (the dispatcher isolates that): a bug. Record it now rather
            # than leave the group waiting for the lease to run out, five times over.
            log.exception("inbound_failed")
            outcome = Outcome(None, error=f"{type(exc).__name__}: {exc}")
        queued = entries(
            item.message_uuid, item.group_key, outcome.messages, inbound_uuid=item.message_uuid
        )
        if queued and self.daily_limit is not None:
            queued = await self._within_daily_limit(item, queued, self.daily_limit)
        outbox = self.outbox
        # Sent straight from here when the outbox has room soon enough; else from the store.
        reserved = await outbox.reserve_within(len(queued), ANSWER_WAIT_SECONDS)
        take = Take.up_to(reserved, outbox.lease_seconds)
        call = self.store.complete_inbound(
            item,
            now=time.time(),
            route=outcome.route,
            outbound=queued,
            state=outcome.state,
            error=outcome.error,
            consent=outcome.consent,
            take=take,
        )
        try:
            # Sent at once, but never before the answers are durable: nothing told early.
            taken = await outbox.run_taken(reserved, lambda _: call, lambda taken: taken)
        except LeaseLost:
            log.warning("inbound_lease_lost", attempts=item.attempts)
            return
        if len(taken) < len(queued):
            outbox.wake()  # the rest waits in the store for a claim
        log.info("inbound_processed", route=outcome.route, queued=len(queued))
        if outcome.route is not None:
            self.metrics.routed.labels(outcome.route).inc()
        if outcome.error is not None:
            kind = "timeout" if "timed out" in outcome.error else "error"
            self.metrics.handler_errors.labels(outcome.route or "-", kind).inc()
        self.metrics.handle_seconds.observe(time.perf_counter() - started)
        self.on_queued()  # the conversation has moved
