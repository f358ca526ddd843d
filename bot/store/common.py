"""What every backend shares that is not SQL: who holds a claim and whether it still runs,
how a group's state and a stored message read back, and how usage adds up."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from bot.models import InboundMessage, MessageStatus, OutboundMessage
from bot.store import (
    InboxItem,
    OutboxEntry,
    OutboxItem,
    OutboxRecord,
    Take,
    ThreadEntry,
    UsageRow,
)


class Row(Protocol):
    """A result row by column name: sqlite3.Row and asyncpg.Record both are."""

    def __getitem__(self, key: str) -> Any: ...


class KeyedLocks:
    """One asyncio lock a key, kept only while someone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: Counter[str] = Counter()

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


TOKEN_KEEP_SECONDS = 24 * 3600.0  # a signed webhook's jti is remembered this long
TOKEN_PRUNE_EVERY = 500  # tokens stored between two prunings of the old ones


def group_state(text: str) -> dict[str, Any]:
    """A group's state is a JSON object; anything else (written by an older version, or by
    hand) reads as empty rather than failing the claim of every group in the batch."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def process_identity(pid: int) -> str | None:
    """`namespace:pid:start`: the PID namespace (host, boot and container), the pid,
    and when the process started, so a pid reused by a later process is not mistaken for the
    one that held the claim. None where /proc cannot tell (then nothing is freed early)."""
    try:
        namespace = os.stat(f"/proc/{pid}/ns/pid").st_ino
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (start time) counts from after the command name, which may hold spaces.
    start = stat.rpartition(")")[2].split()[19]
    return f"{socket.gethostname()}-{_boot_id()}-{namespace}:{pid}:{start}"


@functools.cache
def _boot_id() -> str:
    """This boot of this machine: cloned machines share a hostname, and the host's PID
    namespace has the same number everywhere, but never a boot id."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def this_process() -> str:
    """The owner recorded on this process's claims."""
    return process_identity(os.getpid()) or f"{socket.gethostname()}/{os.getpid()}"


def dead_owners(owners: Iterable[str]) -> list[str]:
    """The claim owners of this host's PID namespace whose process no longer runs.

    Any other owner (another machine, another container, or one /proc cannot judge) is
    left alone: its claims wait for their leases to run out.
    """
    here = process_identity(os.getpid())
    if here is None:
        return []
    namespace = here.split(":", 1)[0]
    return [o for o in set(owners) if o.startswith(f"{namespace}:") and not _alive(o)]


def _alive(owner: str) -> bool:
    """Whether the process that made `owner` (see process_identity) still runs."""
    try:
        pid = int(owner.split(":")[1])
    except (IndexError, ValueError):
        return True  # not ours to judge
    return process_identity(pid) == owner


def opted_out_rejection(status: MessageStatus) -> bool:
    """Vonage's error 1240, Illegal Number: the recipient sent STOP to this sender."""
    error = status.error
    if status.status not in ("rejected", "undeliverable") or error is None:
        return False
    return error.title == "1240" or (error.type or "").endswith("#1240")


def status_reason(status: MessageStatus) -> str | None:
    error = status.error
    return " ".join(filter(None, (error.title, error.detail))) if error else None


def usage_rows(rows: Iterable[Row]) -> list[UsageRow]:
    """Sum sent messages (`day`, `group_key`, `price`, `currency` each) per day and group."""
    table: dict[tuple[str, str], UsageRow] = {}
    for row in rows:
        key = (row["day"], row["group_key"])
        entry = table.setdefault(key, UsageRow(row["day"], row["group_key"], 0, {}))
        table[key] = UsageRow(entry.day, entry.group_key, entry.messages + 1, entry.spend)
        if row["price"] is not None:
            currency = row["currency"] or "?"
            try:
                price = Decimal(row["price"])
            except ArithmeticError:
                continue  # a price the API wrote oddly is left out, not guessed
            entry.spend[currency] = entry.spend.get(currency, Decimal(0)) + price
    return list(table.values())


def thread(inbound: Iterable[Row], outbound: Iterable[Row]) -> list[ThreadEntry]:
    """A conversation from its stored rows: inbound (`body`, `received_at`, `state`) and
    outbound (`body`, `created_at`, `state`, `status`), in time order."""
    entries: list[ThreadEntry] = []
    for row in inbound:
        message = InboundMessage.model_validate_json(row["body"])
        others = (message.to, *message.participants)
        entries.append(
            ThreadEntry(row["received_at"], message.sender, others, message.body_text, row["state"])
        )
    for row in outbound:
        sent = OutboundMessage.model_validate_json(row["body"])
        media = getattr(sent, sent.message_type) if sent.message_type != "text" else None
        entries.append(
            ThreadEntry(
                row["created_at"],
                sent.from_,
                (sent.to,),
                sent.text or (media.caption if media else None) or "",
                row["status"] or row["state"],
                participants=tuple(sent.participants),
                media_kind=sent.message_type if media else None,
                media_url=media.url if media else None,
            )
        )
    return sorted(entries, key=lambda e: e.at)


def outbox_record(row: Row) -> OutboxRecord:
    """A member's message from its row (`id`, `broadcast_id`, `recipient`, `state`,
    `attempts`, `message_uuid`, `error`, `status`, `status_error`, `body`)."""
    return OutboxRecord(
        id=row["id"],
        broadcast_id=row["broadcast_id"],
        recipient=row["recipient"],
        state=row["state"],
        attempts=row["attempts"],
        message_uuid=row["message_uuid"],
        error=row["error"],
        status=row["status"],
        status_error=row["status_error"],
        message=OutboundMessage.model_validate_json(row["body"]),
    )


# An outcome's assignment when no request was made (held back, given up unsent): the claim
# counted an attempt, which is given back.
UNSENT = ", attempts = attempts - 1"

OUTBOUND_COLUMNS = (
    "broadcast_id, inbound_uuid, group_key, recipient, client_ref, body, next_attempt_at, "
    "created_at, state, lease_until, owner, attempts"
)


def heads(
    outbound: Sequence[OutboxEntry], busy: Collection[tuple[str, str]], limit: int
) -> set[int]:
    """Which of `outbound` may be claimed as they are stored, by index: the first of each
    member (group key, recipient) that has nothing open already (`busy`), at most `limit`."""
    taken: set[int] = set()
    seen = set(busy)
    for n, entry in enumerate(outbound):
        member = (entry.group_key, entry.message.to)
        if member in seen:
            continue
        seen.add(member)
        if len(taken) < limit:
            taken.add(n)
    return taken


def claim_values(
    state: str, take: Take | None, now: float, owner: str
) -> tuple[str, float | None, str | None, int]:
    """A new row's state, lease_until, owner and attempts: claimed by `owner` in `state` when
    `take` is given (its first attempt), else pending."""
    if take is None:
        return ("pending", None, None, 0)
    return (state, now + take.lease_seconds, owner, 1)


def taken_inbound(
    message_uuid: str,
    group_key: str,
    members: Sequence[str],
    state: str,
    body: bytes,
    now: float,
    opted_out: frozenset[str],
) -> InboxItem:
    """The claim of an inbound message taken as it was stored (its group's `state` JSON)."""
    return InboxItem(
        message_uuid=message_uuid,
        group_key=group_key,
        members=tuple(members),
        state=group_state(state),
        body=body,
        attempts=1,
        opted_out=opted_out & set(members),
        received_at=now,
    )


def outbound_rows(
    outbound: Iterable[OutboxEntry],
    now: float,
    *,
    taken: Collection[int] = (),
    take: Take | None = None,
    owner: str = "",
) -> list[tuple[object, ...]]:
    """The values of each entry's row, in OUTBOUND_COLUMNS' order: broadcast_id,
    inbound_uuid, group_key, recipient, client_ref, body (the API request as JSON), `now`
    (due at, created at), then the claim (see claim_values): entries whose index is in
    `taken` are stored as sending, claimed by `owner` under `take`."""
    return [
        (
            entry.broadcast_id,
            entry.inbound_uuid,
            entry.group_key,
            entry.message.to,
            entry.message.client_ref,
            entry.message.api_json.decode(),
            now,
            now,
            *claim_values("sending", take if n in taken else None, now, owner),
        )
        for n, entry in enumerate(outbound)
    ]


def taken_item(entry: OutboxEntry, row_id: int, now: float, origin_at: float) -> OutboxItem:
    """The claim of a message taken as it was stored (see heads)."""
    return OutboxItem(
        id=row_id,
        broadcast_id=entry.broadcast_id,
        group_key=entry.group_key,
        message=entry.message,
        attempts=1,
        created_at=now,
        origin_at=origin_at,
    )
