"""Backpressure, over real HTTP: a webhook waits for a place in a busy inbox before its 200,
goes straight to processing once it has one, and after the longest hold is stored anyway and
answered later from the store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from bot import backlog, webhooks
from bot.store import open_store
from tests import plugins
from tests.conftest import Harness, inbound
from tests.postgres import TemporaryPostgres
from tests.test_end_to_end import SEED, StartBot, config_with, inbound_state, processed
from tests.test_workers import until

OTHERS = ["12025550111", "12025550112"]
HELD = 0.3  # long enough for a held webhook to be seen still waiting


async def busy_bot(start_bot: StartBot, gate: asyncio.Event) -> tuple[Harness, dict[str, Any]]:
    """A bot whose inbox has one place, taken by a message whose handler waits on `gate`."""
    plugins.gate = gate
    bot = await start_bot(config_with({"name": "slow", "keywords": ["wait"], "handler": "slow"}))
    bot.runtime.inbox.concurrency = 1
    first = inbound(SEED[0], "please wait", SEED[1:])
    assert (await bot.post_inbound(first)).status == 200
    return bot, first


async def test_the_places_are_the_stores(start_bot: StartBot, postgres: TemporaryPostgres) -> None:
    # SQLite commits together what arrives while it writes: more in flight, cheaper commits.
    # PostgreSQL's units each wait for a pooled connection: more in flight only waits longer.
    on_sqlite = await start_bot(config_with())
    assert (on_sqlite.runtime.inbox.concurrency, on_sqlite.runtime.outbox.concurrency) == (
        128,
        256,
    )
    on_postgres = await start_bot(config_with(storage={"url": postgres.create_database()}))
    assert (on_postgres.runtime.inbox.concurrency, on_postgres.runtime.outbox.concurrency) == (
        32,
        64,
    )


async def test_a_webhook_waits_for_a_place_and_is_then_processed_at_once(
    start_bot: StartBot,
) -> None:
    gate = asyncio.Event()
    bot, first = await busy_bot(start_bot, gate)
    second = inbound(OTHERS[0], "please wait", OTHERS[1:])

    answer = asyncio.create_task(bot.post_inbound(second))
    done, _ = await asyncio.wait({answer}, timeout=HELD)

    assert not done  # held: the only place is busy
    assert inbound_state(bot, str(second["message_uuid"])) is None  # not stored yet
    gate.set()
    assert (await answer).status == 200
    await processed(bot, str(first["message_uuid"]))
    await processed(bot, str(second["message_uuid"]))
    accepted = await bot.api.wait_for_accepted(5)
    assert {r.body["to"] for r in accepted} == {*SEED, *OTHERS}


async def test_a_webhook_held_longest_is_stored_and_answered_later(
    start_bot: StartBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backlog, "MAX_HOLD_SECONDS", HELD)
    monkeypatch.setattr(webhooks, "MAX_HOLD_SECONDS", HELD)
    gate = asyncio.Event()
    bot, _ = await busy_bot(start_bot, gate)
    second = inbound(OTHERS[0], "please wait", OTHERS[1:])

    started = time.monotonic()
    response = await asyncio.wait_for(bot.post_inbound(second), 5.0)

    assert response.status == 200  # never refused, only held
    assert HELD <= time.monotonic() - started < HELD + 1.0  # the longest hold, not 2 s
    assert inbound_state(bot, str(second["message_uuid"])) == ("pending", None, None)
    gate.set()
    assert (await processed(bot, str(second["message_uuid"])))[0] == "done"
    accepted = await bot.api.wait_for_accepted(5)
    assert {r.body["to"] for r in accepted} == {*SEED, *OTHERS}


async def test_the_backlog_is_sampled_only_while_webhooks_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backlog, "QUIET_SECONDS", 0.1)
    store = await open_store("sqlite:///bot.db", root=tmp_path)
    samples: list[float] = []
    counted = store.waiting

    async def waiting(now: float) -> dict[str, int]:
        samples.append(now)
        return await counted(now)

    monkeypatch.setattr(store, "waiting", waiting)
    sampler = backlog.Backlog(store)
    sampler.start()
    try:
        assert await sampler.admit() == backlog.MAX_HOLD_SECONDS  # a webhook: room at once
        await until(lambda: len(samples) >= 2)  # sampled while they arrive
        await until(lambda: not sampler._arriving.is_set())  # then quiet
        quiet = len(samples)
        await asyncio.sleep(HELD)  # idle: the time under test, not a synchronisation
        assert len(samples) == quiet

        await sampler.admit()
        await until(lambda: len(samples) > quiet)  # sampling again
    finally:
        await sampler.stop()
        await store.close()
