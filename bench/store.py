"""The SQLite store alone: what a webhook's whole path costs it, against plain sqlite3.

Run with `python bench/store.py [--n 5000]` (inside the project's venv). Not a test: it
prints figures. Pinned to one core when the machine has more.

- groupbot: the store's own calls, as the bot makes them, 32 webhooks at a time: store the
  webhook (taken at once), complete it with 3 answers (taken at once), record the 3 sends.
  Each call is a unit of a group-committed transaction. On uvloop, with the garbage
  collector settled, as `groupbot run` has them; the CPU time includes this script's own
  asyncio driver (tasks, a semaphore), about 45 µs a webhook.
- baseline: the same rows written to the same schema by plain sqlite3 on one thread, 32
  webhooks a step: insert the webhooks (with their groups and tokens) and commit; mark them
  done and insert their answers and commit; mark the answers sent and commit. What a
  durable store of this schema must write at the least, with no claims, order checks,
  savepoints, event loop or thread.

For each: webhooks a second, CPU time a webhook (the process, user and system), and write
calls and kilobytes written a webhook (`/proc/self/io`: the WAL, checkpoints, temporary
files).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bot import broadcast
from bot.cli import settle_gc
from bot.context import Reply
from bot.groups import Group
from bot.models import OutboundMessage
from bot.store import Take, entries, open_store

BOT = "11234567890"
CONCURRENCY = 32
WARM_UP = 300
BODY = json.dumps({"channel": "mms", "text": "ping " * 20}).encode()


@dataclass(frozen=True)
class Figures:
    system: str
    per_second: float
    cpu_us: float
    writes: float
    kilobytes: float


def group_of(i: int) -> Group:
    return Group((f"1202{i:07d}", f"1303{i:07d}", f"1404{i:07d}"))


def answers(group: Group) -> list[OutboundMessage]:
    return broadcast.plan(Reply("pong " * 10), group, bot_number=BOT)


def io_counters() -> dict[str, int]:
    lines = Path("/proc/self/io").read_text().splitlines()
    return {key: int(value) for key, value in (line.split(": ") for line in lines)}


async def measure(system: str, n: int, run: Callable[[range], Awaitable[None]]) -> Figures:
    await run(range(WARM_UP))
    io, started, usage = io_counters(), time.perf_counter(), resource.getrusage(0)
    await run(range(WARM_UP, WARM_UP + n))
    seconds = time.perf_counter() - started
    after, ended = io_counters(), resource.getrusage(0)
    cpu = ended.ru_utime - usage.ru_utime + ended.ru_stime - usage.ru_stime
    return Figures(
        system,
        per_second=n / seconds,
        cpu_us=cpu / n * 1e6,
        writes=(after["syscw"] - io["syscw"]) / n,
        kilobytes=(after["wchar"] - io["wchar"]) / n / 1024,
    )


async def groupbot(folder: Path, n: int) -> Figures:
    store = await open_store(f"sqlite:///{folder / 'groupbot.db'}", root=folder)
    places = asyncio.Semaphore(CONCURRENCY)

    async def webhook(i: int) -> None:
        async with places:
            group, message_uuid = group_of(i), str(uuid.uuid4())
            accepted = await store.accept_inbound(
                message_uuid, group.key, group.members, BODY, time.time(),
                jti=str(uuid.uuid4()), take=Take(1, 60.0),
            )  # fmt: skip
            assert accepted.item is not None
            queued = entries(message_uuid, group.key, answers(group), inbound_uuid=message_uuid)
            taken = await store.complete_inbound(
                accepted.item, now=time.time(), route="ping", outbound=queued, state=None,
                take=Take(len(queued), 60.0),
            )  # fmt: skip
            await asyncio.gather(
                *(store.record_sent(item, str(uuid.uuid4()), time.time()) for item in taken)
            )

    async def run(webhooks: range) -> None:
        await asyncio.gather(*(webhook(i) for i in webhooks))

    try:
        return await measure("groupbot", n, run)
    finally:
        await store.close()


async def baseline(folder: Path, n: int) -> Figures:
    path = folder / "baseline.db"
    await (await open_store(f"sqlite:///{path}", root=folder)).close()  # the same schema
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = FULL", "temp_store = MEMORY"):
        db.execute(f"PRAGMA {pragma}")

    def step(webhooks: range) -> None:
        now, rows = time.time(), []
        db.execute("BEGIN IMMEDIATE")
        for i in webhooks:
            group, message_uuid = group_of(i), str(uuid.uuid4())
            db.execute(
                "INSERT INTO webhook_tokens (jti, seen_at) VALUES (?, ?)", (str(uuid.uuid4()), now)
            )
            db.execute(
                "INSERT INTO groups (key, members, created_at, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at",
                (group.key, json.dumps(group.members), now, now),
            )
            db.execute(
                "INSERT INTO inbound (message_uuid, group_key, body, received_at, state) "
                "VALUES (?, ?, ?, ?, 'processing')",
                (message_uuid, group.key, BODY, now),
            )
            rows.append((group, message_uuid))
        db.execute("COMMIT")
        sent = []
        db.execute("BEGIN IMMEDIATE")
        for group, message_uuid in rows:
            db.execute(
                "UPDATE inbound SET state = 'done', processed_at = ? WHERE message_uuid = ?",
                (now, message_uuid),
            )
            for k, message in enumerate(answers(group)):
                cursor = db.execute(
                    "INSERT INTO outbound (broadcast_id, inbound_uuid, group_key, recipient, "
                    "client_ref, body, state, next_attempt_at, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'sending', ?, ?)",
                    (message_uuid, message_uuid, group.key, message.to,
                     f"{message_uuid}/{k}", message.api_json.decode(), now, now),
                )  # fmt: skip
                sent.append(cursor.lastrowid)
        db.execute("COMMIT")
        db.execute("BEGIN IMMEDIATE")
        for row_id in sent:
            db.execute(
                "UPDATE outbound SET state = 'sent', message_uuid = ?, sent_at = ? WHERE id = ?",
                (str(uuid.uuid4()), now, row_id),
            )
        db.execute("COMMIT")

    async def run(webhooks: range) -> None:
        for start in range(webhooks.start, webhooks.stop, CONCURRENCY):
            step(range(start, min(start + CONCURRENCY, webhooks.stop)))

    try:
        return await measure("baseline", n, run)
    finally:
        db.close()


async def main(n: int) -> int:
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    settle_gc()
    with tempfile.TemporaryDirectory() as folder:
        results = [await baseline(Path(folder), n), await groupbot(Path(folder), n)]
        problems = [
            f"{system}: {sent} answers recorded sent, expected {3 * (WARM_UP + n)}"
            for system in ("baseline", "groupbot")
            if (sent := sent_answers(Path(folder) / f"{system}.db")) != 3 * (WARM_UP + n)
        ]
    print(f"N={n} webhooks, {CONCURRENCY} at a time, one core")
    print(f"{'system':<10}{'webhooks/s':>12}{'CPU µs':>9}{'writes':>9}{'KB written':>12}")
    for r in results:
        print(
            f"{r.system:<10}{r.per_second:>12.0f}{r.cpu_us:>9.0f}{r.writes:>9.1f}"
            f"{r.kilobytes:>12.1f}"
        )
    base, ours = results
    print(f"CPU a webhook, groupbot / baseline: {ours.cpu_us / base.cpu_us:.2f}")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


def sent_answers(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbound WHERE state = 'sent'").fetchone()[0])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="webhooks measured (after a warm-up)")
    sys.exit(uvloop.run(main(parser.parse_args().n)))
