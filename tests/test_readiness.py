"""`/readyz` follows the database: 503 while PostgreSQL is away, 200 once it is back, and a
webhook that arrives meanwhile is refused (so Vonage sends it again), not lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from tests.conftest import Harness, inbound
from tests.postgres import TemporaryPostgres

StartBot = Callable[..., Awaitable[Harness]]
MEMBERS = ["11234567891", "11234567892", "11234567893"]
ECHO = {"name": "echo", "keywords": ["ping"], "handler": "echo"}


@pytest.fixture
def own_postgres() -> Iterator[TemporaryPostgres]:
    """A server of this test's own: it is stopped and started again."""
    server = TemporaryPostgres().start()
    yield server
    server.remove()


async def ready(bot: Harness) -> int:
    response = await bot.client.get("/readyz")
    return response.status


async def until_status(bot: Harness, status: int, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while (seen := await ready(bot)) != status:
        assert time.monotonic() < deadline, f"/readyz stayed {seen}, expected {status}"
        await asyncio.sleep(0.1)


async def test_readiness_follows_the_database(
    start_bot: StartBot, own_postgres: TemporaryPostgres
) -> None:
    bot = await start_bot(
        {
            "storage": {"url": own_postgres.create_database()},
            "routes": [ECHO],
            "plugins": ["tests.plugins"],
        }
    )
    assert await ready(bot) == 200

    own_postgres.stop()
    await until_status(bot, 503)
    body = inbound(MEMBERS[0], "ping while away", MEMBERS[1:])
    response = await bot.post_inbound(body)
    assert response.status == 503  # not stored, so not acknowledged: Vonage retries it

    own_postgres.start()
    await until_status(bot, 200)
    response = await bot.post_inbound(body)  # Vonage's retry
    assert response.status == 200
    accepted = await bot.api.wait_for_accepted(3)
    assert {r.body["text"] for r in accepted} == {"echo: ping while away"}
