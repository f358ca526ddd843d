"""The SQLite store's inbox: webhooks stored once, claimed per group in order, completed
atomically with their answers, the group's state and a number's consent."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bot.store import (
    InboundRecord,
    InboxItem,
    LeaseLost,
    OutboxEntry,
)
from bot.store.common import group_state
from bot.store.sqlite_base import (
    SqliteBase,
    _insert_outbound,
    _opted_out,
    _set_consent,
    _touch_group,
)


class InboxQueries(SqliteBase):
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
                state=group_state(row["state"]),
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
        return group_state(row["state"]) if row else {}

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
