"""Durable state: the inbox, the outbox, groups and their state, delivery statuses.

`Store` is the protocol every backend implements; `open_store(url)` picks one by URL scheme.
Every method that changes more than one row does so in one transaction: a crash leaves
either all of it or none of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from bot.models import MessageStatus, OutboundMessage

OutboxState = Literal["pending", "sending", "sent", "failed"]


@dataclass(frozen=True)
class InboxItem:
    """A stored inbound message, claimed for processing."""

    seq: int
    message_uuid: str
    group_key: str
    members: tuple[str, ...]
    body: bytes
    attempts: int


@dataclass(frozen=True)
class OutboxEntry:
    """One member's message of a broadcast, before it is stored."""

    broadcast_id: str
    group_key: str
    message: OutboundMessage
    inbound_uuid: str | None = None


@dataclass(frozen=True)
class OutboxItem:
    """A stored outbound message, claimed for sending."""

    id: int
    broadcast_id: str
    group_key: str
    message: OutboundMessage
    attempts: int
    created_at: float


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
    text: str


@dataclass(frozen=True)
class ThreadEntry:
    """One line of a conversation as the simulated phones show it."""

    at: float
    sender: str
    recipients: tuple[str, ...]
    text: str
    state: str


class Store(Protocol):
    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def accept_inbound(
        self, message_uuid: str, group_key: str, members: Sequence[str], body: bytes, now: float
    ) -> bool:
        """Store a webhook durably; False when this message_uuid was stored before."""
        ...

    async def claim_inbound(self, limit: int, now: float, lease_seconds: float) -> list[InboxItem]:
        """The oldest unprocessed message of each group that has no message in progress."""
        ...

    async def complete_inbound(
        self,
        message_uuid: str,
        *,
        now: float,
        route: str | None,
        outbound: Sequence[OutboxEntry],
        state: tuple[str, Mapping[str, Any]] | None,
        error: str | None = None,
    ) -> None:
        """Mark processed, queue its outbound messages and save the group state, atomically."""
        ...

    async def load_state(self, group_key: str) -> dict[str, Any]: ...

    async def enqueue(
        self, outbound: Sequence[OutboxEntry], members: Sequence[str], now: float
    ) -> None:
        """Queue a broadcast that answers no inbound message (`groupbot send`, the admin API)."""
        ...

    async def claim_outbound(
        self, limit: int, now: float, lease_seconds: float
    ) -> list[OutboxItem]:
        """Due messages, at most one in flight per member of a group, oldest first."""
        ...

    async def record_sent(self, outbox_id: int, message_uuid: str, now: float) -> None: ...

    async def record_retry(self, outbox_id: int, error: str, next_attempt_at: float) -> None: ...

    async def record_failed(self, outbox_id: int, error: str, now: float) -> None: ...

    async def record_status(self, status: MessageStatus, body: bytes, now: float) -> bool:
        """Attach a delivery status to its outbound message; False when none matches."""
        ...

    async def broadcast(self, broadcast_id: str) -> list[OutboxRecord]: ...

    async def groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """Every known group's key and members, most recently active first."""
        ...

    async def conversation(self, group_key: str) -> list[ThreadEntry]:
        """A group's inbound and outbound messages in time order (for the simulator)."""
        ...

    async def next_due(self) -> float | None:
        """When the earliest pending outbound message becomes due, if any."""
        ...


async def open_store(url: str, *, root: Path) -> Store:
    """Open (and create or upgrade) the store at `url`, relative paths against `root`."""
    if url.startswith("sqlite:///"):
        from bot.store.sqlite import SqliteStore

        path = Path(url.removeprefix("sqlite:///"))
        return await SqliteStore.open(path if path.is_absolute() else root / path)
    raise ValueError(f"storage.url: unsupported scheme in {url!r}; expected sqlite:///PATH")
