"""The PostgreSQL store's inbox: webhooks stored once, claimed per group in order by any
process of the fleet, completed atomically with their answers, state and consent."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from bot.exceptions import Replayed
from bot.store import (
    Accepted,
    InboundRecord,
    InboxItem,
    LeaseLost,
    OutboxEntry,
    OutboxItem,
    Take,
)
from bot.store.common import group_state, taken_inbound
from bot.store.postgres_base import (
    CHANNEL,
    PostgresBase,
    _insert_outbound,
    _opted_out,
    _set_consent,
)


class InboxQueries(PostgresBase):
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
        early: Callable[[Accepted], None] | None = None,  # each call commits alone: not told
    ) -> Accepted:
        async with self._transaction() as conn:
            if jti is not None:
                await self._prune_tokens(conn, now)
            # The token and the group's row in one round trip. The row is locked until the
            # commit, so nothing of the group is stored or completed meanwhile.
            group = await conn.fetchrow(
                """
                WITH token AS (
                    INSERT INTO webhook_tokens (jti, seen_at) SELECT $4, $3
                    WHERE $4::text IS NOT NULL ON CONFLICT DO NOTHING RETURNING 1
                )
                INSERT INTO groups (key, members, created_at, updated_at)
                VALUES ($1, $2, $3, $3)
                ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at
                RETURNING state, (SELECT count(*) FROM token) AS fresh
                """,
                group_key,
                json.dumps(list(members)),
                now,
                jti,
            )
            assert group is not None
            if jti is not None and not group["fresh"]:
                raise Replayed(f"token {jti} was used before")
            # Taken at once only when nothing of its group is still open: its order holds.
            # Else stored pending, and the fleet told.
            row = await conn.fetchrow(
                """
                INSERT INTO inbound (message_uuid, group_key, body, received_at, state,
                    lease_until, owner, attempts)
                SELECT $1, $2, $3, $4,
                    CASE WHEN taking.now THEN 'processing' ELSE 'pending' END,
                    CASE WHEN taking.now THEN $6::float8 END,
                    CASE WHEN taking.now THEN $7::text END,
                    CASE WHEN taking.now THEN 1 ELSE 0 END
                FROM (SELECT $5::bool AND NOT EXISTS (
                    SELECT 1 FROM inbound WHERE group_key = $2
                    AND state IN ('pending', 'processing')
                ) AS now) AS taking
                ON CONFLICT (message_uuid) DO NOTHING
                RETURNING state,
                    CASE WHEN state = 'pending' THEN pg_notify($8, 'inbox')::text END AS told,
                    ARRAY(SELECT number FROM opt_outs WHERE number = ANY($9)) AS stopped
                """,
                message_uuid,
                group_key,
                body,
                now,
                take is not None,
                None if take is None else now + take.lease_seconds,
                self.owner,
                CHANNEL,
                list(members),
            )
            if row is None:
                return Accepted(new=False)
            if row["state"] != "processing":
                return Accepted(new=True)
            stopped = frozenset(row["stopped"])  # who of the group sent STOP, for the handler
            item = taken_inbound(
                message_uuid, group_key, members, group["state"], body, now, stopped
            )
            return Accepted(new=True, item=item)

    async def claim_inbound(
        self, limit: int, now: float, lease_seconds: float, max_attempts: int
    ) -> list[InboxItem]:
        async with self._transaction() as conn:
            # A message whose processing died with its process max_attempts times is poison:
            # set it aside, so that the rest of its group goes on.
            await conn.execute(
                "UPDATE inbound SET state = 'failed', lease_until = NULL, processed_at = $1, "
                "error = 'gave up after ' || attempts || ' attempts that did not finish' "
                "WHERE state = 'processing' AND lease_until < $1 AND attempts >= $2",
                now,
                max_attempts,
            )
            # The head of each group: its oldest open message. Only a head whose group has
            # nothing in progress may be taken; the state is checked again on the locked row
            # (READ COMMITTED re-reads a row another process changed since the snapshot).
            rows = await conn.fetch(
                """
                WITH heads AS (
                    SELECT DISTINCT ON (group_key) seq FROM inbound
                    WHERE state IN ('pending', 'processing') ORDER BY group_key, seq
                )
                SELECT i.seq FROM inbound i
                WHERE i.seq IN (SELECT seq FROM heads)
                  AND (i.state = 'pending' OR (i.state = 'processing' AND i.lease_until < $1))
                ORDER BY i.seq LIMIT $2
                FOR UPDATE OF i SKIP LOCKED
                """,
                now,
                limit,
            )
            if not rows:
                return []
            claimed = await conn.fetch(
                """
                UPDATE inbound i SET state = 'processing', lease_until = $1, owner = $2,
                    attempts = i.attempts + 1
                FROM groups g
                WHERE i.seq = ANY($3) AND g.key = i.group_key
                RETURNING i.seq, i.message_uuid, i.group_key, g.members, g.state, i.body,
                    i.attempts, i.received_at
                """,
                now + lease_seconds,
                self.owner,
                [row["seq"] for row in rows],
            )
            members = {row["seq"]: tuple(json.loads(row["members"])) for row in claimed}
            stopped = await _opted_out(conn, [m for group in members.values() for m in group])
        return [
            InboxItem(
                message_uuid=row["message_uuid"],
                group_key=row["group_key"],
                members=members[row["seq"]],
                state=group_state(row["state"]),
                body=bytes(row["body"]),
                attempts=row["attempts"],
                opted_out=stopped & set(members[row["seq"]]),
                received_at=row["received_at"],
            )
            for row in sorted(claimed, key=lambda row: row["seq"])
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
        take: Take | None = None,
    ) -> list[OutboxItem]:
        async with self._transaction() as conn:
            # The group's row first, its state saved and the row locked until the commit, as
            # enqueue locks it: outbound ids of one group are given in the order they commit,
            # so no member's later message is claimed first. (An UPDATE that changes no key
            # takes FOR NO KEY UPDATE, which conflicts with the locks that order relies on:
            # the upserts of accept and enqueue, and another completion.)
            await conn.execute(
                "UPDATE groups SET state = COALESCE($1, state), "
                "updated_at = CASE WHEN $1::text IS NULL THEN updated_at ELSE $2 END "
                "WHERE key = $3",
                state,
                now,
                item.group_key,
            )
            # Fenced by the attempt: if our lease ran out and another claim took the message
            # over, this outcome is stale and nothing of it is written. In the same round
            # trip, what is open in its members' queues (see _insert_outbound); and, if the
            # group's next message waits behind this one, the fleet is told that it may go
            # (on commit). The group's row, locked above, keeps one from being stored unseen
            # meanwhile: accept locks it too, and then finds this one done.
            row = await conn.fetchrow(
                """
                WITH done AS (
                    UPDATE inbound SET state = $1, route = $2, error = $3, processed_at = $4,
                        lease_until = NULL
                    WHERE message_uuid = $5 AND state = 'processing' AND attempts = $6
                    RETURNING group_key
                )
                SELECT EXISTS (SELECT 1 FROM done) AS done, open.groups, open.recipients,
                    (SELECT pg_notify($9, 'inbox') FROM inbound n
                     WHERE n.group_key = (SELECT group_key FROM done) AND n.state = 'pending'
                     LIMIT 1) AS told
                FROM (
                    SELECT array_agg(group_key) AS groups, array_agg(recipient) AS recipients
                    FROM outbound WHERE $7 AND group_key = ANY($8)
                    AND state IN ('pending', 'sending')
                ) AS open
                """,
                "failed" if error else "done",
                route,
                error,
                now,
                item.message_uuid,
                item.attempts,
                take is not None,
                sorted({entry.group_key for entry in outbound}),
                CHANNEL,
            )
            assert row is not None
            if not row["done"]:
                raise LeaseLost(f"inbound {item.message_uuid} was claimed again")
            busy = set(zip(row["groups"] or (), row["recipients"] or (), strict=True))
            taken = await _insert_outbound(
                conn,
                outbound,
                now,
                take=take,
                owner=self.owner,
                origin_at=item.received_at,
                busy=busy,
            )
            if consent is not None:
                number, subscribed = consent
                await _set_consent(conn, number, subscribed, now, source="keyword")
        return taken

    async def opted_out(self, numbers: Sequence[str]) -> frozenset[str]:
        async with self._connection() as conn:
            return await _opted_out(conn, numbers)

    async def load_state(self, group_key: str) -> dict[str, Any]:
        async with self._connection() as conn:
            text = await conn.fetchval("SELECT state FROM groups WHERE key = $1", group_key)
        return group_state(text) if text is not None else {}

    async def inbound(self, message_uuid: str) -> InboundRecord | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT message_uuid, group_key, state, route, error, attempts FROM inbound "
                "WHERE message_uuid = $1",
                message_uuid,
            )
        return None if row is None else InboundRecord(**dict(row))
