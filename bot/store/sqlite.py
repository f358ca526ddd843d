"""The default store: one SQLite file through aiosqlite.

WAL with `synchronous=FULL`, so a row is on disk when its write returns: the webhook's 200
is only sent after that. Writes go through one connection under a lock, each multi-row change
in one `BEGIN IMMEDIATE` transaction, which also serialises writers across processes
(`groupbot send` beside a running bot).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from bot.models import InboundMessage, MessageStatus, OutboundMessage
from bot.store import InboxItem, OutboxEntry, OutboxItem, OutboxRecord, ThreadEntry

# Each entry upgrades the schema by one version; PRAGMA user_version records the last applied.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE groups (
        key TEXT PRIMARY KEY,
        members TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE inbound (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        message_uuid TEXT NOT NULL UNIQUE,
        group_key TEXT NOT NULL REFERENCES groups(key),
        body BLOB NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'processing', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_until REAL,
        route TEXT,
        error TEXT,
        received_at REAL NOT NULL,
        processed_at REAL
    );
    CREATE INDEX inbound_open ON inbound (group_key, seq)
        WHERE state IN ('pending', 'processing');
    CREATE TABLE outbound (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        broadcast_id TEXT NOT NULL,
        inbound_uuid TEXT,
        group_key TEXT NOT NULL REFERENCES groups(key),
        recipient TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_until REAL,
        message_uuid TEXT UNIQUE,
        error TEXT,
        status TEXT,
        status_at REAL,
        price TEXT,
        currency TEXT,
        created_at REAL NOT NULL,
        sent_at REAL,
        UNIQUE (broadcast_id, recipient)
    );
    CREATE INDEX outbound_open ON outbound (group_key, recipient, id)
        WHERE state IN ('pending', 'sending');
    CREATE TABLE statuses (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_uuid TEXT NOT NULL,
        status TEXT NOT NULL,
        body TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE INDEX statuses_message ON statuses (message_uuid);
    """,
)


class SqliteStore:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._lock = asyncio.Lock()

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
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def ping(self) -> None:
        async with self._db.execute("SELECT 1") as cursor:
            await cursor.fetchone()

    async def close(self) -> None:
        await self._db.close()

    # -- inbox ---------------------------------------------------------------------------

    async def accept_inbound(
        self, message_uuid: str, group_key: str, members: Sequence[str], body: bytes, now: float
    ) -> bool:
        async with self._transaction() as db:
            await _ensure_group(db, group_key, members, now)
            cursor = await db.execute(
                "INSERT OR IGNORE INTO inbound (message_uuid, group_key, body, received_at) "
                "VALUES (?, ?, ?, ?)",
                (message_uuid, group_key, body, now),
            )
            return cursor.rowcount == 1

    async def claim_inbound(self, limit: int, now: float, lease_seconds: float) -> list[InboxItem]:
        async with self._transaction() as db:
            async with db.execute(
                """
                SELECT i.seq, i.message_uuid, i.group_key, g.members, i.body, i.attempts
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
                "UPDATE inbound SET state = 'processing', lease_until = ?, attempts = attempts + 1 "
                "WHERE seq = ?",
                [(now + lease_seconds, row["seq"]) for row in rows],
            )
        return [
            InboxItem(
                seq=row["seq"],
                message_uuid=row["message_uuid"],
                group_key=row["group_key"],
                members=tuple(json.loads(row["members"])),
                body=bytes(row["body"]),
                attempts=row["attempts"] + 1,
            )
            for row in rows
        ]

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
        async with self._transaction() as db:
            await _insert_outbound(db, outbound, now)
            if state is not None:
                group_key, values = state
                await db.execute(
                    "UPDATE groups SET state = ?, updated_at = ? WHERE key = ?",
                    (json.dumps(values), now, group_key),
                )
            await db.execute(
                "UPDATE inbound SET state = ?, route = ?, error = ?, processed_at = ?, "
                "lease_until = NULL WHERE message_uuid = ?",
                ("failed" if error else "done", route, error, now, message_uuid),
            )

    async def load_state(self, group_key: str) -> dict[str, Any]:
        async with self._db.execute(
            "SELECT state FROM groups WHERE key = ?", (group_key,)
        ) as cursor:
            row = await cursor.fetchone()
        return dict(json.loads(row["state"])) if row else {}

    # -- outbox --------------------------------------------------------------------------

    async def enqueue(
        self, outbound: Sequence[OutboxEntry], members: Sequence[str], now: float
    ) -> None:
        async with self._transaction() as db:
            for group_key in {entry.group_key for entry in outbound}:
                await _ensure_group(db, group_key, members, now)
            await _insert_outbound(db, outbound, now)

    async def claim_outbound(
        self, limit: int, now: float, lease_seconds: float
    ) -> list[OutboxItem]:
        async with self._transaction() as db:
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
                ORDER BY o.id LIMIT ?
                """,
                (now, now, limit),
            ) as cursor:
                rows = list(await cursor.fetchall())
            await db.executemany(
                "UPDATE outbound SET state = 'sending', lease_until = ?, attempts = attempts + 1 "
                "WHERE id = ?",
                [(now + lease_seconds, row["id"]) for row in rows],
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

    async def record_sent(self, outbox_id: int, message_uuid: str, now: float) -> None:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE outbound SET state = 'sent', message_uuid = ?, sent_at = ?, "
                "lease_until = NULL, error = NULL WHERE id = ?",
                (message_uuid, now, outbox_id),
            )

    async def record_retry(self, outbox_id: int, error: str, next_attempt_at: float) -> None:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE outbound SET state = 'pending', error = ?, next_attempt_at = ?, "
                "lease_until = NULL WHERE id = ?",
                (error, next_attempt_at, outbox_id),
            )

    async def record_failed(self, outbox_id: int, error: str, now: float) -> None:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE outbound SET state = 'failed', error = ?, status_at = ?, "
                "lease_until = NULL WHERE id = ?",
                (error, now, outbox_id),
            )

    async def record_status(self, status: MessageStatus, body: bytes, now: float) -> bool:
        uuid = str(status.message_uuid)
        usage = status.usage
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO statuses (message_uuid, status, body, received_at) "
                "VALUES (?, ?, ?, ?)",
                (uuid, status.status, body.decode("utf-8", "replace"), now),
            )
            cursor = await db.execute(
                "UPDATE outbound SET status = ?, status_at = ?, "
                "price = COALESCE(?, price), currency = COALESCE(?, currency) "
                "WHERE message_uuid = ?",
                (
                    status.status,
                    now,
                    usage.price if usage else None,
                    usage.currency if usage else None,
                    uuid,
                ),
            )
            return cursor.rowcount > 0

    async def broadcast(self, broadcast_id: str) -> list[OutboxRecord]:
        async with self._db.execute(
            "SELECT id, broadcast_id, recipient, state, attempts, message_uuid, error, status, "
            "body FROM outbound WHERE broadcast_id = ? ORDER BY id",
            (broadcast_id,),
        ) as cursor:
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
                text=OutboundMessage.model_validate_json(row["body"]).summary(),
            )
            for row in rows
        ]

    async def groups(self) -> list[tuple[str, tuple[str, ...]]]:
        async with self._db.execute(
            "SELECT key, members FROM groups ORDER BY updated_at DESC, created_at DESC"
        ) as cursor:
            rows = await cursor.fetchall()
        return [(row["key"], tuple(json.loads(row["members"]))) for row in rows]

    async def conversation(self, group_key: str) -> list[ThreadEntry]:
        entries: list[ThreadEntry] = []
        async with self._db.execute(
            "SELECT body, received_at, state FROM inbound WHERE group_key = ?", (group_key,)
        ) as cursor:
            async for row in cursor:
                message = InboundMessage.model_validate_json(row["body"])
                others = (message.to, *message.participants)
                entries.append(
                    ThreadEntry(
                        row["received_at"], message.sender, others, message.body_text, row["state"]
                    )
                )
        async with self._db.execute(
            "SELECT body, created_at, state, status FROM outbound WHERE group_key = ?", (group_key,)
        ) as cursor:
            async for row in cursor:
                sent = OutboundMessage.model_validate_json(row["body"])
                entries.append(
                    ThreadEntry(
                        row["created_at"],
                        sent.from_,
                        (sent.to,),
                        sent.summary(),
                        row["status"] or row["state"],
                    )
                )
        return sorted(entries, key=lambda e: e.at)

    async def next_due(self) -> float | None:
        # Only the head of each member's queue can be due: the messages behind it wait for it.
        async with self._db.execute(
            """
            SELECT MIN(o.next_attempt_at) FROM outbound o
            WHERE o.state = 'pending' AND o.id IN (
                SELECT MIN(id) FROM outbound
                WHERE state IN ('pending', 'sending') GROUP BY group_key, recipient
            )
            """
        ) as cursor:
            row = await cursor.fetchone()
        return float(row[0]) if row and row[0] is not None else None


async def _ensure_group(
    db: aiosqlite.Connection, group_key: str, members: Sequence[str], now: float
) -> None:
    await db.execute(
        "INSERT OR IGNORE INTO groups (key, members, created_at, updated_at) VALUES (?, ?, ?, ?)",
        (group_key, json.dumps(list(members)), now, now),
    )


async def _insert_outbound(
    db: aiosqlite.Connection, outbound: Sequence[OutboxEntry], now: float
) -> None:
    # OR IGNORE: a broadcast planned again (after a crash before the inbound row was marked
    # done) finds its messages already queued and adds none twice.
    await db.executemany(
        "INSERT OR IGNORE INTO outbound (broadcast_id, inbound_uuid, group_key, recipient, body, "
        "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                entry.broadcast_id,
                entry.inbound_uuid,
                entry.group_key,
                entry.message.to,
                json.dumps(entry.message.to_api()),
                now,
                now,
            )
            for entry in outbound
        ],
    )
