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
import os
import socket
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import aiosqlite

from bot.exceptions import Replayed
from bot.store import (
    OutboxEntry,
)
from bot.store.schema import MIGRATIONS

TOKEN_KEEP_SECONDS = 24 * 3600.0
TOKEN_PRUNE_EVERY = 500


class SqliteBase:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._lock = asyncio.Lock()
        self._tokens_seen = 0
        # Who holds a claim: this very process. See release_orphans.
        self.owner = process_identity(os.getpid()) or f"{socket.gethostname()}/{os.getpid()}"

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
