"""The SQLite store's inbox: webhooks stored once, claimed per group in order, completed
atomically with their answers, the group's state and a number's consent."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from bot.store import (
    Accepted,
    InboundRecord,
    InboxItem,
    LeaseLost,
    OutboxEntry,
    OutboxItem,
    Take,
)
from bot.store.common import claim_values, group_state, taken_inbound
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
        take: Take | None = None,
        early: Callable[[Accepted], None] | None = None,
    ) -> Accepted:
        def accept(db: sqlite3.Connection) -> Accepted:
            self._remember_jti(db, jti, now)
            state = _touch_group(db, group_key, members, now)
            # Taken at once only when nothing of its group is still open: the group's order
            # holds, as it would for a claim.
            claim = take is not None and not _group_open(db, group_key)
            cursor = db.execute(
                "INSERT OR IGNORE INTO inbound (message_uuid, group_key, body, received_at, "
                "state, lease_until, owner, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message_uuid,
                    group_key,
                    body,
                    now,
                    *claim_values("processing", take if claim else None, now, self.owner),
                ),
            )
            if cursor.rowcount != 1:
                return Accepted(new=False)
            if not claim:
                return Accepted(new=True)
            stopped = _opted_out(db, members)
            item = taken_inbound(message_uuid, group_key, members, state, body, now, stopped)
            return Accepted(new=True, item=item)

        return await self._unit(accept, early=early)

    async def claim_inbound(
        self, limit: int, now: float, lease_seconds: float, max_attempts: int
    ) -> list[InboxItem]:
        def claim(db: sqlite3.Connection) -> list[InboxItem]:
            # A message whose processing died with its process max_attempts times is poison:
            # set it aside, so that the rest of its group goes on.
            db.execute(
                "UPDATE inbound SET state = 'failed', lease_until = NULL, processed_at = ?, "
                "error = 'gave up after ' || attempts || ' attempts that did not finish' "
                "WHERE state = 'processing' AND lease_until < ? AND attempts >= ?",
                (now, now, max_attempts),
            )
            # The oldest open messages that head their group (nothing older still open),
            # and are not in progress: reads as far as it must, not the whole queue.
            rows = db.execute(
                """
                SELECT i.message_uuid, i.group_key, g.members, g.state, i.body, i.attempts,
                    i.received_at
                FROM inbound i INDEXED BY inbound_queue JOIN groups g ON g.key = i.group_key
                WHERE i.state IN ('pending', 'processing')
                AND (i.state = 'pending' OR i.lease_until < ?)
                AND NOT EXISTS (
                    SELECT 1 FROM inbound e WHERE e.group_key = i.group_key AND e.seq < i.seq
                    AND e.state IN ('pending', 'processing')
                )
                ORDER BY i.seq LIMIT ?
                """,
                (now, limit),
            ).fetchall()
            db.executemany(
                "UPDATE inbound SET state = 'processing', lease_until = ?, owner = ?, "
                "attempts = attempts + 1 WHERE message_uuid = ?",
                [(now + lease_seconds, self.owner, row["message_uuid"]) for row in rows],
            )
            members = {row["message_uuid"]: tuple(json.loads(row["members"])) for row in rows}
            stopped = _opted_out(db, [m for group in members.values() for m in group])
            return [
                InboxItem(
                    message_uuid=row["message_uuid"],
                    group_key=row["group_key"],
                    members=members[row["message_uuid"]],
                    state=group_state(row["state"]),
                    body=bytes(row["body"]),
                    attempts=row["attempts"] + 1,
                    opted_out=stopped & set(members[row["message_uuid"]]),
                    received_at=row["received_at"],
                )
                for row in rows
            ]

        return await self._unit(claim)

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
        take: Take | None = None,
    ) -> list[OutboxItem]:
        def complete(db: sqlite3.Connection) -> tuple[list[OutboxItem], bool]:
            # Fenced by the attempt: if our lease ran out and another claim took the message
            # over, this outcome is stale and nothing of it is written. And by the row: a
            # message handled as it was stored (told early) whose commit then failed is a
            # new row when Vonage sends it again, with an attempt of its own.
            cursor = db.execute(
                "UPDATE inbound SET state = ?, route = ?, error = ?, processed_at = ?, "
                "lease_until = NULL WHERE message_uuid = ? AND state = 'processing' "
                "AND attempts = ? AND received_at = ?",
                (
                    "failed" if error else "done",
                    route,
                    error,
                    now,
                    item.message_uuid,
                    item.attempts,
                    item.received_at,
                ),
            )
            if cursor.rowcount != 1:
                raise LeaseLost(f"inbound {item.message_uuid} was claimed again")
            # The group's next message, if one waits behind this one, may be claimed now.
            behind = _group_open(db, item.group_key)
            taken = _insert_outbound(
                db, outbound, now, take=take, owner=self.owner, origin_at=item.received_at
            )
            if state is not None:
                db.execute(
                    "UPDATE groups SET state = ?, updated_at = ? WHERE key = ?",
                    (state, now, item.group_key),
                )
            if consent is not None:
                number, subscribed = consent
                _set_consent(db, number, subscribed, now, source="keyword")
            return taken, behind

        taken, behind = await self._unit(complete)
        if behind:
            self._notify("inbox")
        return taken

    async def opted_out(self, numbers: Sequence[str]) -> frozenset[str]:
        return await self._read(lambda db: _opted_out(db, numbers))

    async def load_state(self, group_key: str) -> dict[str, Any]:
        def load(db: sqlite3.Connection) -> dict[str, Any]:
            row = db.execute("SELECT state FROM groups WHERE key = ?", (group_key,)).fetchone()
            return group_state(row["state"]) if row else {}

        return await self._read(load)

    async def inbound(self, message_uuid: str) -> InboundRecord | None:
        def find(db: sqlite3.Connection) -> InboundRecord | None:
            row = db.execute(
                "SELECT message_uuid, group_key, state, route, error, attempts FROM inbound "
                "WHERE message_uuid = ?",
                (message_uuid,),
            ).fetchone()
            return None if row is None else InboundRecord(**dict(row))

        return await self._read(find)


def _group_open(db: sqlite3.Connection, group_key: str) -> bool:
    """Whether a message of the group is waiting or in progress."""
    return (
        db.execute(
            "SELECT 1 FROM inbound INDEXED BY inbound_open WHERE group_key = ? "
            "AND state IN ('pending', 'processing') LIMIT 1",
            (group_key,),
        ).fetchone()
        is not None
    )
