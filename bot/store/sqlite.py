"""The default store: one SQLite file through aiosqlite.

Put together from the connection (sqlite_base: transactions, durability, claims' owners),
the inbox's queries (sqlite_inbox) and the outbox's (sqlite_outbox); the conversation views
the simulator's pages read are here.
"""

from __future__ import annotations

import json

from bot.store import ThreadEntry
from bot.store.common import process_identity, thread
from bot.store.sqlite_inbox import InboxQueries
from bot.store.sqlite_outbox import OutboxQueries

__all__ = ["SqliteStore", "process_identity"]


class SqliteStore(InboxQueries, OutboxQueries):
    """The Store protocol on SQLite; what the simulator's pages read is here too."""

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
        return thread(inbound, outbound)
