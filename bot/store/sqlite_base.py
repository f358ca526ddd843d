"""The SQLite store's connection: opening and migrating, transactions, claims' owners,
webhook tokens, and the row helpers the queries share.

WAL with `synchronous=FULL`, so a row is on disk when its write returns: the webhook's 200
is only sent after that. Writes go through one connection under a lock, each multi-row change
in one `BEGIN IMMEDIATE` transaction, which also serialises writers across processes
(`groupbot send` beside a running bot).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Self

import aiosqlite

from bot.exceptions import Replayed
from bot.ratelimit import LocalSlots
from bot.store import (
    OutboxEntry,
)
from bot.store.common import TOKEN_KEEP_SECONDS, TOKEN_PRUNE_EVERY, dead_owners, this_process
from bot.store.schema import SQLITE_MIGRATIONS


class SqliteBase:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._lock = asyncio.Lock()
        self._tokens_seen = 0
        self.owner = this_process()  # who holds a claim; see release_orphans
        self._slots = LocalSlots()

    @classmethod
    async def open(cls, path: Path) -> Self:
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
            for number, script in enumerate(SQLITE_MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number}")

    async def schema_version(self) -> int:
        async with self._reading() as db, db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

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
        """Free at once the claims of this host's processes that are gone (killed, crashed),
        instead of waiting for their leases to run out; return how many were freed."""
        async with self._transaction() as db:
            owners = [
                row[0]
                for table in ("inbound", "outbound")
                for row in await db.execute_fetchall(
                    f"SELECT DISTINCT owner FROM {table} "  # noqa: S608 - fixed table names
                    "WHERE state IN ('processing', 'sending') AND owner IS NOT NULL"
                )
            ]
            freed = 0
            for table, state in (("inbound", "processing"), ("outbound", "sending")):
                for owner in dead_owners(owners):
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

    def listen(self, on_notify: Callable[[str], None]) -> None:
        """Nothing to listen to: one process serves a SQLite file, and wakes its own workers."""

    async def reserve_send(self, key: str, interval_seconds: float, count: int = 1) -> float:
        return await self._slots.reserve(key, interval_seconds, count)

    async def ping(self) -> None:
        async with self._reading() as db, db.execute("SELECT 1") as cursor:
            await cursor.fetchone()

    async def close(self) -> None:
        async with self._lock:
            await self._db.close()


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
        # Nothing more to a number after its STOP: what was queued for it before is dropped
        # now (its confirmation, queued in this same transaction, still goes).
        await db.execute(
            "UPDATE outbound SET state = 'failed', finished_at = ?, lease_until = NULL, "
            "error = 'recipient opted out (STOP)' "
            "WHERE recipient = ? AND state = 'pending' AND created_at < ?",
            (now, number, now),
        )


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
