"""The store for a fleet: PostgreSQL through asyncpg.

Put together like the SQLite store: the connection (postgres_base: pool, migrations, claims'
owners, LISTEN/NOTIFY, the fleet's send rate), the inbox's queries and the outbox's; the
conversation views the simulator's pages read are here.
"""

from __future__ import annotations

import json

from bot.store import ThreadEntry
from bot.store.common import thread
from bot.store.postgres_inbox import InboxQueries
from bot.store.postgres_outbox import OutboxQueries

__all__ = ["PostgresStore"]


class PostgresStore(InboxQueries, OutboxQueries):
    """The Store protocol on PostgreSQL, for any number of processes on one database."""

    async def groups(self) -> list[tuple[str, tuple[str, ...]]]:
        async with self._connection() as conn:
            rows = await conn.fetch("SELECT key, members FROM groups ORDER BY updated_at DESC")
        return [(row["key"], tuple(json.loads(row["members"]))) for row in rows]

    async def conversation(self, group_key: str) -> list[ThreadEntry]:
        async with self._connection() as conn:
            inbound = await conn.fetch(
                "SELECT body, received_at, state FROM inbound WHERE group_key = $1", group_key
            )
            outbound = await conn.fetch(
                "SELECT body, created_at, state, status FROM outbound WHERE group_key = $1",
                group_key,
            )
        return thread(inbound, outbound)
