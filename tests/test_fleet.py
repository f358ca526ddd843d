"""A fleet: three `groupbot run` processes on one PostgreSQL database, webhooks spread over
them like a load balancer would, one of them SIGKILLed halfway through."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.cli_support import (
    environment,
    free_port,
    post_signed,
    vonage,
    wait_healthy,
    write_config,
)
from tests.conftest import inbound, merge
from tests.fakes import FakeMessagesApi
from tests.postgres import TemporaryPostgres

GROUPS = 50
PER_GROUP = 20  # 1,000 webhooks
RATE = 100  # the account's limit, for the whole fleet
ECHO = {"name": "echo", "keywords": ["ping"], "handler": "echo"}
API_LAG_SECONDS = 0.1  # how late the fake API may read a request already sent to it


def group(n: int) -> list[str]:
    return [f"1202555{n:04d}", f"1303555{n:04d}", f"1404555{n:04d}"]


async def start(config: Path, tmp_path: Path, n: int) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    log = tmp_path / f"run-{n}.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", "--config", str(config), "--port", str(port),
            cwd=tmp_path, env=environment(), stdout=output, stderr=output,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    await wait_healthy(process, url, log)
    return process, url


@dataclass(frozen=True)
class Sent:
    to: str
    text: str
    participants: list[str]
    at: float  # when the API answered it
    arrived: float  # when the request reached the API


@pytest.fixture
async def api(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[str]:
    """The fake Messages API in its own process; its URL."""
    public = tmp_path / "public.pem"
    public.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fake_api_process", str(port), str(public),
        cwd=tmp_path, env=environment(),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url + "/recorded") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                assert process.returncode is None, "the fake API did not start"
                await asyncio.sleep(0.05)
    yield url
    process.terminate()
    await process.wait()


async def sent(api: str, count: int, within: float) -> list[Sent]:
    """Poll the fake API until `count` different messages were accepted (or the time is up);
    every request accepted, repeats included."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(api + "/recorded") as response:
                rows = await response.json()
            unique = {(r["body"]["to"], r["body"]["text"]) for r in rows}
            if len(unique) >= count or time.monotonic() > deadline:
                return [
                    Sent(
                        r["body"]["to"],
                        r["body"]["text"],
                        r["body"]["mms"]["participants"],
                        r["at"],
                        r["arrived"],
                    )
                    for r in rows
                ]
            await asyncio.sleep(0.2)


async def test_a_fleet_loses_nothing_keeps_order_and_the_rate_when_one_process_dies(
    tmp_path: Path, postgres: TemporaryPostgres, api: str, private_pem: str
) -> None:
    fake = FakeMessagesApi()
    fake.url = api
    config = write_config(
        tmp_path,
        merge(
            vonage(fake, private_pem),
            {
                "storage": {"url": postgres.create_database()},
                "routes": [ECHO],
                "plugins": ["tests.plugins"],
                "provider": {"rate_limit_per_second": RATE},
                "log": {"level": "warning"},
            },
        ),
    )
    processes = [await start(config, tmp_path, n) for n in range(3)]
    urls = [url for _, url in processes]
    alive = set(urls)
    turn = itertools.cycle(urls)
    posted = 0
    killed_at = float("inf")

    async def deliver(session: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        # Round-robin like a load balancer; a process that is gone is passed over, and a
        # webhook without a 200 is sent again (as Vonage does) to the next one.
        while True:
            url = next(turn)
            if url not in alive:
                continue
            try:
                async with post_signed(session, url + "/webhooks/inbound", body) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass

    async def converse(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal posted, killed_at
        members = group(n)
        for k in range(PER_GROUP):
            # One group's messages in turn: each is stored before the next is sent.
            await deliver(
                session,
                inbound(members[k % 3], f"ping {n}.{k}", members[: k % 3] + members[k % 3 + 1 :]),
            )
            posted += 1
            if posted == GROUPS * PER_GROUP // 2 and killed_at == float("inf"):
                victim, url = processes[1]
                alive.discard(url)
                killed_at = time.monotonic()
                victim.send_signal(signal.SIGKILL)

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(converse(session, n) for n in range(GROUPS)))

    total = GROUPS * PER_GROUP * 3
    try:
        accepted = await sent(api, total, within=120)
    finally:
        for process, _ in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            await process.wait()

    received: dict[str, list[str]] = defaultdict(list)
    for message in accepted:
        received[message.to].append(message.text)
        n = int(message.text.split()[2].split(".")[0])
        assert sorted([message.to, *message.participants]) == sorted(group(n))
    # Every member got every answer of its group ...
    for n in range(GROUPS):
        expected = [f"echo: ping {n}.{k}" for k in range(PER_GROUP)]
        for member in group(n):
            firsts = list(dict.fromkeys(received[member]))
            assert firsts == expected, (member, firsts)  # ... in order
    # ... and twice only where the killed process had sent it and died before recording so.
    copies = Counter((m.to, m.text) for m in accepted)
    doubled = {key for key, count in copies.items() if count > 1}
    assert len(doubled) <= 32  # at most one outbox's worth of sends in flight
    for key in doubled:
        # By arrival, not answer, and with a margin for the API's own loop: a request the
        # killed process wrote just before it died can be read a moment after.
        first = min(m.arrived for m in accepted if (m.to, m.text) == key)
        assert first <= killed_at + API_LAG_SECONDS
    # The account's rate held for the fleet as a whole. The API's clock is its own event
    # loop's: on a loaded machine it can stall and then time several requests at once, which
    # crowds a one-second window without any send having left early. Five-second windows
    # are not fooled by that; one-second windows get a margin for it.
    arrivals = sorted(m.at for m in accepted)

    def busiest(seconds: float) -> int:
        return max(bisect.bisect_left(arrivals, at + seconds) - i for i, at in enumerate(arrivals))

    assert busiest(5.0) <= 5 * RATE
    assert busiest(1.0) <= RATE * 1.2
