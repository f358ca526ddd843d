"""The default store: one SQLite file, used from a thread of its own.

Put together from the connection (sqlite_base: transactions, durability, claims' owners),
the inbox's queries (sqlite_inbox) and the outbox's (sqlite_outbox); the conversation views
the simulator's pages read are here.
"""

from __future__ import annotations

import json
import sqlite3

from bot.store import ThreadEntry
from bot.store.common import process_identity, thread
from bot.store.sqlite_inbox import InboxQueries
from bot.store.sqlite_outbox import OutboxQueries

__all__ = ["SqliteStore", "process_identity"]


class SqliteStore(InboxQueries, OutboxQueries):
    """The Store protocol on SQLite; what the simulator's pages read is here too."""

    async def groups(self) -> list[tuple[str, tuple[str, ...]]]:
        rows = await self._read(
            lambda db: db.execute(
                "SELECT key, members FROM groups ORDER BY updated_at DESC"
            ).fetchall()
        )
        return [(row["key"], tuple(json.loads(row["members"]))) for row in rows]

    async def conversation(self, group_key: str) -> list[ThreadEntry]:
        def rows(db: sqlite3.Connection) -> list[ThreadEntry]:
            inbound = db.execute(
                "SELECT body, received_at, state FROM inbound WHERE group_key = ?", (group_key,)
            ).fetchall()
            outbound = db.execute(
                "SELECT body, created_at, state, status FROM outbound WHERE group_key = ?",
                (group_key,),
            ).fetchall()
            return thread(inbound, outbound)

        return await self._read(rows)
