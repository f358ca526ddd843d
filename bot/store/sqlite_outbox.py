"""The SQLite store's outbox: messages queued, claimed one per member in order, their
outcomes fenced by attempt, delivery statuses, and what they cost."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from bot.models import MessageStatus, OutboundMessage
from bot.store import LeaseLost, OutboxEntry, OutboxItem, OutboxRecord, UsageRow
from bot.store.common import UNSENT, opted_out_rejection, outbox_record, status_reason, usage_rows
from bot.store.sqlite_base import SqliteBase, _insert_outbound, _set_consent, _touch_group

# Pending items, said so that SQLite reads them from the queue's partial index (it uses one
# only when the query repeats the index's condition) instead of the whole table.
_INBOUND_PENDING = "state IN ('pending', 'processing') AND state = 'pending'"
_OUTBOUND_PENDING = "state IN ('pending', 'sending') AND state = 'pending'"

# Later statuses never give way to earlier ones arriving late (Vonage does not order them).
_STATUS_RANK = "CASE WHEN {0} IS NULL THEN 0 WHEN {0} = 'submitted' THEN 1 ELSE 2 END"


class OutboxQueries(SqliteBase):
    async def enqueue(
        self, outbound: Sequence[OutboxEntry], members: Sequence[str], now: float
    ) -> None:
        def enqueue(db: sqlite3.Connection) -> None:
            for group_key in {entry.group_key for entry in outbound}:
                _touch_group(db, group_key, members, now)
            _insert_outbound(db, outbound, now)

        await self._unit(enqueue)

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
        def claim(db: sqlite3.Connection) -> list[OutboxItem]:
            # Sends whose process died mid-attempt max_attempts times, or past their ttl, are
            # given up. Then the oldest messages that head their member's queue (nothing
            # older still open).
            db.execute(
                "UPDATE outbound SET state = 'failed', lease_until = NULL, finished_at = ?, "
                "error = 'gave up after ' || attempts || ' attempts that did not finish' "
                "WHERE state = 'sending' AND lease_until < ? "
                "AND (attempts >= ? OR created_at < ?)",
                (now, now, max_attempts, created_before),
            )
            rows = db.execute(
                """
                SELECT o.id, o.broadcast_id, o.group_key, o.body, o.attempts, o.created_at,
                    COALESCE(i.received_at, o.created_at) AS origin_at
                FROM outbound o INDEXED BY outbound_queue
                LEFT JOIN inbound i ON i.message_uuid = o.inbound_uuid
                WHERE o.state IN ('pending', 'sending')
                AND ((o.state = 'pending' AND o.next_attempt_at <= ?)
                     OR (o.state = 'sending' AND o.lease_until < ?))
                AND (? IS NULL OR o.broadcast_id = ?)
                AND NOT EXISTS (
                    SELECT 1 FROM outbound e WHERE e.group_key = o.group_key
                    AND e.recipient = o.recipient AND e.id < o.id
                    AND e.state IN ('pending', 'sending')
                )
                ORDER BY o.id LIMIT ?
                """,
                (now, now, broadcast_id, broadcast_id, limit),
            ).fetchall()
            db.executemany(
                "UPDATE outbound SET state = 'sending', lease_until = ?, owner = ?, "
                "attempts = attempts + 1 WHERE id = ?",
                [(now + lease_seconds, self.owner, row["id"]) for row in rows],
            )
            return [
                OutboxItem(
                    id=row["id"],
                    broadcast_id=row["broadcast_id"],
                    group_key=row["group_key"],
                    message=OutboundMessage.model_validate_json(row["body"]),
                    attempts=row["attempts"] + 1,
                    created_at=row["created_at"],
                    origin_at=row["origin_at"],
                )
                for row in rows
            ]

        return await self._unit(claim)

    async def record_sent(self, item: OutboxItem, message_uuid: str | None, now: float) -> bool:
        return await self._finish_attempt(
            item,
            "state = 'sent', message_uuid = COALESCE(?, message_uuid), sent_at = ?, "
            "finished_at = ?, error = NULL",
            (message_uuid, now, now),
        )

    async def record_retry(
        self, item: OutboxItem, error: str, next_attempt_at: float, *, sent: bool = True
    ) -> None:
        await self._finish_attempt(
            item,
            "state = 'pending', error = ?, next_attempt_at = ?",
            (error, next_attempt_at),
            again=True,
            sent=sent,
        )

    async def record_failed(
        self, item: OutboxItem, error: str, now: float, *, sent: bool = True
    ) -> None:
        await self._finish_attempt(
            item, "state = 'failed', error = ?, finished_at = ?", (error, now), sent=sent
        )

    async def _finish_attempt(
        self,
        item: OutboxItem,
        assignments: str,
        values: tuple[object, ...],
        *,
        again: bool = False,
        sent: bool = True,
    ) -> bool:
        """Record an attempt's outcome (`again`: the message is to be retried; `sent=False`:
        no request was made, so the claim's attempt is not counted); True when its broadcast
        has nothing left to go."""
        assignments += "" if sent else UNSENT

        def finish(db: sqlite3.Connection) -> tuple[bool, bool]:
            # What else is open for the member, and in the broadcast; then the one write.
            member_open, broadcast_open = db.execute(
                "SELECT EXISTS (SELECT 1 FROM outbound INDEXED BY outbound_open "
                "WHERE group_key = ? AND recipient = ? AND state IN ('pending', 'sending') "
                "AND id <> ?), EXISTS (SELECT 1 FROM outbound WHERE broadcast_id = ? "
                "AND state IN ('pending', 'sending') AND id <> ?)",
                (item.group_key, item.message.to, item.id, item.broadcast_id, item.id),
            ).fetchone()
            # Fenced by the attempt, like complete_inbound: a stale outcome changes nothing.
            cursor = db.execute(
                f"UPDATE outbound SET {assignments}, lease_until = NULL "  # noqa: S608 - fixed SQL
                "WHERE id = ? AND state = 'sending' AND attempts = ?",
                (*values, item.id, item.attempts),
            )
            if cursor.rowcount != 1:
                raise LeaseLost(f"outbound {item.id} was claimed again")
            # Unless this one goes again (a retry, still at the head of the member's queue),
            # the member's next message, if one waits behind it, may be claimed now; and
            # the broadcast has ended when nothing of it is left to go.
            return not again and not broadcast_open, not again and bool(member_open)

        ended, behind = await self._unit(finish, one_write=True)
        if behind:
            self._notify("outbox")
        return ended

    async def record_status(
        self, status: MessageStatus, body: bytes, now: float, *, jti: str | None = None
    ) -> bool:
        uuid = str(status.message_uuid)
        usage = status.usage
        reason = status_reason(status)

        def record(db: sqlite3.Connection) -> bool:
            self._remember_jti(db, jti, now)
            db.execute(
                "INSERT INTO statuses (message_uuid, status, body, received_at) "
                "VALUES (?, ?, ?, ?)",
                (uuid, status.status, body.decode("utf-8", "replace"), now),
            )
            # The message is found by its client_ref, which the API puts in every status
            # (the spec's words), also when the status overtakes our record of the send.
            # A status without one is of no message of ours: it is kept in statuses only.
            cursor = db.execute(
                f"""
                UPDATE outbound SET
                    message_uuid = COALESCE(message_uuid, :uuid),
                    status = CASE WHEN {_STATUS_RANK.format(":status")}
                        >= {_STATUS_RANK.format("status")} THEN :status ELSE status END,
                    status_error = COALESCE(:reason, status_error),
                    status_at = :now,
                    price = COALESCE(:price, price),
                    currency = COALESCE(:currency, currency)
                WHERE client_ref = :ref
                """,  # noqa: S608 - fixed SQL
                {
                    "uuid": uuid,
                    "status": status.status,
                    "reason": reason,
                    "now": now,
                    "price": usage.price if usage else None,
                    "currency": usage.currency if usage else None,
                    "ref": status.client_ref,
                },
            )
            if opted_out_rejection(status):
                # The carrier says this number sent STOP (1240): never write to it again.
                _set_consent(db, status.to, False, now, source="status 1240")
            return cursor.rowcount > 0

        return await self._unit(record)

    async def broadcast(self, broadcast_id: str) -> list[OutboxRecord]:
        def records(db: sqlite3.Connection) -> list[OutboxRecord]:
            rows = db.execute(
                "SELECT id, broadcast_id, recipient, state, attempts, message_uuid, error, "
                "status, status_error, body FROM outbound WHERE broadcast_id = ? ORDER BY id",
                (broadcast_id,),
            )
            return [outbox_record(row) for row in rows]

        return await self._read(records)

    async def usage(self, since: float) -> list[UsageRow]:
        rows = await self._read(
            lambda db: db.execute(
                "SELECT date(sent_at, 'unixepoch') AS day, group_key, price, currency "
                "FROM outbound WHERE state = 'sent' AND sent_at >= ? ORDER BY day, group_key",
                (since,),
            ).fetchall()
        )
        return usage_rows(rows)

    async def queued_since(self, group_key: str, since: float) -> int:
        return await self._read(
            lambda db: int(
                db.execute(
                    "SELECT COUNT(*) FROM outbound WHERE group_key = ? AND created_at >= ? "
                    "AND state != 'failed'",
                    (group_key, since),
                ).fetchone()[0]
            )
        )

    async def depths(self) -> dict[str, int]:
        def count(db: sqlite3.Connection) -> dict[str, int]:
            inbox = db.execute(
                "SELECT COUNT(*) FROM inbound WHERE state IN ('pending', 'processing')"
            ).fetchone()[0]
            outbox = db.execute(
                "SELECT COUNT(*) FROM outbound WHERE state IN ('pending', 'sending')"
            ).fetchone()[0]
            return {"inbox": int(inbox), "outbox": int(outbox)}

        return await self._read(count)

    async def oldest(self, now: float) -> dict[str, float]:
        def oldest(db: sqlite3.Connection) -> dict[str, float]:
            found = {
                "inbox": db.execute(
                    f"SELECT MIN(received_at) FROM inbound WHERE {_INBOUND_PENDING}"  # noqa: S608
                ).fetchone()[0],
                "outbox": db.execute(
                    f"SELECT MIN(created_at) FROM outbound WHERE {_OUTBOUND_PENDING} "  # noqa: S608
                    "AND next_attempt_at <= ?",
                    (now,),
                ).fetchone()[0],
            }
            return {queue: float(at) for queue, at in found.items() if at is not None}

        return await self._read(oldest)

    async def waiting(self, now: float) -> dict[str, int]:
        def count(db: sqlite3.Connection) -> dict[str, int]:
            inbox = db.execute(
                f"SELECT COUNT(*) FROM inbound WHERE {_INBOUND_PENDING}"  # noqa: S608
            ).fetchone()[0]
            outbox = db.execute(
                f"SELECT COUNT(*) FROM outbound WHERE {_OUTBOUND_PENDING} "  # noqa: S608
                "AND next_attempt_at <= ?",
                (now,),
            ).fetchone()[0]
            return {"inbox": int(inbox), "outbox": int(outbox)}

        return await self._read(count)

    async def next_due(self) -> float | None:
        # Only the head of each member's queue can be due: the messages behind it wait for it.
        def due(db: sqlite3.Connection) -> float | None:
            row = db.execute(
                """
                SELECT MIN(o.next_attempt_at) FROM outbound o
                WHERE o.state = 'pending' AND o.id IN (
                    SELECT MIN(id) FROM outbound
                    WHERE state IN ('pending', 'sending') GROUP BY group_key, recipient
                )
                """
            ).fetchone()
            return float(row[0]) if row and row[0] is not None else None

        return await self._read(due)
