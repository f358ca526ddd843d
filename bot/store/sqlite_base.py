"""The SQLite store's connection: opening and migrating, transactions, claims' owners,
webhook tokens, and the row helpers the queries share.

WAL with `synchronous=FULL`, so a row is on disk when its write returns: the webhook's 200
is only sent after that. One connection, used by one thread of its own: each unit of work
(a method of the store) is a plain function that runs there in one hop, all its statements
together, instead of one round trip to the thread per statement.

Group commit: units that arrive while a commit is on its way to the disk share the next
`BEGIN IMMEDIATE` transaction, each in a savepoint of its own (unless its only write is its
last statement, all-or-nothing by itself), and one fsync makes them all durable. A unit that
fails is rolled back alone (to its savepoint, or by SQLite with its one statement); a commit
that fails fails every unit in it, and none of them is written. `BEGIN IMMEDIATE` also
serialises writers across processes (`groupbot send` beside a running bot).

A unit may also be told `early`: what it returned, as soon as it has run, while its commit
is still to come. The work that starts from it (a webhook's handler) then overlaps that
commit instead of waiting for it, and what that work writes joins the next one; its caller
still learns of the unit's fate, and returns, only once the commit is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar, cast

from bot.exceptions import Replayed
from bot.ratelimit import LocalSlots
from bot.store import OutboxEntry, OutboxItem, Places, Take
from bot.store.common import (
    OUTBOUND_COLUMNS,
    TOKEN_KEEP_SECONDS,
    TOKEN_PRUNE_EVERY,
    dead_owners,
    heads,
    outbound_rows,
    taken_item,
    this_process,
)
from bot.store.schema import SQLITE_MIGRATIONS

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]

WAL_PAGES_BETWEEN_CHECKPOINTS = 10_000  # of 4 KB: SQLite's default is 1,000 (see connect)
BUSY_SECONDS = 10  # how long a write waits for another process's transaction to end


class SqliteBase:
    # A commit carries the units that arrived while the last one was being written, so the
    # more work may be in flight, the more each carries and the less each message costs.
    # Under load, 32 and 64 places ran out first: a commit carried 24 units of work, 56 with
    # these, for 17 % less CPU a message (bench/RESULTS.md).
    places = Places(inbox=128, outbox=256)

    def __init__(self, db: sqlite3.Connection, path: Path, thread: ThreadPoolExecutor) -> None:
        self._db = db
        self.path = path
        self._thread = thread
        self._tx = _Transaction()  # used by the thread only
        # Reads go through a connection and thread of their own: WAL lets them run beside the
        # writer, and they only ever see committed rows.
        self._reader: sqlite3.Connection | None = None
        self._reader_thread = ThreadPoolExecutor(1, thread_name_prefix="groupbot-sqlite-read")
        self._queued: list[_Unit] = []  # not yet in the thread
        self._open: list[_Unit] = []  # run (or to run) in the thread, not yet committed
        self._last_commit: asyncio.Future[None] | None = None
        self._committing = False
        self._closed = False
        self._tokens_seen = 0
        self.owner = this_process()  # who holds a claim; see release_orphans
        self._slots = LocalSlots()
        self._notify: Callable[[str], None] = lambda queue: None  # see listen

    @classmethod
    async def open(cls, path: Path) -> Self:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_private(path)
        thread = ThreadPoolExecutor(1, thread_name_prefix="groupbot-sqlite")

        def connect() -> sqlite3.Connection:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            _enter_wal(db)
            for pragma in (
                "PRAGMA synchronous = FULL",
                f"PRAGMA busy_timeout = {BUSY_SECONDS * 1000}",
                "PRAGMA foreign_keys = ON",
                # Each unit's savepoint keeps the pages it changes in a sub-journal, to roll
                # back to; past 64 KB a transaction's sub-journal went to a temporary file,
                # half the store's write calls. In memory it never does. (Only a savepoint's
                # rollback reads it: the WAL alone makes a commit durable.)
                "PRAGMA temp_store = MEMORY",
                # A checkpoint copies each page changed since the last one from the WAL into
                # the database, and syncs the database. At SQLite's default (every 1,000 pages
                # of WAL, 4 MB) the pages every webhook touches (the queues' indexes) were
                # copied again and again, 18 times a second at 2,000 webhooks a second, each
                # time inside a commit that everyone in it waited for. Every 10,000 pages
                # (the WAL file is then up to 40 MB): a quarter fewer bytes written.
                f"PRAGMA wal_autocheckpoint = {WAL_PAGES_BETWEEN_CHECKPOINTS}",
            ):
                db.execute(pragma)
            return db

        loop = asyncio.get_running_loop()
        db = await loop.run_in_executor(thread, connect)
        store = cls(db, path, thread)
        await store._unit(_migrate)

        def connect_reader() -> sqlite3.Connection:
            reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            reader.row_factory = sqlite3.Row
            reader.execute(f"PRAGMA busy_timeout = {BUSY_SECONDS * 1000}")
            reader.execute("PRAGMA query_only = ON")
            return reader

        store._reader = await loop.run_in_executor(store._reader_thread, connect_reader)
        return store

    async def schema_version(self) -> int:
        return await self._read(lambda db: int(db.execute("PRAGMA user_version").fetchone()[0]))

    async def _unit(
        self,
        work: Work[T],
        *,
        one_write: bool = False,
        early: Callable[[T], None] | None = None,
    ) -> T:
        """Run `work` as one all-or-nothing unit; return once it is committed. `one_write`:
        its only write is its last statement, which is all-or-nothing by itself, so it needs
        no savepoint of its own (two statements fewer). `early`: told (on the loop) what
        `work` returned once it has run without error, before the commit; if the commit then
        fails, this still raises."""
        if self._closed:
            raise sqlite3.ProgrammingError("the store is closed")
        loop = asyncio.get_running_loop()
        unit = _Unit(work, loop.create_future(), savepoint=not one_write, early=early)
        self._queued.append(unit)
        if len(self._queued) == 1:
            # After this tick: the units queued meanwhile go to the thread in one job.
            loop.call_soon(self._flush)
        return cast(T, await unit.done)

    def _flush(self) -> None:
        """Hand the queued units to the thread, then (unless one is under way) the commit."""
        queued, self._queued = self._queued, []
        if queued:
            early = [unit for unit in queued if unit.early is not None]
            tell = _teller(asyncio.get_running_loop(), early) if early else None
            try:
                # Each unit's outcome is kept on it, and told once the commit is known.
                self._thread.submit(_run_units, self._db, queued, self._tx, tell)
            except RuntimeError as exc:  # the thread is gone: the store was closed
                for unit in queued:
                    if not unit.done.done():
                        unit.done.set_exception(exc)
                return
            self._open.extend(queued)
        if not self._committing:
            self._commit_open()

    def _commit_open(self) -> None:
        if self._committing:
            return  # the next one starts when this one ends
        if self._queued:
            self._flush()  # its units first (the thread runs jobs in order); it commits
            return
        if not self._open:
            return
        batch, self._open, self._committing = self._open, [], True
        commit = asyncio.get_running_loop().run_in_executor(
            self._thread, _commit, self._db, self._tx
        )
        self._last_commit = commit

        def committed(job: asyncio.Future[None]) -> None:
            self._committing = False
            failed = job.exception()
            for unit in batch:
                if unit.done.cancelled():
                    continue
                if unit.failure is not None:
                    unit.done.set_exception(unit.failure)
                elif failed is not None:
                    unit.done.set_exception(failed)
                else:
                    unit.done.set_result(unit.value)
            if self._open:  # units arrived during the commit: the next one
                self._commit_open()

        commit.add_done_callback(committed)

    async def _read(self, work: Work[T]) -> T:
        """Run `work` (reads only) on the reading connection: committed rows only."""
        if self._reader is None or self._closed:
            raise sqlite3.ProgrammingError("the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_thread, work, self._reader)

    async def release_orphans(self) -> int:
        """Free at once the claims of this host's processes that are gone (killed, crashed),
        instead of waiting for their leases to run out; return how many were freed."""

        def release(db: sqlite3.Connection) -> int:
            owners = [
                row[0]
                for table in ("inbound", "outbound")
                for row in db.execute(
                    f"SELECT DISTINCT owner FROM {table} "  # noqa: S608 - fixed table names
                    "WHERE state IN ('processing', 'sending') AND owner IS NOT NULL"
                )
            ]
            freed = 0
            for table, state in (("inbound", "processing"), ("outbound", "sending")):
                for owner in dead_owners(owners):
                    freed += db.execute(
                        f"UPDATE {table} SET lease_until = 0 "  # noqa: S608 - fixed names
                        "WHERE state = ? AND owner = ?",
                        (state, owner),
                    ).rowcount
            return freed

        return await self._unit(release)

    def _remember_jti(self, db: sqlite3.Connection, jti: str | None, now: float) -> None:
        """Record a webhook token's jti in the caller's unit; Replayed if seen before.

        Recorded with what it admits, so a webhook that fails to store (and is retried by
        Vonage) leaves no trace that would refuse the retry.
        """
        if jti is None:
            return
        self._tokens_seen += 1
        if self._tokens_seen % TOKEN_PRUNE_EVERY == 0:
            db.execute("DELETE FROM webhook_tokens WHERE seen_at < ?", (now - TOKEN_KEEP_SECONDS,))
        cursor = db.execute(
            "INSERT INTO webhook_tokens (jti, seen_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (jti, now),
        )
        if cursor.rowcount != 1:
            raise Replayed(f"token {jti} was used before")

    def listen(self, on_notify: Callable[[str], None]) -> None:
        """Tell `on_notify` when a message that waited behind another may go now. (Other
        processes on the same file are not heard: their work is found at the poll.)"""
        self._notify = on_notify

    async def reserve_send(self, key: str, interval_seconds: float, count: int = 1) -> float:
        return await self._slots.reserve(key, interval_seconds, count)

    async def ping(self) -> None:
        await self._read(lambda db: db.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Units queued before the close (even in this same tick) are committed first.
        while self._queued or self._open or self._committing:
            self._commit_open()
            assert self._last_commit is not None
            # wait(), not the future itself: it always yields, so that the commit's own
            # callback (which ends `_committing`) runs first; its units were told of errors.
            await asyncio.wait({self._last_commit})
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._db.close)
        self._thread.shutdown(wait=True)
        if self._reader is not None:
            await loop.run_in_executor(self._reader_thread, self._reader.close)
        self._reader_thread.shutdown(wait=True)


class _Unit:
    """A unit of work, and (set by the thread) what it returned or raised."""

    __slots__ = ("done", "early", "failure", "savepoint", "value", "work")

    def __init__(
        self,
        work: Work[Any],
        done: asyncio.Future[Any],
        *,
        savepoint: bool,
        early: Callable[[Any], None] | None = None,
    ) -> None:
        self.work = work
        self.done = done  # told once the unit's transaction is committed (or not)
        self.savepoint = savepoint
        self.early = early  # told what it returned as soon as it has run
        self.value: Any = None
        self.failure: BaseException | None = None


class _Transaction:
    """What the thread knows of the open transaction: whether SQLite rolled all of it back
    (some errors, a full disk among them, end the transaction, not only the unit's
    savepoint). Then every unit of the batch, those that ran before included, has failed."""

    def __init__(self) -> None:
        self.lost: BaseException | None = None


def _run_units(
    db: sqlite3.Connection,
    units: list[_Unit],
    tx: _Transaction,
    tell: Callable[[], None] | None,
) -> None:
    """Each unit in the open transaction (in a savepoint of its own unless it needs none),
    then `tell` the loop those to be told early, unless the transaction is lost already (its
    commit will fail: no work should start from it); never raises."""
    for unit in units:
        try:
            unit.value = _in_transaction(db, unit.work, tx, savepoint=unit.savepoint)
        except Exception as exc:
            unit.failure = exc
    if tell is not None and tx.lost is None:
        tell()


def _teller(loop: asyncio.AbstractEventLoop, units: list[_Unit]) -> Callable[[], None]:
    """What the thread calls once `units` have run: on the loop, each that ran without error
    is told what it returned (unless its caller has gone, or its commit is already known)."""

    def tell_each() -> None:
        for unit in units:
            if unit.failure is not None or unit.done.done():
                continue
            assert unit.early is not None
            try:
                unit.early(unit.value)
            except Exception as exc:  # the caller's own bug: the others are still told
                loop.call_exception_handler({"message": "early callback failed", "exception": exc})

    def tell() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: no one waits to be told
            loop.call_soon_threadsafe(tell_each)

    return tell


def _in_transaction(
    db: sqlite3.Connection, work: Work[T], tx: _Transaction, *, savepoint: bool
) -> T:
    if not db.in_transaction:
        db.execute("BEGIN IMMEDIATE")
    if savepoint:
        db.execute("SAVEPOINT unit")
    changes = db.total_changes
    try:
        value = work(db)
    except BaseException as exc:
        if not db.in_transaction:
            if tx.lost is None:
                tx.lost = exc  # SQLite rolled the whole transaction back
        elif savepoint:
            db.execute("ROLLBACK TO unit")
            db.execute("RELEASE unit")
        elif db.total_changes != changes and tx.lost is None:
            # Not the one write failing (SQLite undoes that), but something after it: with
            # no savepoint to roll back to, the whole batch goes, rather than keep a write
            # whose caller is told it failed.
            tx.lost = exc
        raise
    if savepoint:
        db.execute("RELEASE unit")
    return value


def _commit(db: sqlite3.Connection, tx: _Transaction) -> None:
    lost, tx.lost = tx.lost, None
    if lost is not None:
        if db.in_transaction:
            db.execute("ROLLBACK")  # units that began again after the loss go with it
        raise sqlite3.OperationalError(f"the transaction was rolled back: {lost}")
    if not db.in_transaction:
        return  # every unit of the batch failed to begin
    try:
        db.execute("COMMIT")
    except sqlite3.Error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _migrate(db: sqlite3.Connection) -> None:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    for number, script in enumerate(SQLITE_MIGRATIONS[version:], start=version + 1):
        for statement in filter(str.strip, script.split(";")):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")


def _opted_out(db: sqlite3.Connection, numbers: Sequence[str]) -> frozenset[str]:
    unique = sorted(set(numbers))
    if not unique:
        return frozenset()
    rows = db.execute(
        f"SELECT number FROM opt_outs WHERE number IN ({', '.join('?' * len(unique))})",  # noqa: S608
        unique,
    )
    return frozenset(row[0] for row in rows)


def _set_consent(
    db: sqlite3.Connection, number: str, subscribed: bool, now: float, *, source: str
) -> None:
    if subscribed:
        db.execute("DELETE FROM opt_outs WHERE number = ?", (number,))
        return
    db.execute(
        "INSERT INTO opt_outs (number, opted_out_at, source) VALUES (?, ?, ?) "
        "ON CONFLICT (number) DO NOTHING",
        (number, now, source),
    )
    # Nothing more to a number after its STOP: what was queued for it before is dropped now
    # (its confirmation, queued in this same unit, still goes).
    db.execute(
        "UPDATE outbound SET state = 'failed', finished_at = ?, lease_until = NULL, "
        "error = 'recipient opted out (STOP)' "
        "WHERE recipient = ? AND state = 'pending' AND created_at < ?",
        (now, number, now),
    )


def _touch_group(db: sqlite3.Connection, group_key: str, members: Sequence[str], now: float) -> str:
    """Create or touch the group's row; return its state (JSON)."""
    row = db.execute(
        "INSERT INTO groups (key, members, created_at, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at RETURNING state",
        (group_key, json.dumps(list(members)), now, now),
    ).fetchone()
    return str(row[0])


def _enter_wal(db: sqlite3.Connection) -> None:
    """Switch to WAL (a no-op once the file is in it). Processes opening a new file at the
    same moment all try the switch, and SQLite refuses all but the first at once, calling no
    busy handler ("database is locked"): the others try again until it is done."""
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(0.005)  # on the store's own thread, before anything else runs there


def _create_private(path: Path) -> None:
    """Create the database file, if it is new, readable by its owner alone: it holds customers'
    numbers and messages. SQLite gives its `-wal` and `-shm` files the same permissions."""
    try:  # resolved: a link to a file yet to be made is followed, as SQLite will follow it
        descriptor = os.open(path.resolve(), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)  # an empty file is an empty database


def _insert_outbound(
    db: sqlite3.Connection,
    outbound: Sequence[OutboxEntry],
    now: float,
    *,
    take: Take | None = None,
    owner: str = "",
    origin_at: float | None = None,
) -> list[OutboxItem]:
    """Queue `outbound`; with `take`, claim for `owner` the entries next in line (see heads)
    and return them."""
    taken: set[int] = set()
    if take is not None and outbound:
        groups = sorted({entry.group_key for entry in outbound})
        busy = db.execute(
            "SELECT group_key, recipient FROM outbound INDEXED BY outbound_open "  # noqa: S608
            f"WHERE group_key IN ({', '.join('?' * len(groups))}) "
            "AND state IN ('pending', 'sending')",
            groups,
        ).fetchall()
        taken = heads(outbound, {(row[0], row[1]) for row in busy}, take.limit)
    rows = outbound_rows(outbound, now, taken=taken, take=take, owner=owner)
    insert = f"INSERT INTO outbound ({OUTBOUND_COLUMNS}) VALUES ({', '.join('?' * 12)})"  # noqa: S608
    if not taken:
        db.executemany(insert, rows)
        return []
    items: list[OutboxItem] = []
    for n, (entry, row) in enumerate(zip(outbound, rows, strict=True)):
        row_id = db.execute(insert, row).lastrowid
        if n in taken:
            assert row_id is not None
            items.append(taken_item(entry, row_id, now, now if origin_at is None else origin_at))
    return items
