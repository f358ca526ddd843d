"""The PostgreSQL store's connection: the pool, migrations, transactions, claims' owners,
webhook tokens, the fleet's shared send rate, and the LISTEN connection that wakes workers.

Any number of processes share one database. A write returns once PostgreSQL has committed it
(with the server's `synchronous_commit`, durable by default), so a webhook's 200 still means
stored. Work is claimed with `FOR UPDATE SKIP LOCKED`: two processes never take one row, and
neither waits for the other's claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Self, TypeAlias

import asyncpg
import structlog

from bot.exceptions import Replayed
from bot.store import OutboxEntry, OutboxItem, Places, Take
from bot.store.common import (
    OUTBOUND_COLUMNS,
    TOKEN_KEEP_SECONDS,
    TOKEN_PRUNE_EVERY,
    KeyedLocks,
    dead_owners,
    heads,
    outbound_rows,
    taken_item,
    this_process,
)
from bot.store.schema import POSTGRES_MIGRATIONS

log = structlog.get_logger("groupbot.store")

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]

CHANNEL = "groupbot"  # NOTIFY payloads: "inbox" (a message stored), "outbox" (one queued)
MIGRATION_LOCK = 0x67726F7570626F74  # pg_advisory_xact_lock key: "groupbot" in ASCII
PING_SECONDS = 2.0
CONNECT_SECONDS = 5.0  # a database that does not answer is reported, not waited for
RECONNECT_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)  # the LISTEN connection's backoff when lost


async def _learn_array_types(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Run on each new connection of a warm pool: asyncpg asks the server, once a connection,
    what the array types a statement binds are (a query of the catalogue, 10 to 50 ms while a
    fleet starts), and the store binds float8[] and int[] (queuing a webhook's answers,
    `_insert_outbound`). Asked here, that is not paid by the first messages each connection
    carries."""
    await conn.fetchval(
        "SELECT cardinality($1::float8[]) + cardinality($2::int[])",
        [],
        [],
        timeout=CONNECT_SECONDS,  # a server that does not answer: reported, not waited for
    )


async def _keep_session(_: asyncpg.Connection[asyncpg.Record]) -> None:
    """What a connection given back to the pool needs reset: nothing. asyncpg's default
    (unlock advisory locks, close cursors, UNLISTEN, RESET ALL) costs a round trip a unit of
    work, and the store leaves none of those behind: its advisory locks are the
    transaction's own, it declares no cursor and sets nothing, and it listens on a
    connection of its own, outside the pool. asyncpg still rolls back a transaction left
    open. The rule that keeps this true: nothing may change a pooled connection's session
    (`SET`, a session advisory lock, `LISTEN`, a cursor or temporary table outliving its
    transaction), or it leaks to whoever takes the connection next."""


class PostgresBase:
    # Each unit is a transaction of its own on one of `storage.pool_size` connections: more
    # work in flight than they serve only waits longer for them (bench/RESULTS.md: with
    # SQLite's places, the same messages a second, and three times as long before the
    # members had their answers).
    places = Places(inbox=32, outbox=64)

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn
        self._tokens_seen = 0
        self._finishing = KeyedLocks()  # broadcasts whose outcomes are being recorded
        self._listener: asyncio.Task[None] | None = None
        self.owner = this_process()  # who holds a claim; see release_orphans

    @classmethod
    async def open(cls, dsn: str, *, pool_size: int = 10, warm: bool = False) -> Self:
        """`warm`: open all `pool_size` connections now and keep them (asyncpg reopens one
        that is lost), each ready for the store's statements, as a long-running process
        wants; else one, and more as work asks (a command)."""
        pool = await asyncpg.create_pool(
            dsn,
            min_size=pool_size if warm else 1,
            max_size=pool_size,
            timeout=CONNECT_SECONDS,
            reset=_keep_session,
            init=_learn_array_types if warm else None,
        )
        store = cls(pool, dsn)
        try:
            await store._migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    async def _migrate(self) -> None:
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            version = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            for number, script in enumerate(POSTGRES_MIGRATIONS[version:], start=version + 1):
                await conn.execute(script)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)
                log.info("schema_migrated", version=number)

    async def schema_version(self) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval("SELECT MAX(version) FROM schema_migrations"))

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Conn]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        """A connection outside any transaction: each statement is a transaction of its own."""
        async with self._pool.acquire() as conn:
            yield conn

    async def ping(self) -> None:
        async with asyncio.timeout(PING_SECONDS):
            await self._pool.fetchval("SELECT 1")

    def listen(self, on_notify: Callable[[str], None]) -> None:
        """Call `on_notify("inbox" | "outbox")` whenever any process of the fleet stores a
        message or queues one, and for both after every (re)connection, since what was
        notified while the connection was down is lost."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(on_notify), name="groupbot-listen")

    async def _listen(self, on_notify: Callable[[str], None]) -> None:
        failures = 0
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn, timeout=CONNECT_SECONDS)
            except Exception as exc:
                delay = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
                failures += 1
                log.warning("listen_failed", error=type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            try:
                conn.add_termination_listener(lambda _, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, lambda *args: on_notify(str(args[3])))
                on_notify("inbox")
                on_notify("outbox")
                await lost.wait()
                log.warning("listen_lost")
            except Exception as exc:  # whatever broke it, listen again (polling covers)
                log.warning("listen_failed", error=type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=1))
            await asyncio.sleep(RECONNECT_SECONDS[0])  # never a tight loop of reconnections

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        try:
            await asyncio.wait_for(self._pool.close(), PING_SECONDS)
        except TimeoutError:
            self._pool.terminate()  # the database is gone: do not wait for it

    async def release_orphans(self) -> int:
        """Free at once the claims of this host's processes that are gone (killed, crashed),
        instead of waiting for their leases to run out; return how many were freed."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT owner FROM inbound WHERE state = 'processing' "
                "UNION SELECT DISTINCT owner FROM outbound WHERE state = 'sending'"
            )
        dead = dead_owners(row["owner"] for row in rows if row["owner"])
        if not dead:
            return 0
        async with self._transaction() as conn:
            inbox = await conn.fetchval(
                "WITH freed AS (UPDATE inbound SET lease_until = 0 "
                "WHERE state = 'processing' AND owner = ANY($1) RETURNING 1) "
                "SELECT count(*) FROM freed",
                dead,
            )
            outbox = await conn.fetchval(
                "WITH freed AS (UPDATE outbound SET lease_until = 0 "
                "WHERE state = 'sending' AND owner = ANY($1) RETURNING 1) "
                "SELECT count(*) FROM freed",
                dead,
            )
            if inbox:
                await _notify(conn, "inbox")
            if outbox:
                await _notify(conn, "outbox")
        return int(inbox) + int(outbox)

    async def reserve_send(self, key: str, interval_seconds: float, count: int = 1) -> float:
        """Reserve the next `count` free send slots of `key` for the whole fleet, one every
        `interval_seconds`; return how many seconds from now the first begins (by the
        database's clock, so the processes' clocks need not agree)."""
        async with self._transaction() as conn:
            wait = await conn.fetchval(
                """
                WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS at)
                INSERT INTO send_slots AS s (key, next_at)
                SELECT $1, now.at + $2::float8 * $3::int FROM now
                ON CONFLICT (key) DO UPDATE
                    SET next_at = GREATEST(s.next_at, (SELECT at FROM now)) + $2::float8 * $3::int
                RETURNING s.next_at - $2::float8 * $3::int - (SELECT at FROM now)
                """,
                key,
                interval_seconds,
                count,
            )
        return max(0.0, float(wait))

    async def _remember_jti(self, conn: Conn, jti: str | None, now: float) -> None:
        """Record a webhook token's jti in the caller's transaction; Replayed if seen before."""
        if jti is None:
            return
        await self._prune_tokens(conn, now)
        stored = await conn.fetchval(
            "INSERT INTO webhook_tokens (jti, seen_at) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING true",
            jti,
            now,
        )
        if not stored:
            raise Replayed(f"token {jti} was used before")

    async def _prune_tokens(self, conn: Conn, now: float) -> None:
        """Once every TOKEN_PRUNE_EVERY tokens, forget those too old to be replayed."""
        self._tokens_seen += 1
        if self._tokens_seen % TOKEN_PRUNE_EVERY == 0:
            await conn.execute(
                "DELETE FROM webhook_tokens WHERE seen_at < $1", now - TOKEN_KEEP_SECONDS
            )


async def _notify(conn: Conn, what: str) -> None:
    # Delivered when the caller's transaction commits, and not at all if it rolls back.
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, what)


async def _opted_out(conn: Conn, numbers: Sequence[str]) -> frozenset[str]:
    if not numbers:
        return frozenset()
    rows = await conn.fetch(
        "SELECT number FROM opt_outs WHERE number = ANY($1)", sorted(set(numbers))
    )
    return frozenset(row["number"] for row in rows)


async def _set_consent(
    conn: Conn, number: str, subscribed: bool, now: float, *, source: str
) -> None:
    if subscribed:
        await conn.execute("DELETE FROM opt_outs WHERE number = $1", number)
        return
    await conn.execute(
        "INSERT INTO opt_outs (number, opted_out_at, source) VALUES ($1, $2, $3) "
        "ON CONFLICT (number) DO NOTHING",
        number,
        now,
        source,
    )
    # Nothing more to a number after its STOP: what was queued for it before is dropped now
    # (its confirmation, queued in this same transaction, still goes).
    await conn.execute(
        "UPDATE outbound SET state = 'failed', finished_at = $1, lease_until = NULL, "
        "error = 'recipient opted out (STOP)' "
        "WHERE recipient = $2 AND state = 'pending' AND created_at < $1",
        now,
        number,
    )


async def _touch_group(conn: Conn, group_key: str, members: Sequence[str], now: float) -> None:
    # Also locks the group's row until the caller commits: a group's messages get their
    # sequence numbers in the order they commit, so no claim sees a later one first.
    await conn.execute(
        "INSERT INTO groups (key, members, created_at, updated_at) VALUES ($1, $2, $3, $3) "
        "ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at",
        group_key,
        json.dumps(list(members)),
        now,
    )


async def _insert_outbound(
    conn: Conn,
    outbound: Sequence[OutboxEntry],
    now: float,
    *,
    take: Take | None = None,
    owner: str = "",
    origin_at: float | None = None,
    busy: set[tuple[str, str]] | None = None,
) -> list[OutboxItem]:
    """Queue `outbound`; with `take`, claim for `owner` the entries next in line (see heads)
    and return them. The caller holds the lock of every group concerned (see _touch_group),
    so what is open for a member cannot change under it; `busy`, the (group key, recipient)
    pairs open, when the caller read them under that lock already."""
    if not outbound:
        return []
    taken: set[int] = set()
    if take is not None:
        if busy is None:
            open_rows = await conn.fetch(
                "SELECT group_key, recipient FROM outbound WHERE group_key = ANY($1) "
                "AND state IN ('pending', 'sending')",
                sorted({entry.group_key for entry in outbound}),
            )
            busy = {(row[0], row[1]) for row in open_rows}
        taken = heads(outbound, busy, take.limit)
    rows = outbound_rows(outbound, now, taken=taken, take=take, owner=owner)
    if len(taken) < len(outbound):  # others of the fleet may claim the rest
        await _notify(conn, "outbox")
    if not taken:
        await conn.executemany(
            f"INSERT INTO outbound ({OUTBOUND_COLUMNS}) "  # noqa: S608 - fixed SQL
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            rows,
        )
        return []
    # One statement for all the rows; each id found again by its client_ref (unique).
    inserted = await conn.fetch(
        f"INSERT INTO outbound ({OUTBOUND_COLUMNS}) "  # noqa: S608 - fixed SQL
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
        "$6::text[], $7::float8[], $8::float8[], $9::text[], $10::float8[], $11::text[], "
        "$12::int[]) RETURNING id, client_ref",
        *(list(column) for column in zip(*rows, strict=True)),
    )
    ids = {row["client_ref"]: row["id"] for row in inserted}
    return [
        taken_item(
            entry, ids[entry.message.client_ref], now, now if origin_at is None else origin_at
        )
        for n, entry in enumerate(outbound)
        if n in taken
    ]
