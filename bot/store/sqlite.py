"""The default store: one SQLite file through aiosqlite.

WAL with `synchronous=FULL`, so a row is on disk when its write returns: the webhook's 200
is only sent after that. Writes go through one connection under a lock, each multi-row change
in one `BEGIN IMMEDIATE` transaction, which also serialises writers across processes
(`groupbot send` beside a running bot).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite

from bot.exceptions import Replayed
from bot.models import InboundMessage, MessageStatus, OutboundMessage
from bot.store import (
    InboundRecord,
    InboxItem,
    LeaseLost,
    OutboxEntry,
    OutboxItem,
    OutboxRecord,
    ThreadEntry,
    UsageRow,
)
from bot.store.schema import MIGRATIONS

# Webhook tokens are kept well past any freshness window, then forgotten, a batch at a time.
TOKEN_KEEP_SECONDS = 24 * 3600.0
TOKEN_PRUNE_EVERY = 500

# Later statuses never give way to earlier ones arriving late (Vonage does not order them).
_STATUS_RANK = "CASE WHEN {0} IS NULL THEN 0 WHEN {0} = 'submitted' THEN 1 ELSE 2 END"


class SqliteStore:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._lock = asyncio.Lock()
        self._tokens_seen = 0
        # Who holds a claim: this very process. See release_orphans.
        self.owner = process_identity(os.getpid()) or f"{socket.gethostname()}/{os.getpid()}"

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        for pragma in (
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = FULL",
            "PRAGMA busy_timeout = 10000",
            "PRAGMA foreign_keys = ON",
        ):
            await db.execute(pragma)
        store = cls(db, path)
        await store._migrate()
        return store

    async def _migrate(self) -> None:
        async with self._transaction() as db:
            async with db.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            version = int(row[0]) if row else 0
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number}")

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                yield self._db
            except BaseException:
                # Shielded: a cancelled caller must not leave the connection mid-transaction.
                await asyncio.shield(self._rollback())
                raise
            await self._db.execute("COMMIT")

    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.OperationalError):  # no transaction was open
            await self._db.execute("ROLLBACK")

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[aiosqlite.Connection]:
        # Reads share the writers' connection, so they wait for the lock: otherwise they would
        # see another coroutine's uncommitted rows.
        async with self._lock:
            yield self._db

    async def release_orphans(self) -> int:
        """Free at once the claims of processes that are gone (killed, crashed), instead of
        waiting for their leases to run out; return how many were freed.

        Only claims whose owner can be checked from here are freed: a process of this host's
        PID namespace (see process_identity) that no longer runs. Any other owner (another
        machine, another container) keeps its claims until their leases run out.
        """
        here = process_identity(os.getpid())
        if here is None:
            return 0
        namespace = here.split(":", 1)[0]
        async with self._transaction() as db:
            owners = [
                row[0]
                for table in ("inbound", "outbound")
                for row in await db.execute_fetchall(
                    f"SELECT DISTINCT owner FROM {table} "  # noqa: S608 - fixed table names
                    "WHERE state IN ('processing', 'sending') AND owner LIKE ?",
                    (f"{namespace}:%",),
                )
            ]
            dead = [owner for owner in set(owners) if not _alive(owner)]
            freed = 0
            for table, state in (("inbound", "processing"), ("outbound", "sending")):
                for owner in dead:
                    cursor = await db.execute(
                        f"UPDATE {table} SET lease_until = 0 "  # noqa: S608 - fixed names
                        "WHERE state = ? AND owner = ?",
                        (state, owner),
                    )
                    freed += cursor.rowcount
        return freed

    async def _remember_jti(self, db: aiosqlite.Connection, jti: str | None, now: float) -> None:
        """Record a webhook token's jti in the caller's transaction; Replayed if seen before.

        Recorded with what it admits, so a webhook that fails to store (and is retried by
        Vonage) leaves no trace that would refuse the retry.
        """
        if jti is None:
            return
        self._tokens_seen += 1
        if self._tokens_seen % TOKEN_PRUNE_EVERY == 0:
            await db.execute(
                "DELETE FROM webhook_tokens WHERE seen_at < ?", (now - TOKEN_KEEP_SECONDS,)
            )
        cursor = await db.execute(
            "INSERT INTO webhook_tokens (jti, seen_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (jti, now),
        )
        if cursor.rowcount != 1:
            raise Replayed(f"token {jti} was used before")

    async def ping(self) -> None:
        async with self._reading() as db, db.execute("SELECT 1") as cursor:
            await cursor.fetchone()

    async def close(self) -> None:
        async with self._lock:
            await self._db.close()

    # -- inbox ---------------------------------------------------------------------------

    async def accept_inbound(
        self,
        message_uuid: str,
        group_key: str,
        members: Sequence[str],
        body: bytes,
        now: float,
        *,
        jti: str | None = None,
    ) -> bool:
        async with self._transaction() as db:
            await self._remember_jti(db, jti, now)
            await _touch_group(db, group_key, members, now)
            cursor = await db.execute(
                "INSERT OR IGNORE INTO inbound (message_uuid, group_key, body, received_at) "
                "VALUES (?, ?, ?, ?)",
                (message_uuid, group_key, body, now),
            )
            return cursor.rowcount == 1

    async def claim_inbound(
        self, limit: int, now: float, lease_seconds: float, max_attempts: int
    ) -> list[InboxItem]:
        async with self._transaction() as db:
            # A message whose processing died with its process max_attempts times is poison:
            # set it aside, so that the rest of its group goes on.
            await db.execute(
                "UPDATE inbound SET state = 'failed', lease_until = NULL, processed_at = ?, "
                "error = 'gave up after ' || attempts || ' attempts that did not finish' "
                "WHERE state = 'processing' AND lease_until < ? AND attempts >= ?",
                (now, now, max_attempts),
            )
            async with db.execute(
                """
                SELECT i.message_uuid, i.group_key, g.members, g.state, i.body, i.attempts
                FROM inbound i JOIN groups g ON g.key = i.group_key
                WHERE i.seq IN (
                    SELECT MIN(seq) FROM inbound
                    WHERE state IN ('pending', 'processing') GROUP BY group_key
                )
                AND (i.state = 'pending' OR i.lease_until < ?)
                ORDER BY i.seq LIMIT ?
                """,
                (now, limit),
            ) as cursor:
                rows = list(await cursor.fetchall())
            await db.executemany(
                "UPDATE inbound SET state = 'processing', lease_until = ?, owner = ?, "
                "attempts = attempts + 1 WHERE message_uuid = ?",
                [(now + lease_seconds, self.owner, row["message_uuid"]) for row in rows],
            )
            members = {row["message_uuid"]: tuple(json.loads(row["members"])) for row in rows}
            stopped = await _opted_out(db, [m for group in members.values() for m in group])
        return [
            InboxItem(
                message_uuid=row["message_uuid"],
                group_key=row["group_key"],
                members=members[row["message_uuid"]],
                state=_state(row["state"]),
                body=bytes(row["body"]),
                attempts=row["attempts"] + 1,
                opted_out=stopped & set(members[row["message_uuid"]]),
            )
            for row in rows
        ]

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
    ) -> None:
        async with self._transaction() as db:
            # Fenced by the attempt: if our lease ran out and another claim took the message
            # over, this outcome is stale and nothing of it is written.
            cursor = await db.execute(
                "UPDATE inbound SET state = ?, route = ?, error = ?, processed_at = ?, "
                "lease_until = NULL WHERE message_uuid = ? AND state = 'processing' "
                "AND attempts = ?",
                (
                    "failed" if error else "done",
                    route,
                    error,
                    now,
                    item.message_uuid,
                    item.attempts,
                ),
            )
            if cursor.rowcount != 1:
                raise LeaseLost(f"inbound {item.message_uuid} was claimed again")
            await _insert_outbound(db, outbound, now)
            if state is not None:
                await db.execute(
                    "UPDATE groups SET state = ?, updated_at = ? WHERE key = ?",
                    (state, now, item.group_key),
                )
            if consent is not None:
                number, subscribed = consent
                await _set_consent(db, number, subscribed, now, source="keyword")

    async def opted_out(self, numbers: Sequence[str]) -> frozenset[str]:
        async with self._reading() as db:
            return await _opted_out(db, numbers)

    async def load_state(self, group_key: str) -> dict[str, Any]:
        async with (
            self._reading() as db,
            db.execute("SELECT state FROM groups WHERE key = ?", (group_key,)) as cursor,
        ):
            row = await cursor.fetchone()
        return _state(row["state"]) if row else {}

    # -- outbox --------------------------------------------------------------------------

    async def enqueue(
        self, outbound: Sequence[OutboxEntry], members: Sequence[str], now: float
    ) -> None:
        async with self._transaction() as db:
            for group_key in {entry.group_key for entry in outbound}:
                await _touch_group(db, group_key, members, now)
            await _insert_outbound(db, outbound, now)

    async def claim_outbound(
        self,
        limit: int,
        now: float,
        lease_seconds: float,
        max_attempts: int,
        *,
        broadcast_id: str | None = None,
    ) -> list[OutboxItem]:
        async with self._transaction() as db:
            # Nothing more to a number after its STOP: messages queued before it are dropped
            # (its confirmation, queued with the opt-out, still goes).
            await db.execute(
                "UPDATE outbound SET state = 'failed', finished_at = ?, lease_until = NULL, "
                "error = 'recipient opted out (STOP)' WHERE state = 'pending' AND EXISTS ("
                "SELECT 1 FROM opt_outs o WHERE o.number = outbound.recipient "
                "AND o.opted_out_at > outbound.created_at)",
                (now,),
            )
            # Sends whose process died mid-attempt max_attempts times are given up.
            await db.execute(
                "UPDATE outbound SET state = 'failed', lease_until = NULL, finished_at = ?, "
                "error = 'gave up after ' || attempts || ' attempts that did not finish' "
                "WHERE state = 'sending' AND lease_until < ? AND attempts >= ?",
                (now, now, max_attempts),
            )
            async with db.execute(
                """
                SELECT o.id, o.broadcast_id, o.group_key, o.body, o.attempts, o.created_at
                FROM outbound o
                WHERE o.id IN (
                    SELECT MIN(id) FROM outbound
                    WHERE state IN ('pending', 'sending') GROUP BY group_key, recipient
                )
                AND ((o.state = 'pending' AND o.next_attempt_at <= ?)
                     OR (o.state = 'sending' AND o.lease_until < ?))
                AND (? IS NULL OR o.broadcast_id = ?)
                ORDER BY o.id LIMIT ?
                """,
                (now, now, broadcast_id, broadcast_id, limit),
            ) as cursor:
                rows = list(await cursor.fetchall())
            await db.executemany(
                "UPDATE outbound SET state = 'sending', lease_until = ?, owner = ?, "
                "attempts = attempts + 1 WHERE id = ?",
                [(now + lease_seconds, self.owner, row["id"]) for row in rows],
            )
        return [
            OutboxItem(
                id=row["id"],
                broadcast_id=row["broadcast_id"],
                group_key=row["group_key"],
                message=OutboundMessage.model_validate_json(row["body"]),
                attempts=row["attempts"] + 1,
                created_at=row["created_at"],
            )
            for row in rows
        ]

    async def record_sent(self, item: OutboxItem, message_uuid: str | None, now: float) -> None:
        await self._finish_attempt(
            item,
            "state = 'sent', message_uuid = COALESCE(?, message_uuid), sent_at = ?, "
            "finished_at = ?, error = NULL",
            (message_uuid, now, now),
        )

    async def record_retry(self, item: OutboxItem, error: str, next_attempt_at: float) -> None:
        await self._finish_attempt(
            item, "state = 'pending', error = ?, next_attempt_at = ?", (error, next_attempt_at)
        )

    async def record_failed(self, item: OutboxItem, error: str, now: float) -> None:
        await self._finish_attempt(
            item, "state = 'failed', error = ?, finished_at = ?", (error, now)
        )

    async def _finish_attempt(
        self, item: OutboxItem, assignments: str, values: tuple[object, ...]
    ) -> None:
        async with self._transaction() as db:
            # Fenced by the attempt, like complete_inbound: a stale outcome changes nothing.
            cursor = await db.execute(
                f"UPDATE outbound SET {assignments}, lease_until = NULL "  # noqa: S608 - fixed SQL
                "WHERE id = ? AND state = 'sending' AND attempts = ?",
                (*values, item.id, item.attempts),
            )
            if cursor.rowcount != 1:
                raise LeaseLost(f"outbound {item.id} was claimed again")

    async def record_status(
        self, status: MessageStatus, body: bytes, now: float, *, jti: str | None = None
    ) -> bool:
        uuid = str(status.message_uuid)
        usage = status.usage
        error = status.error
        reason = " ".join(filter(None, (error.title, error.detail))) if error else None
        async with self._transaction() as db:
            await self._remember_jti(db, jti, now)
            await db.execute(
                "INSERT INTO statuses (message_uuid, status, body, received_at) "
                "VALUES (?, ?, ?, ?)",
                (uuid, status.status, body.decode("utf-8", "replace"), now),
            )
            # client_ref finds the message even when the status overtakes our own record of
            # the send (the API may call back before record_sent commits).
            cursor = await db.execute(
                f"""
                UPDATE outbound SET
                    message_uuid = COALESCE(message_uuid, :uuid),
                    status = CASE WHEN {_STATUS_RANK.format(":status")}
                        >= {_STATUS_RANK.format("status")} THEN :status ELSE status END,
                    status_error = COALESCE(:reason, status_error),
                    status_at = :now,
                    price = COALESCE(:price, price),
                    currency = COALESCE(:currency, currency)
                WHERE message_uuid = :uuid OR (:ref IS NOT NULL AND client_ref = :ref)
                """,  # noqa: S608 - fixed SQL
                {
                    "uuid": uuid,
                    "status": status.status,
                    "reason": reason,
                    "now": now,
                    "price": usage.price if usage else None,
                    "currency": usage.currency if usage else None,
                    "ref": status.client_ref,
                },
            )
            if _opted_out_rejection(status):
                # The carrier says this number sent STOP (1240): never write to it again.
                await _set_consent(db, status.to, False, now, source="status 1240")
            return cursor.rowcount > 0

    async def broadcast(self, broadcast_id: str) -> list[OutboxRecord]:
        async with (
            self._reading() as db,
            db.execute(
                "SELECT id, broadcast_id, recipient, state, attempts, message_uuid, error, "
                "status, status_error, body FROM outbound WHERE broadcast_id = ? ORDER BY id",
                (broadcast_id,),
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return [
            OutboxRecord(
                id=row["id"],
                broadcast_id=row["broadcast_id"],
                recipient=row["recipient"],
                state=row["state"],
                attempts=row["attempts"],
                message_uuid=row["message_uuid"],
                error=row["error"],
                status=row["status"],
                status_error=row["status_error"],
                text=OutboundMessage.model_validate_json(row["body"]).summary(),
            )
            for row in rows
        ]

    async def inbound(self, message_uuid: str) -> InboundRecord | None:
        async with (
            self._reading() as db,
            db.execute(
                "SELECT message_uuid, group_key, state, route, error, attempts FROM inbound "
                "WHERE message_uuid = ?",
                (message_uuid,),
            ) as cursor,
        ):
            row = await cursor.fetchone()
        return None if row is None else InboundRecord(**dict(row))

    async def groups(self) -> list[tuple[str, tuple[str, ...]]]:
        async with (
            self._reading() as db,
            db.execute("SELECT key, members FROM groups ORDER BY updated_at DESC") as cursor,
        ):
            rows = await cursor.fetchall()
        return [(row["key"], tuple(json.loads(row["members"]))) for row in rows]

    async def conversation(self, group_key: str) -> list[ThreadEntry]:
        async with self._reading() as db:
            inbound = await db.execute_fetchall(
                "SELECT body, received_at, state FROM inbound WHERE group_key = ?", (group_key,)
            )
            outbound = await db.execute_fetchall(
                "SELECT body, created_at, state, status FROM outbound WHERE group_key = ?",
                (group_key,),
            )
        entries: list[ThreadEntry] = []
        for row in inbound:
            message = InboundMessage.model_validate_json(row["body"])
            others = (message.to, *message.participants)
            entries.append(
                ThreadEntry(
                    row["received_at"], message.sender, others, message.body_text, row["state"]
                )
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

    async def usage(self, since: float) -> list[UsageRow]:
        async with self._reading() as db:
            rows = await db.execute_fetchall(
                "SELECT date(sent_at, 'unixepoch') AS day, group_key, price, currency "
                "FROM outbound WHERE state = 'sent' AND sent_at >= ? ORDER BY day, group_key",
                (since,),
            )
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

    async def queued_since(self, group_key: str, since: float) -> int:
        async with (
            self._reading() as db,
            db.execute(
                "SELECT COUNT(*) FROM outbound WHERE group_key = ? AND created_at >= ? "
                "AND state != 'failed'",
                (group_key, since),
            ) as cursor,
        ):
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def depths(self) -> dict[str, int]:
        async with self._reading() as db:
            inbox = await db.execute_fetchall(
                "SELECT COUNT(*) FROM inbound WHERE state IN ('pending', 'processing')"
            )
            outbox = await db.execute_fetchall(
                "SELECT COUNT(*) FROM outbound WHERE state IN ('pending', 'sending')"
            )
        return {"inbox": int(next(iter(inbox))[0]), "outbox": int(next(iter(outbox))[0])}

    async def next_due(self) -> float | None:
        # Only the head of each member's queue can be due: the messages behind it wait for it.
        async with (
            self._reading() as db,
            db.execute(
                """
            SELECT MIN(o.next_attempt_at) FROM outbound o
            WHERE o.state = 'pending' AND o.id IN (
                SELECT MIN(id) FROM outbound
                WHERE state IN ('pending', 'sending') GROUP BY group_key, recipient
            )
            """
            ) as cursor,
        ):
            row = await cursor.fetchone()
        return float(row[0]) if row and row[0] is not None else None


async def _opted_out(db: aiosqlite.Connection, numbers: Sequence[str]) -> frozenset[str]:
    unique = sorted(set(numbers))
    if not unique:
        return frozenset()
    rows = await db.execute_fetchall(
        f"SELECT number FROM opt_outs WHERE number IN ({', '.join('?' * len(unique))})",  # noqa: S608
        unique,
    )
    return frozenset(row[0] for row in rows)


async def _set_consent(
    db: aiosqlite.Connection, number: str, subscribed: bool, now: float, *, source: str
) -> None:
    if subscribed:
        await db.execute("DELETE FROM opt_outs WHERE number = ?", (number,))
    else:
        await db.execute(
            "INSERT INTO opt_outs (number, opted_out_at, source) VALUES (?, ?, ?) "
            "ON CONFLICT (number) DO NOTHING",
            (number, now, source),
        )


def _opted_out_rejection(status: MessageStatus) -> bool:
    """Vonage's error 1240, Illegal Number: the recipient sent STOP to this sender."""
    error = status.error
    if status.status not in ("rejected", "undeliverable") or error is None:
        return False
    return error.title == "1240" or (error.type or "").endswith("#1240")


def _state(text: str) -> dict[str, Any]:
    # A group's state is a JSON object; anything else (written by an older version, or by
    # hand) reads as empty rather than failing the claim of every group in the batch.
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def process_identity(pid: int) -> str | None:
    """`namespace:pid:start`: the PID namespace (host and container, by its inode), the pid,
    and when the process started, so a pid reused by a later process is not mistaken for the
    one that held the claim. None where /proc cannot tell (then nothing is freed early)."""
    try:
        namespace = os.stat(f"/proc/{pid}/ns/pid").st_ino
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (start time) counts from after the command name, which may hold spaces.
    start = stat.rpartition(")")[2].split()[19]
    return f"{socket.gethostname()}-{namespace}:{pid}:{start}"


def _alive(owner: str) -> bool:
    """Whether the process that made `owner` (see process_identity) still runs."""
    try:
        pid = int(owner.split(":")[1])
    except (IndexError, ValueError):
        return True  # not ours to judge
    return process_identity(pid) == owner


async def _touch_group(
    db: aiosqlite.Connection, group_key: str, members: Sequence[str], now: float
) -> None:
    await db.execute(
        "INSERT INTO groups (key, members, created_at, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at",
        (group_key, json.dumps(list(members)), now, now),
    )


async def _insert_outbound(
    db: aiosqlite.Connection, outbound: Sequence[OutboxEntry], now: float
) -> None:
    await db.executemany(
        "INSERT INTO outbound (broadcast_id, inbound_uuid, group_key, recipient, client_ref, "
        "body, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                entry.broadcast_id,
                entry.inbound_uuid,
                entry.group_key,
                entry.message.to,
                entry.message.client_ref,
                json.dumps(entry.message.to_api()),
                now,
                now,
            )
            for entry in outbound
        ],
    )
