"""bot/outbox.py: the outbox worker sends stored messages through the real client and store,
to the scripted fake Messages API, and records each outcome."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

from bot import broadcast
from bot.client import MessagesClient
from bot.config import ProviderSettings
from bot.context import Reply
from bot.groups import Group
from bot.outbox import OutboxWorker
from bot.ratelimit import SendRate
from bot.retry import RetryPolicy
from bot.store import OutboxRecord, entries
from bot.store.sqlite import SqliteStore
from tests.conftest import APPLICATION_ID, BOT_NUMBER, DATA, ROOT, eventually
from tests.fakes import FakeMessagesApi

MEMBERS = ("11234567891", "11234567892", "11234567893")
FAST = RetryPolicy(base_seconds=0.01, max_delay_seconds=0.05)


def problem(name: str) -> dict[str, Any]:
    loaded = json.loads((DATA / "vonage" / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


class TimedApi(FakeMessagesApi):
    """The fake API, also noting when each request arrived and for whom."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.arrivals: list[tuple[float, str]] = []

    async def _messages(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.arrivals.append((time.time(), str(body["to"])))
        return await super()._messages(request)


@pytest.fixture
async def api(
    aiohttp_server: Callable[..., Awaitable[TestServer]], rsa_key: rsa.RSAPrivateKey
) -> TimedApi:
    fake = TimedApi(public_key=rsa_key.public_key(), application_id=APPLICATION_ID)
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "db.sqlite")
    yield opened
    await opened.close()


@pytest.fixture
async def client(api: TimedApi, private_pem: str) -> AsyncIterator[MessagesClient]:
    settings = ProviderSettings(
        verify_signatures=False,  # the client alone: no webhooks here
        kind="vonage",
        api_url=api.url,
        application_id=APPLICATION_ID,
        private_key=private_pem,
    )
    made = MessagesClient(settings, root=ROOT)
    yield made
    await made.close()


def make_worker(
    store: SqliteStore,
    client: MessagesClient,
    *,
    poll_seconds: float,
    policy: RetryPolicy | None = None,
) -> OutboxWorker:
    return OutboxWorker(
        store,
        client,
        rate=SendRate(20),  # 50 ms apart: a 429 is back before the next send starts
        sender=BOT_NUMBER,
        request_timeout_seconds=10,
        policy=policy,
        poll_seconds=poll_seconds,
    )


@dataclass
class Workers:
    """Starts outbox workers on the test's store and client; stops them after the test."""

    store: SqliteStore
    client: MessagesClient
    running: list[OutboxWorker] = field(default_factory=list)

    def start(self, policy: RetryPolicy = FAST) -> OutboxWorker:
        worker = make_worker(self.store, self.client, policy=policy, poll_seconds=0.05)
        worker.start()
        self.running.append(worker)
        return worker

    async def stop(self) -> None:
        for worker in self.running:
            await worker.stop(1)
            assert not worker.alive
        self.running.clear()


@pytest.fixture
async def workers(store: SqliteStore, client: MessagesClient) -> AsyncIterator[Workers]:
    started = Workers(store, client)
    yield started
    await started.stop()


async def queue(
    store: SqliteStore, text: str = "Hello from Vonage", broadcast_id: str = "b-test"
) -> str:
    """Store a broadcast of `text` to the three members; return its id."""
    group = Group.of(MEMBERS, bot_number=BOT_NUMBER)
    messages = broadcast.plan(Reply(text), group, bot_number=BOT_NUMBER)
    await store.enqueue(entries(broadcast_id, group.key, messages), group.members, time.time())
    return broadcast_id


async def settled(store: SqliteStore, broadcast_id: str, within: float = 5.0) -> list[OutboxRecord]:
    """The broadcast's records once every one of them is sent or failed."""

    async def done() -> bool:
        records = await store.broadcast(broadcast_id)
        return bool(records) and all(r.state in ("sent", "failed") for r in records)

    await eventually(done, within=within)
    return await store.broadcast(broadcast_id)


def by_recipient(records: list[OutboxRecord]) -> dict[str, OutboxRecord]:
    return {r.recipient: r for r in records}


def recipients_with(api: FakeMessagesApi, status: int) -> list[str]:
    return [str(a.body["to"]) for a in api.attempts if a.status == status]


async def test_each_member_is_sent_once_and_recorded_with_the_api_uuid(
    api: TimedApi, store: SqliteStore, workers: Workers
) -> None:
    broadcast_id = await queue(store)
    workers.start()

    records = await settled(store, broadcast_id)

    assert len(api.attempts) == 3
    assert sorted(str(a.body["to"]) for a in api.accepted) == list(MEMBERS)
    expected = json.loads((DATA / "vonage" / "outbound-mms-group.docs-example.json").read_text())
    bodies = sorted((a.body for a in api.accepted), key=lambda b: str(b["to"]))
    assert [b.pop("client_ref") for b in bodies] == ["b-test/0", "b-test/1", "b-test/2"]
    assert bodies == expected
    uuids = {str(a.body["to"]): a.message_uuid for a in api.accepted}
    assert [r.recipient for r in records] == list(MEMBERS)
    for record in records:
        assert record.state == "sent"
        assert record.attempts == 1
        assert record.error is None
        assert record.message_uuid == uuids[record.recipient]


async def test_a_500_is_retried_and_then_sent(
    api: TimedApi, store: SqliteStore, workers: Workers
) -> None:
    api.respond(500, problem("http_client_tests_data_500.json"))
    broadcast_id = await queue(store)
    workers.start()

    records = by_recipient(await settled(store, broadcast_id))

    [unlucky] = recipients_with(api, 500)
    assert len(api.attempts) == 4
    assert sorted(str(a.body["to"]) for a in api.accepted) == list(MEMBERS)
    assert records[unlucky].state == "sent"
    assert records[unlucky].attempts == 2
    assert records[unlucky].error is None
    assert records[unlucky].message_uuid == next(
        a.message_uuid for a in api.accepted if a.body["to"] == unlucky
    )
    for member in set(MEMBERS) - {unlucky}:
        assert records[member].state == "sent"
        assert records[member].attempts == 1


async def test_a_429_waits_at_least_retry_after_before_the_next_attempt(
    api: TimedApi, store: SqliteStore, workers: Workers
) -> None:
    api.respond(429, problem("response-429.sdk-fixture.json"), headers={"Retry-After": "1"})
    broadcast_id = await queue(store)
    workers.start()

    async def waiting_for_retry() -> bool:
        return any(
            r.state == "pending" and r.error is not None
            for r in await store.broadcast(broadcast_id)
        )

    await eventually(waiting_for_retry)
    records = by_recipient(await settled(store, broadcast_id))

    [limited] = recipients_with(api, 429)
    times = [at for at, to in api.arrivals if to == limited]
    assert len(times) == 2
    assert times[1] - times[0] >= 1.0
    # A 429 speaks for the account: nothing at all was sent during its Retry-After.
    first_429 = times[0]
    assert not [at for at, _ in api.arrivals if first_429 < at < first_429 + 1.0]
    assert records[limited].state == "sent"
    assert records[limited].attempts == 2
    assert len(api.accepted) == 3
    # The others were held back by the pause, not sent: that costs them no attempt.
    for member in set(MEMBERS) - {limited}:
        assert records[member].attempts == len([to for _, to in api.arrivals if to == member])


async def test_messages_held_back_past_their_ttl_are_given_up_not_sent_late(
    api: TimedApi, store: SqliteStore, workers: Workers
) -> None:
    api.respond(429, problem("response-429.sdk-fixture.json"), headers={"Retry-After": "1"})
    broadcast_id = await queue(store)
    workers.start(policy=RetryPolicy(base_seconds=0.01, max_delay_seconds=0.05, ttl_seconds=0.5))

    records = by_recipient(await settled(store, broadcast_id))

    [limited] = recipients_with(api, 429)
    assert len(api.arrivals) == 1  # only the request that got the 429
    assert all(record.state == "failed" for record in records.values())
    assert "HTTP 429" in str(records[limited].error)
    for member in set(MEMBERS) - {limited}:
        assert records[member].error == "gave up: held back by a 429, past ttl_seconds"
        assert records[member].attempts == 0


async def test_a_429_records_the_problem_while_waiting(
    api: TimedApi, store: SqliteStore, workers: Workers
) -> None:
    api.respond(429, problem("response-429.sdk-fixture.json"), headers={"Retry-After": "1"})
    broadcast_id = await queue(store)
    workers.start()

    async def waiting_for_retry() -> bool:
        return any(r.error is not None for r in await store.broadcast(broadcast_id))

    await eventually(waiting_for_retry)
    waiting = [r for r in await store.broadcast(broadcast_id) if r.error is not None]

    assert len(waiting) == 1
    assert waiting[0].state == "pending"
    assert waiting[0].error is not None
    assert "429" in waiting[0].error
    assert "Rate Limit Hit" in waiting[0].error


async def test_a_402_fails_that_member_only_and_is_never_retried(
    api: TimedApi, store: SqliteStore, workers: Workers
) -> None:
    low_balance = problem("messages_tests_data_low_balance_error.json")
    api.respond(402, low_balance)
    broadcast_id = await queue(store)
    workers.start()

    records = by_recipient(await settled(store, broadcast_id))

    # A retried 402 would have ended 'sent' on its second attempt (the next answer is 202).
    [refused] = recipients_with(api, 402)
    assert [to for _, to in api.arrivals].count(refused) == 1
    failed = records[refused]
    assert failed.state == "failed"
    assert failed.attempts == 1
    assert failed.message_uuid is None
    assert failed.error is not None
    assert low_balance["title"] in failed.error
    assert low_balance["detail"] in failed.error
    for member in set(MEMBERS) - {refused}:
        assert records[member].state == "sent"
        assert records[member].message_uuid is not None
    assert len(api.attempts) == 3


async def test_gives_up_after_max_attempts(
    api: TimedApi, store: SqliteStore, workers: Workers
) -> None:
    for _ in range(3 * len(MEMBERS)):
        api.respond(500, problem("http_client_tests_data_500.json"))
    broadcast_id = await queue(store)
    workers.start(RetryPolicy(max_attempts=3, base_seconds=0.01, max_delay_seconds=0.05))

    records = await settled(store, broadcast_id)

    assert len(api.attempts) == 9
    assert api.accepted == []
    for record in records:
        assert record.state == "failed"
        assert record.attempts == 3
        assert record.message_uuid is None
        assert record.error is not None
        assert record.error.startswith("gave up")
        assert "Internal Server Error" in record.error
    assert sorted(to for _, to in api.arrivals) == sorted(MEMBERS * 3)


async def test_a_member_gets_a_later_broadcast_only_after_the_earlier_one(
    api: TimedApi, store: SqliteStore, workers: Workers
) -> None:
    api.respond(500, problem("http_client_tests_data_500.json"))
    first = await queue(store, "first", broadcast_id="b-first")
    second = await queue(store, "second", broadcast_id="b-second")
    workers.start()

    await settled(store, first)
    records = await settled(store, second)

    assert all(r.state == "sent" for r in records)
    for member in MEMBERS:
        texts = [a.body["text"] for a in api.accepted if a.body["to"] == member]
        assert texts == ["first", "second"]


async def test_stop_lets_the_worker_finish_and_return(
    api: TimedApi, store: SqliteStore, client: MessagesClient
) -> None:
    worker = make_worker(store, client, policy=FAST, poll_seconds=0.05)
    worker.start()
    broadcast_id = await queue(store)
    worker.wake()
    await settled(store, broadcast_id)

    await asyncio.wait_for(worker.stop(1), 5)

    assert not worker.alive


async def test_idle_time_ignores_messages_queued_behind_a_waiting_retry(
    store: SqliteStore, client: MessagesClient
) -> None:
    await queue(store, "first", broadcast_id="b-first")
    await queue(store, "second", broadcast_id="b-second")
    now = time.time()
    heads = await store.claim_outbound(32, now, 120.0, 8)
    assert {item.broadcast_id for item in heads} == {"b-first"}
    for item in heads:
        await store.record_retry(item, "HTTP 429: Rate Limit Hit", now + 30.0)
    # Nothing can be sent for 30 s: each "second" waits behind its member's "first".
    assert await store.claim_outbound(32, time.time(), 120.0, 8) == []
    worker = make_worker(store, client, poll_seconds=1.0)

    # So the worker should sleep its poll interval, not 0 s (which makes run() spin, claiming
    # in a write transaction over and over until the retry is due).
    assert await worker.idle_seconds() == pytest.approx(worker.poll_seconds)


async def test_a_dropped_connection_is_retried_and_the_member_gets_one_message(
    api: TimedApi, store: SqliteStore, workers: Workers
) -> None:
    api.respond(0, drop=True)
    broadcast_id = await queue(store)
    workers.start()

    records = by_recipient(await settled(store, broadcast_id))

    [dropped] = [str(a.body["to"]) for a in api.attempts if a.status == 0]
    assert records[dropped].state == "sent"
    assert records[dropped].attempts == 2
    assert sorted(str(a.body["to"]) for a in api.accepted) == list(MEMBERS)  # once each


async def test_an_answer_lost_past_the_timeout_is_retried_within_the_documented_window(
    api: TimedApi, store: SqliteStore, private_pem: str
) -> None:
    api.respond(202, lost_answer=True)  # the API accepts, but the answer never comes back
    settings = ProviderSettings(
        verify_signatures=False,  # the client alone: no webhooks here
        kind="vonage",
        api_url=api.url,
        application_id=APPLICATION_ID,
        private_key=private_pem,
        timeout_seconds=0.3,
    )
    impatient = MessagesClient(settings, root=ROOT)
    worker = make_worker(store, impatient, policy=FAST, poll_seconds=0.05)
    broadcast_id = await queue(store)
    worker.start()
    try:
        records = by_recipient(await settled(store, broadcast_id))
    finally:
        await worker.stop(1)
        await impatient.close()

    lost = str(api.attempts[0].body["to"])
    counts = {m: [str(a.body["to"]) for a in api.accepted].count(m) for m in MEMBERS}
    # The request whose answer was lost had been accepted: that member gets the message twice
    # (the documented at-least-once window); every other member gets it exactly once.
    assert counts == {m: 2 if m == lost else 1 for m in MEMBERS}
    assert records[lost].attempts == 2
    assert all(r.state == "sent" for r in records.values())


async def test_a_message_whose_slot_would_outlast_its_claim_gives_the_claim_back(
    api: TimedApi, store: SqliteStore, client: MessagesClient
) -> None:
    async def far_away(key: str, interval: float, count: int) -> float:
        return 3600.0  # a fleet so busy that the next free slot is an hour away

    worker = OutboxWorker(
        store,
        client,
        rate=SendRate(1, reserve=far_away),
        sender=BOT_NUMBER,
        request_timeout_seconds=10,
        poll_seconds=0.05,
    )
    broadcast_id = await queue(store)
    worker.start()
    try:

        async def given_back() -> bool:
            records = await store.broadcast(broadcast_id)
            return any(r.error == "no send slot in time" for r in records)

        await eventually(given_back)
    finally:
        await worker.stop(1)

    assert api.attempts == []  # nothing was sent while another process could take it
    records = await store.broadcast(broadcast_id)
    assert {r.state for r in records} <= {"pending", "sending"}
