"""Crash safety and shutdown, for real: `groupbot run` as a process, SIGKILLed or SIGTERMed at
chosen points, then started again on the same SQLite file."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cli_support import (
    environment,
    free_port,
    post_signed,
    vonage,
    wait_healthy,
    write_config,
)
from tests.conftest import inbound, merge, until
from tests.fakes import FakeMessagesApi

MEMBERS = ["11234567891", "11234567892", "11234567893"]
STALL = {"name": "stall", "keywords": ["stall"], "handler": "stall"}


class Bot:
    def __init__(self, process: asyncio.subprocess.Process, url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    async def post(self, body: dict[str, Any]) -> int:
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            post_signed(session, self.url + "/webhooks/inbound", body) as response,
        ):
            return response.status

    async def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()


StartBot = Callable[..., Any]


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start `groupbot run` on a config; every process is killed at the end of the test."""
    started: list[asyncio.subprocess.Process] = []

    @asynccontextmanager
    async def start(config: Path, *, env: dict[str, str] | None = None) -> AsyncIterator[Bot]:
        port = free_port()
        log = tmp_path / f"run-{len(started)}.log"
        with log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "run", "--config", str(config), "--port", str(port),
                cwd=tmp_path, env={**environment(), **(env or {})}, stdout=output, stderr=output,
            )  # fmt: skip
        started.append(process)
        bot = Bot(process, f"http://127.0.0.1:{port}", log)
        await wait_healthy(process, bot.url, log)
        yield bot

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


def rows(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(sql, args).fetchall()


def config(tmp_path: Path, api: FakeMessagesApi, private_pem: str, **extra: Any) -> Path:
    base = {
        **vonage(api, private_pem),
        "routes": [STALL],
        "plugins": ["tests.plugins"],
        "handlers": {"timeout_seconds": 60},
    }
    return write_config(tmp_path, merge(base, extra))


async def test_killed_while_the_handler_runs_the_message_is_answered_after_restart(
    run: Callable[..., Any], tmp_path: Path, fake_api: FakeMessagesApi, private_pem: str
) -> None:
    path = config(tmp_path, fake_api, private_pem)
    db = tmp_path / "var" / "groupbot.db"
    body = inbound(MEMBERS[0], "stall", MEMBERS[1:])
    async with run(path, env={"GROUPBOT_TEST_STALL": "1"}) as first:
        assert await first.post(body) == 200
        await until(lambda: rows(db, "SELECT state FROM inbound") == [("processing",)], within=10)
        await first.kill()
    assert fake_api.attempts == []

    async with run(path):
        accepted = await fake_api.wait_for_accepted(3)

    assert sorted(r.body["to"] for r in accepted) == MEMBERS
    assert {r.body["text"] for r in accepted} == {"handled: stall"}
    assert rows(db, "SELECT state, attempts FROM inbound") == [("done", 2)]


async def test_killed_while_the_api_holds_the_sends_every_member_is_sent_after_restart(
    run: Callable[..., Any], tmp_path: Path, fake_api: FakeMessagesApi, private_pem: str
) -> None:
    path = config(tmp_path, fake_api, private_pem)
    db = tmp_path / "var" / "groupbot.db"
    for _ in MEMBERS:
        fake_api.respond(202, delay=120)  # held past the test: these answers never come
    async with run(path) as first:
        assert await first.post(inbound(MEMBERS[0], "stall", MEMBERS[1:])) == 200
        await fake_api.wait_for_arrived(3)
        await first.kill()
    assert rows(db, "SELECT DISTINCT state FROM outbound") == [("sending",)]

    async with run(path):
        accepted = await fake_api.wait_for_accepted(3)
        await until(
            lambda: rows(db, "SELECT DISTINCT state FROM outbound") == [("sent",)], within=10
        )

    assert sorted(r.body["to"] for r in accepted) == MEMBERS
    assert rows(db, "SELECT recipient, attempts FROM outbound ORDER BY recipient") == [
        (member, 2) for member in MEMBERS
    ]


async def test_sigterm_lets_in_flight_sends_finish_and_keeps_the_rest_for_the_next_start(
    run: Callable[..., Any], tmp_path: Path, fake_api: FakeMessagesApi, private_pem: str
) -> None:
    five = [*MEMBERS, "11234567894", "11234567895"]
    # Two sends a second: when SIGTERM comes, one send is in flight and most are queued.
    path = config(tmp_path, fake_api, private_pem, provider={"rate_limit_per_second": 2})
    db = tmp_path / "var" / "groupbot.db"
    fake_api.respond(202, delay=1.0)
    async with run(path) as first:
        assert await first.post(inbound(five[0], "stall", five[1:])) == 200
        await fake_api.wait_for_arrived(1)
        first.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.process.wait(), 20) == 0
    sent = rows(db, "SELECT COUNT(*) FROM outbound WHERE state = 'sent'")[0][0]
    assert len(fake_api.accepted) == sent >= 1  # the held send finished before the exit
    assert rows(db, "SELECT COUNT(*) FROM outbound WHERE state IN ('sending', 'failed')") == [(0,)]

    async with run(path):
        accepted = await fake_api.wait_for_accepted(5, within=15)

    assert sorted(r.body["to"] for r in accepted) == sorted(five)  # each member exactly once
