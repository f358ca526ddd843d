"""The PostgreSQL store's outbox: messages queued, claimed one per member in order by any
process of the fleet, their outcomes fenced by attempt, delivery statuses, and costs."""

from __future__ import annotations

from collections.abc import Sequence

from bot.models import MessageStatus, OutboundMessage
from bot.store import LeaseLost, OutboxEntry, OutboxItem, OutboxRecord, UsageRow
from bot.store.common import (
    UNSENT,
    opted_out_rejection,
    outbox_record,
    status_reason,
    usage_rows,
)
from bot.store.postgres_base import (
    CHANNEL,
    PostgresBase,
    _insert_outbound,
    _set_consent,
    _touch_group,
)

# Later statuses never give way to earlier ones arriving late (Vonage does not order them).
_STATUS_RANK = "CASE WHEN {0} IS NULL THEN 0 WHEN {0} = 'submitted' THEN 1 ELSE 2 END"


class OutboxQueries(PostgresBase):
    async def enqueue(
        self, outbound: Sequence[OutboxEntry], members: Sequence[str], now: float
    ) -> None:
        async with self._transaction() as conn:
            for group_key in sorted({entry.group_key for entry in outbound}):
                await _touch_group(conn, group_key, members, now)
            await _insert_outbound(conn, outbound, now)

    async def claim_outbound(
        self,
        limit: int,
        now: float,
        lease_seconds: float,
        max_attempts: int,
        *,
        broadcast_id: str | None = None,
        created_before: float = 0.0,
    ) -> list[OutboxItem]:
        async with self._transaction() as conn:
            # Sends whose process died mid-attempt max_attempts times, or past their ttl, are
            # given up.
            await conn.execute(
                "UPDATE outbound SET state = 'failed', lease_until = NULL, finished_at = $1, "
                "error = 'gave up after ' || attempts || ' attempts that did not finish' "
                "WHERE state = 'sending' AND lease_until < $1 "
                "AND (attempts >= $2 OR created_at < $3)",
                now,
                max_attempts,
                created_before,
            )
            # The head of each member's queue, as in claim_inbound: one message in flight per
            # member, in order, whichever process sends it.
            rows = await conn.fetch(
                """
                WITH heads AS (
                    SELECT DISTINCT ON (group_key, recipient) id FROM outbound
                    WHERE state IN ('pending', 'sending') ORDER BY group_key, recipient, id
                )
                SELECT o.id FROM outbound o
                WHERE o.id IN (SELECT id FROM heads)
                  AND ((o.state = 'pending' AND o.next_attempt_at <= $1)
                       OR (o.state = 'sending' AND o.lease_until < $1))
                  AND ($2::text IS NULL OR o.broadcast_id = $2)
                ORDER BY o.id LIMIT $3
                FOR UPDATE OF o SKIP LOCKED
                """,
                now,
                broadcast_id,
                limit,
            )
            if not rows:
                return []
            claimed = await conn.fetch(
                "UPDATE outbound o SET state = 'sending', lease_until = $1, owner = $2, "
                "attempts = o.attempts + 1 WHERE o.id = ANY($3) "
                "RETURNING o.id, o.broadcast_id, o.group_key, o.body, o.attempts, o.created_at, "
                "COALESCE((SELECT received_at FROM inbound WHERE message_uuid = o.inbound_uuid), "
                "o.created_at) AS origin_at",
                now + lease_seconds,
                self.owner,
                [row["id"] for row in rows],
            )
        return [
            OutboxItem(
                id=row["id"],
                broadcast_id=row["broadcast_id"],
                group_key=row["group_key"],
                message=OutboundMessage.model_validate_json(row["body"]),
                attempts=row["attempts"],
                created_at=row["created_at"],
                origin_at=row["origin_at"],
            )
            for row in sorted(claimed, key=lambda row: row["id"])
        ]

    async def record_sent(self, item: OutboxItem, message_uuid: str | None, now: float) -> bool:
        return await self._finish_attempt(
            item,
            "state = 'sent', message_uuid = COALESCE($3, message_uuid), sent_at = $4, "
            "finished_at = $4, error = NULL",
            (message_uuid, now),
        )

    async def record_retry(
        self, item: OutboxItem, error: str, next_attempt_at: float, *, sent: bool = True
    ) -> None:
        await self._finish_attempt(
            item,
            "state = 'pending', error = $3, next_attempt_at = $4",
            (error, next_attempt_at),
            sent=sent,
        )

    async def record_failed(
        self, item: OutboxItem, error: str, now: float, *, sent: bool = True
    ) -> None:
        await self._finish_attempt(
            item, "state = 'failed', error = $3, finished_at = $4", (error, now), sent=sent
        )

    async def _finish_attempt(
        self,
        item: OutboxItem,
        assignments: str,
        values: tuple[object, ...],
        *,
        sent: bool = True,
    ) -> bool:
        """Record an attempt's outcome (`sent=False`: no request was made, so the claim's
        attempt is not counted); True when its broadcast has nothing left to go."""
        assignments += "" if sent else UNSENT
        # One statement, its own transaction: one round trip. A broadcast's outcomes are
        # recorded one at a time in this process, so that of its last messages, sent
        # together by the process that took them, the last recorded sees the others. (Two
        # processes recording a broadcast's last two at the same instant may each miss the
        # other's: one observation of groupbot_webhook_to_last_member_seconds is lost.)
        async with self._finishing.hold(item.broadcast_id), self._connection() as conn:
            # Fenced by the attempt, like complete_inbound: a stale outcome changes nothing.
            # And: if the member has a message waiting behind this one, it may go now, and
            # the fleet is told (a retry is picked up when it is due); and whether the
            # broadcast has anything left to go (this row, if it is to be retried; the others
            # as they were before this update). A message queued behind this one by another
            # process while this statement runs is not seen here; whoever queued it told the
            # fleet, and a process whose claim came too early (this row still sending) finds
            # it at its next claim: at its poll (worker.poll_seconds, 1 s) at the latest.
            row = await conn.fetchrow(
                f"UPDATE outbound SET {assignments}, lease_until = NULL "  # noqa: S608 - fixed SQL
                "WHERE id = $1 AND state = 'sending' AND attempts = $2 "
                "RETURNING CASE WHEN state <> 'pending' AND EXISTS (SELECT 1 FROM outbound n "
                "WHERE n.group_key = outbound.group_key AND n.recipient = outbound.recipient "
                f"AND n.state = 'pending') THEN pg_notify(${len(values) + 3}, "
                "'outbox')::text END AS notified, (state = 'pending' OR EXISTS (SELECT 1 "
                "FROM outbound o WHERE o.broadcast_id = outbound.broadcast_id "
                "AND o.id <> outbound.id AND o.state IN ('pending', 'sending'))) AS left_to_go",
                item.id,
                item.attempts,
                *values,
                CHANNEL,
            )
        if row is None:
            raise LeaseLost(f"outbound {item.id} was claimed again")
        return not row["left_to_go"]

    async def record_status(
        self, status: MessageStatus, body: bytes, now: float, *, jti: str | None = None
    ) -> bool:
        uuid = str(status.message_uuid)
        usage = status.usage
        async with self._transaction() as conn:
            await self._remember_jti(conn, jti, now)
            await conn.execute(
                "INSERT INTO statuses (message_uuid, status, body, received_at) "
                "VALUES ($1, $2, $3, $4)",
                uuid,
                status.status,
                body.decode("utf-8", "replace"),
                now,
            )
            # The message is found by its client_ref, which the API puts in every status
            # (the spec's words), also when the status overtakes our record of the send.
            # A status without one is of no message of ours: it is kept in statuses only.
            matched = await conn.fetchval(
                f"""
                WITH updated AS (
                    UPDATE outbound SET
                        message_uuid = COALESCE(message_uuid, $1),
                        status = CASE WHEN {_STATUS_RANK.format("$2::text")}
                            >= {_STATUS_RANK.format("status")} THEN $2 ELSE status END,
                        status_error = COALESCE($3, status_error),
                        status_at = $4,
                        price = COALESCE($5, price),
                        currency = COALESCE($6, currency)
                    WHERE client_ref = $7
                    RETURNING 1
                )
                SELECT count(*) FROM updated
                """,  # noqa: S608 - fixed SQL
                uuid,
                status.status,
                status_reason(status),
                now,
                usage.price if usage else None,
                usage.currency if usage else None,
                status.client_ref,
            )
            if opted_out_rejection(status):
                # The carrier says this number sent STOP (1240): never write to it again.
                await _set_consent(conn, status.to, False, now, source="status 1240")
            return bool(matched)

    async def broadcast(self, broadcast_id: str) -> list[OutboxRecord]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT id, broadcast_id, recipient, state, attempts, message_uuid, error, "
                "status, status_error, body FROM outbound WHERE broadcast_id = $1 ORDER BY id",
                broadcast_id,
            )
        return [outbox_record(row) for row in rows]

    async def usage(self, since: float) -> list[UsageRow]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT to_char(to_timestamp(sent_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, "
                "group_key, price, currency FROM outbound WHERE state = 'sent' "
                "AND sent_at >= $1 ORDER BY day, group_key",
                since,
            )
        return usage_rows(rows)

    async def queued_since(self, group_key: str, since: float) -> int:
        async with self._connection() as conn:
            count = await conn.fetchval(
                "SELECT count(*) FROM outbound WHERE group_key = $1 AND created_at >= $2 "
                "AND state != 'failed'",
                group_key,
                since,
            )
        return int(count)

    async def depths(self) -> dict[str, int]:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM inbound WHERE state IN ('pending', 'processing')),"
                " (SELECT count(*) FROM outbound WHERE state IN ('pending', 'sending'))"
            )
        assert row is not None
        return {"inbox": int(row[0]), "outbox": int(row[1])}

    async def oldest(self, now: float) -> dict[str, float]:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT MIN(received_at) FROM inbound WHERE state = 'pending'),"
                " (SELECT MIN(created_at) FROM outbound WHERE state = 'pending'"
                " AND next_attempt_at <= $1)",
                now,
            )
        assert row is not None
        found = {"inbox": row[0], "outbox": row[1]}
        return {queue: float(at) for queue, at in found.items() if at is not None}

    async def waiting(self, now: float) -> dict[str, int]:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM inbound WHERE state = 'pending') AS inbox, "
                "(SELECT count(*) FROM outbound WHERE state = 'pending' "
                "AND next_attempt_at <= $1) AS outbox",
                now,
            )
        assert row is not None
        return {"inbox": int(row["inbox"]), "outbox": int(row["outbox"])}

    async def next_due(self) -> float | None:
        # Only the head of each member's queue can be due: the messages behind it wait for it.
        async with self._connection() as conn:
            due = await conn.fetchval(
                """
                SELECT MIN(o.next_attempt_at) FROM outbound o
                WHERE o.state = 'pending' AND o.id IN (
                    SELECT DISTINCT ON (group_key, recipient) id FROM outbound
                    WHERE state IN ('pending', 'sending') ORDER BY group_key, recipient, id
                )
                """
            )
        return float(due) if due is not None else None
