"""Durable state: the inbox, the outbox, groups and their state, delivery statuses.

`Store` is the protocol every backend implements; `open_store(url)` picks one by URL scheme.
Every method that changes more than one row does so in one transaction: a crash leaves
either all of it or none of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol

from bot.config import unencoded_password, without_password
from bot.exceptions import LeaseLost, StoreUnavailable
from bot.models import InboundMessage, MessageStatus, OutboundMessage

PROBE_SECONDS = 5.0  # how long `check` waits for PostgreSQL to answer
NEEDS_ASYNCPG = "storage.url: PostgreSQL needs asyncpg: pip install 'groupbot[postgres]'"

__all__ = [
    "Accepted",
    "InboundRecord",
    "InboxItem",
    "LeaseLost",
    "OutboxEntry",
    "OutboxItem",
    "OutboxRecord",
    "Store",
    "Take",
    "ThreadEntry",
    "UsageRow",
    "entries",
    "open_store",
]

OutboxState = Literal["pending", "sending", "sent", "failed"]


@dataclass(frozen=True)
class InboxItem:
    """A stored inbound message, claimed for processing, with its group's state."""

    message_uuid: str
    group_key: str
    members: tuple[str, ...]
    state: dict[str, Any]
    body: bytes
    attempts: int
    opted_out: frozenset[str] = frozenset()  # members who sent STOP
    received_at: float = 0.0  # when the webhook was stored
    # The body parsed, when the process that stored it took it at once (else parsed anew).
    message: InboundMessage | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Take:
    """Claim new items for this process as they are stored, up to `limit` of them, when they
    are next in line (nothing older of their group, or of their member, is still open).

    The process that stores work it has room for takes it at once, instead of storing it
    for a claim to find: one write instead of two, and no wait for a claim loop."""

    limit: int
    lease_seconds: float

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"Take.limit: expected at least 1, got {self.limit}")

    @classmethod
    def up_to(cls, limit: int, lease_seconds: float) -> Take | None:
        """Take up to `limit` items; None (store them for a claim) when there is no room."""
        return cls(limit, lease_seconds) if limit > 0 else None


@dataclass(frozen=True)
class Accepted:
    """What storing a webhook did: stored it (`new`), and took it for this process (`item`)."""

    new: bool
    item: InboxItem | None = None


@dataclass(frozen=True)
class InboundRecord:
    """Where one inbound message stands (for `groupbot status`)."""

    message_uuid: str
    group_key: str
    state: str
    route: str | None
    error: str | None
    attempts: int


@dataclass(frozen=True)
class OutboxEntry:
    """One member's message of a broadcast, before it is stored."""

    broadcast_id: str
    group_key: str
    message: OutboundMessage
    inbound_uuid: str | None = None

    def __post_init__(self) -> None:
        if not self.message.client_ref:
            raise ValueError("OutboxEntry.message.client_ref: required; build with entries()")


def entries(
    broadcast_id: str,
    group_key: str,
    messages: Sequence[OutboundMessage],
    *,
    inbound_uuid: str | None = None,
) -> list[OutboxEntry]:
    """A broadcast's rows, each with a `client_ref` (echoed in its status callbacks)."""
    return [
        OutboxEntry(
            broadcast_id,
            group_key,
            message.model_copy(update={"client_ref": f"{broadcast_id}/{n}"}),
            inbound_uuid,
        )
        for n, message in enumerate(messages)
    ]


@dataclass(frozen=True)
class OutboxItem:
    """A stored outbound message, claimed for sending."""

    id: int
    broadcast_id: str
    group_key: str
    message: OutboundMessage
    attempts: int
    created_at: float
    origin_at: float  # when the webhook it answers was stored (else when it was queued)


@dataclass(frozen=True)
class OutboxRecord:
    """Where one member's message stands: queue state, API id, latest delivery status."""

    id: int
    broadcast_id: str
    recipient: str
    state: OutboxState
    attempts: int
    message_uuid: str | None
    error: str | None
    status: str | None
    status_error: str | None
    message: OutboundMessage  # what was queued, whole

    @property
    def text(self) -> str:
        """What a person sees first: the text, or the attachment and its caption."""
        return self.message.summary()


@dataclass(frozen=True)
class ThreadEntry:
    """One line of a conversation as the simulated phones show it."""

    at: float
    sender: str
    recipients: tuple[str, ...]
    text: str
    state: str
    participants: tuple[str, ...] = ()  # what the recipient's message listed (bot messages)
    media_kind: str | None = None
    media_url: str | None = None


@dataclass(frozen=True)
class UsageRow:
    """What one group's messages cost on one day (UTC)."""

    day: str  # YYYY-MM-DD
    group_key: str
    messages: int  # sent, each billed as one MMS
    spend: dict[str, Decimal]  # by currency, from the status callbacks' usage.price


@dataclass(frozen=True)
class Places:
    """How much work a process keeps in flight on a store: messages being handled (from the
    webhook's arrival until the answers are stored), and sends (from the claim until the
    outcome is recorded). Past them, work waits in line, and webhooks are held back."""

    inbox: int
    outbox: int


class Store(Protocol):
    owner: str  # who this process is on the claims it takes
    places: Places

    async def ping(self) -> None: ...

    async def schema_version(self) -> int:
        """How many migrations have been applied."""
        ...

    def listen(self, on_notify: Callable[[str], None]) -> None:
        """Have `on_notify("inbox" | "outbox")` called when a queue holds work its callers
        were not told of: another process stored or queued a message (a fleet on
        PostgreSQL), or one that waited behind a message just completed or sent may go now
        (its group's next inbound message; its member's next outbound one). Workers claim
        only when told, or at their poll."""
        ...

    async def reserve_send(self, key: str, interval_seconds: float, count: int = 1) -> float:
        """Reserve the next `count` send slots of `key` (one every `interval_seconds`, for
        every process this store is shared by); return the seconds until the first."""
        ...

    async def release_orphans(self) -> int:
        """Free the claims of this host's processes that are gone; return how many."""
        ...

    async def close(self) -> None: ...

    async def accept_inbound(
        self,
        message_uuid: str,
        group_key: str,
        members: Sequence[str],
        body: bytes,
        now: float,
        *,
        jti: str | None = None,
        take: Take | None = None,
        early: Callable[[Accepted], None] | None = None,
    ) -> Accepted:
        """Store a webhook durably; `new` is False when this message_uuid was stored before.

        `jti` is the signed webhook token's id: Replayed (nothing stored) if seen before.
        With `take`, a new message that heads its group is claimed at once (`item`).
        `early`: a store whose commits carry many calls' work (SQLite) may tell it the result
        before it is durable, so that handling the message overlaps the commit; this call
        still returns only once it is durable, and raises if it is not.
        """
        ...

    async def claim_inbound(
        self, limit: int, now: float, lease_seconds: float, max_attempts: int
    ) -> list[InboxItem]:
        """The oldest unprocessed message of each group that has no message in progress.

        A message whose lease ran out `max_attempts` times is marked failed instead.
        """
        ...

    async def complete_inbound(
        self,
        item: InboxItem,
        *,
        now: float,
        route: str | None,
        outbound: Sequence[OutboxEntry],
        state: str | None,
        error: str | None = None,
        consent: tuple[str, bool] | None = None,
        take: Take | None = None,
    ) -> list[OutboxItem]:
        """Mark processed, queue its outbound messages, save the group state (JSON) and a
        number's opt-out (False) or opt-in (True), atomically; raise LeaseLost (writing
        nothing) if the item was claimed again. With `take`, the queued messages that head
        their member's queue are claimed at once and returned."""
        ...

    async def opted_out(self, numbers: Sequence[str]) -> frozenset[str]:
        """Which of `numbers` sent STOP (and not START since)."""
        ...

    async def load_state(self, group_key: str) -> dict[str, Any]: ...

    async def enqueue(
        self, outbound: Sequence[OutboxEntry], members: Sequence[str], now: float
    ) -> None:
        """Queue a broadcast that answers no inbound message (`groupbot send`, the admin API)."""
        ...

    async def claim_outbound(
        self,
        limit: int,
        now: float,
        lease_seconds: float,
        max_attempts: int,
        *,
        broadcast_id: str | None = None,
        created_before: float = 0.0,
    ) -> list[OutboxItem]:
        """Due messages, at most one in flight per member of a group, oldest first. A send
        whose process died mid-attempt is given up once it has had `max_attempts`, or was
        created before `created_before` (its ttl run out); else it is taken up again."""
        ...

    async def record_sent(self, item: OutboxItem, message_uuid: str | None, now: float) -> bool:
        """True when it was the last of its broadcast still to go: of outcomes recorded at
        once by one process, exactly one (on PostgreSQL, two processes recording a
        broadcast's last two at the same instant may both see False). Each record_* raises
        LeaseLost (writing nothing) if the item was claimed again."""
        ...

    async def record_retry(
        self, item: OutboxItem, error: str, next_attempt_at: float, *, sent: bool = True
    ) -> None:
        """Pending again at `next_attempt_at`. `sent=False`: given back unsent (a 429's pause,
        no send slot in time), so the claim's attempt is not counted: no request was made."""
        ...

    async def record_failed(
        self, item: OutboxItem, error: str, now: float, *, sent: bool = True
    ) -> None:
        """Given up; `sent=False` as for record_retry (held back past its age limit)."""
        ...

    async def record_status(
        self, status: MessageStatus, body: bytes, now: float, *, jti: str | None = None
    ) -> bool:
        """Attach a delivery status to its outbound message; False when none matches."""
        ...

    async def broadcast(self, broadcast_id: str) -> list[OutboxRecord]: ...

    async def inbound(self, message_uuid: str) -> InboundRecord | None: ...

    async def groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """Every known group's key and members, most recently active first."""
        ...

    async def conversation(self, group_key: str) -> list[ThreadEntry]:
        """A group's inbound and outbound messages in time order (for the simulator)."""
        ...

    async def usage(self, since: float) -> list[UsageRow]:
        """Messages sent and their price, per group and day, from `since` on."""
        ...

    async def queued_since(self, group_key: str, since: float) -> int:
        """The group's messages queued since `since` and not failed (they will be billed)."""
        ...

    async def depths(self) -> dict[str, int]:
        """Items waiting or in progress: {"inbox": n, "outbox": n}."""
        ...

    async def oldest(self, now: float) -> dict[str, float]:
        """When the oldest item waiting in each queue (and due by `now`) was stored, for
        queues that have one."""
        ...

    async def waiting(self, now: float) -> dict[str, int]:
        """Items waiting to be taken now, {"inbox": n, "outbox": n}: inbound messages not
        yet claimed and outbound messages due (a retry scheduled for later does not count)."""
        ...

    async def next_due(self) -> float | None:
        """When the earliest pending outbound message becomes due, if any."""
        ...


async def store_problem(url: str, *, root: Path) -> str | None:
    """Why the store at `url` could not be opened, without opening it (no file made, no
    migration run): for `groupbot check`. None when it looks reachable."""
    if url.startswith("sqlite:///"):
        path = _sqlite_path(url, root)
        existing = next(p for p in (path, *path.parents) if p.exists())
        if existing != path and not existing.is_dir():
            return f"storage.url: {existing} is a file, not a folder for {path.name}"
        if not os.access(existing, os.W_OK):
            return f"storage.url: {existing} is not writable"
        return None
    try:
        import asyncpg
    except ImportError:
        return NEEDS_ASYNCPG
    try:
        connection = await asyncpg.connect(url, timeout=PROBE_SECONDS)
    except Exception as exc:  # whatever the driver raises, said in one line
        return f"storage.url: cannot connect to {_why(url, exc)}"
    await connection.close()
    return None


def _sqlite_path(url: str, root: Path) -> Path:
    """The file of a `sqlite:///` URL, a relative one against `root`."""
    path = Path(url.removeprefix("sqlite:///"))
    return path if path.is_absolute() else root / path


def _why(url: str, exc: Exception) -> str:
    """The store's URL, its password hidden, and why it failed: not in the driver's words
    when the password misled it (they would quote pieces of the password)."""
    if unencoded_password(url):
        return (
            f"{without_password(url)}: its password holds # ? / or @ as they are: "
            "percent-encode them (%23 %3F %2F %40)"
        )
    return f"{without_password(url)}: {type(exc).__name__}: {exc}"


async def open_store(url: str, *, root: Path, pool_size: int = 10, warm: bool = False) -> Store:
    """Open (and create or upgrade) the store at `url`, relative paths against `root`;
    StoreUnavailable, naming it (its password hidden), when that fails. `warm`: for a
    long-running process, PostgreSQL's connections are all opened now (SQLite has one)."""
    if url.startswith("sqlite:///"):
        from bot.store.sqlite import SqliteStore

        opening: Coroutine[Any, Any, Store] = SqliteStore.open(_sqlite_path(url, root))
    elif url.startswith(("postgresql://", "postgres://")):
        try:
            from bot.store.postgres import PostgresStore
        except ImportError as exc:  # asyncpg is an extra
            raise ValueError(NEEDS_ASYNCPG) from exc
        opening = PostgresStore.open(url, pool_size=pool_size, warm=warm)
    else:
        raise ValueError(
            "storage.url: unsupported scheme; expected sqlite:///PATH or postgresql://..."
        )
    try:
        return await opening
    except Exception as exc:  # whatever the driver raises: said in one line, with its cause
        raise StoreUnavailable(f"cannot open the store {_why(url, exc)}") from exc
