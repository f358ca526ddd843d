"""Both stores, SQLite and PostgreSQL, by the same tests: dedupe, per-group order, atomic
completion, claims and leases, statuses, consent."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from bot import broadcast
from bot.context import Reply
from bot.exceptions import Replayed
from bot.groups import Group
from bot.models import parse_status
from bot.store import (
    Accepted,
    InboxItem,
    LeaseLost,
    OutboxEntry,
    OutboxItem,
    Store,
    Take,
    entries,
    open_store,
)
from bot.store.common import KeyedLocks
from bot.store.schema import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from bot.store.sqlite import SqliteStore
from tests.conftest import BOT_NUMBER, DATA, eventually
from tests.postgres import TemporaryPostgres

A = Group(("11234567891", "11234567892", "11234567893"))
B = Group(("12025550101", "12025550102"))
NOW = 1_000_000.0


Opener = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/var/bot.db"
    server: TemporaryPostgres = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
async def opener(store_url: str, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens another handle on the test's database, as another process would."""
    opened: list[Store] = []

    async def open_one() -> Store:
        opened.append(await open_store(store_url, root=tmp_path))
        return opened[-1]

    yield open_one
    for store in opened:
        await store.close()


@pytest.fixture
async def store(opener: Opener) -> Store:
    return await opener()


async def accept(store: Store, uuid: str, group: Group, at: float = NOW) -> bool:
    accepted = await store.accept_inbound(
        uuid, group.key, group.members, f'{{"id": "{uuid}"}}'.encode(), at
    )
    assert accepted.item is None  # nothing is taken unless asked
    return accepted.new


def planned(broadcast_id: str, group: Group, text: str = "hi") -> list[OutboxEntry]:
    messages = broadcast.plan(Reply(text), group, bot_number=BOT_NUMBER)
    return entries(broadcast_id, group.key, messages)


async def claim_in(store: Store, at: float = NOW) -> list[InboxItem]:
    return await store.claim_inbound(10, at, 60, 5)


async def claim_out(store: Store, at: float = NOW, limit: int = 10) -> list[OutboxItem]:
    return await store.claim_outbound(limit, at, 60, 8)


async def test_the_schema_is_created_once_and_kept(store_url: str, tmp_path: Path) -> None:
    first = await open_store(store_url, root=tmp_path)
    await accept(first, "m1", A)
    await first.close()

    again = await open_store(store_url, root=tmp_path)  # migrations applied: nothing is redone
    migrations = SQLITE_MIGRATIONS if store_url.startswith("sqlite") else POSTGRES_MIGRATIONS
    assert await again.schema_version() == len(migrations)
    assert await accept(again, "m1", A) is False
    await again.close()


async def test_the_sqlite_folder_is_created(tmp_path: Path) -> None:
    store = await open_store("sqlite:///nested/deeper/bot.db", root=tmp_path)
    await store.close()
    assert (tmp_path / "nested" / "deeper" / "bot.db").is_file()


async def test_accept_is_deduplicated_by_message_uuid(store: Store) -> None:
    assert await accept(store, "m1", A) is True
    assert await accept(store, "m1", A) is False
    results = await asyncio.gather(*(accept(store, "m2", A) for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]


async def test_claim_gives_one_message_per_group_in_arrival_order(store: Store) -> None:
    for uuid, group in (("a1", A), ("b1", B), ("a2", A), ("b2", B)):
        await accept(store, uuid, group)

    first = await claim_in(store)
    assert [item.message_uuid for item in first] == ["a1", "b1"]
    assert await claim_in(store) == []  # both groups are busy

    await store.complete_inbound(first[0], now=NOW, route=None, outbound=[], state=None)
    assert [item.message_uuid for item in await claim_in(store)] == ["a2"]


async def test_sqlite_tells_when_a_message_waiting_behind_another_may_go(tmp_path: Path) -> None:
    store = await open_store("sqlite:///bot.db", root=tmp_path)
    heard: list[str] = []
    store.listen(heard.append)
    try:
        for uuid, group in (("a1", A), ("a2", A), ("b1", B)):
            await accept(store, uuid, group)
        a1, b1 = await claim_in(store)  # a2 waits behind a1
        await store.complete_inbound(b1, now=NOW, route=None, outbound=[], state=None)
        assert heard == []  # nothing behind b1
        await store.complete_inbound(a1, now=NOW, route=None, outbound=planned("a1", A), state=None)
        assert heard == ["inbox"]  # a2 may go now
        [a2] = await claim_in(store)
        await store.complete_inbound(a2, now=NOW, route=None, outbound=planned("a2", A), state=None)
        assert heard == ["inbox"]

        # Each member's answer to a2 waits behind their answer to a1.
        retried, sent, failed = await claim_out(store)
        await store.record_retry(retried, "HTTP 500", NOW + 60)
        assert heard == ["inbox"]  # still the head of its member's queue: nothing may go
        await store.record_sent(sent, "uuid-1", NOW)
        assert heard == ["inbox", "outbox"]  # its member's next message may go
        await store.record_failed(failed, "HTTP 400", NOW)
        assert heard == ["inbox", "outbox", "outbox"]
        behind = await claim_out(store)
        assert {item.message.to for item in behind} == {sent.message.to, failed.message.to}
        for item in behind:
            await store.record_sent(item, None, NOW)
        assert heard == ["inbox", "outbox", "outbox"]  # nothing behind those
    finally:
        await store.close()


async def test_an_expired_claim_is_taken_up_again(store: Store) -> None:
    await accept(store, "a1", A)
    [claimed] = await claim_in(store)
    assert await claim_in(store, NOW + 59) == []

    [again] = await claim_in(store, NOW + 61)

    assert again.message_uuid == "a1"
    assert again.attempts == claimed.attempts + 1
    # The first claim's outcome is stale now: it is refused and writes nothing.
    with pytest.raises(LeaseLost):
        await store.complete_inbound(
            claimed, now=NOW, route="x", outbound=planned("a1", A), state='{"x": 1}'
        )
    assert await store.broadcast("a1") == []
    assert await store.load_state(A.key) == {}


async def test_a_message_whose_processing_keeps_dying_is_set_aside(store: Store) -> None:
    await accept(store, "a1", A)
    await accept(store, "a2", A)
    for attempt in range(5):
        [item] = await claim_in(store, NOW + attempt * 61)
        assert item.message_uuid == "a1"

    [next_one] = await claim_in(store, NOW + 5 * 61)

    assert next_one.message_uuid == "a2"
    record = await store.inbound("a1")
    assert record is not None
    assert (record.state, record.attempts) == ("failed", 5)
    assert record.error == "gave up after 5 attempts that did not finish"


async def test_completion_queues_messages_saves_state_and_marks_done_together(
    store: Store,
) -> None:
    await accept(store, "a1", A)
    [item] = await claim_in(store)

    await store.complete_inbound(
        item, now=NOW, route="ticket", outbound=planned("a1", A), state='{"n": 1}'
    )

    assert await store.load_state(A.key) == {"n": 1}
    records = await store.broadcast("a1")
    assert [(r.recipient, r.state) for r in records] == [(m, "pending") for m in A.members]
    assert [item.state for item in await claim_in(store)] == []
    record = await store.inbound("a1")
    assert record is not None
    assert (record.state, record.route) == ("done", "ticket")

    await accept(store, "a2", A)  # a handler that leaves the state alone keeps it
    [item] = await claim_in(store)
    await store.complete_inbound(item, now=NOW, route=None, outbound=[], state=None)
    assert await store.load_state(A.key) == {"n": 1}


async def test_outbox_claims_one_message_in_flight_per_member(store: Store) -> None:
    await store.enqueue(planned("b-1", A, "first"), A.members, NOW)
    await store.enqueue(planned("b-2", A, "second"), A.members, NOW)

    first = await claim_out(store)
    assert [(i.broadcast_id, i.message.to) for i in first] == [("b-1", m) for m in A.members]
    assert await claim_out(store) == []

    await store.record_sent(first[0], "uuid-1", NOW)
    [next_one] = await claim_out(store)
    assert (next_one.broadcast_id, next_one.message.text) == ("b-2", "second")
    assert next_one.message.to == A.members[0]


async def test_of_a_broadcasts_outcomes_recorded_at_once_exactly_one_is_its_end(
    store: Store,
) -> None:
    # PostgreSQL: connections open in the pool, so that the three are recorded at once
    # rather than one after another while new connections are made.
    await asyncio.gather(*(store.depths() for _ in range(6)))
    for n in range(8):  # each time, the three race anew
        await store.enqueue(planned(f"b-{n}", A), A.members, NOW)
        sending = await claim_out(store)
        assert [item.broadcast_id for item in sending] == [f"b-{n}"] * 3

        ends = await asyncio.gather(
            *(store.record_sent(item, f"uuid-{n}-{item.message.to}", NOW) for item in sending)
        )

        assert sorted(ends) == [False, False, True], f"broadcast {n}"


async def test_retry_waits_until_due_and_keeps_member_order(store: Store) -> None:
    await store.enqueue(planned("b-1", B, "first"), B.members, NOW)
    await store.enqueue(planned("b-2", B, "second"), B.members, NOW)
    first = await claim_out(store)
    await store.record_retry(first[0], "HTTP 500", NOW + 30)
    await store.record_sent(first[1], "u", NOW)

    claimed = await claim_out(store, NOW + 1)

    # The second member's next message goes; the first member's waits behind its retry.
    assert [(i.broadcast_id, i.message.to) for i in claimed] == [("b-2", B.members[1])]
    assert await store.next_due() == NOW + 30
    [retried] = await claim_out(store, NOW + 31)
    assert (retried.broadcast_id, retried.attempts) == ("b-1", 2)


async def test_a_message_held_back_unsent_keeps_its_attempts_and_its_place(
    store: Store,
) -> None:
    await store.enqueue(planned("b-1", B, "first"), B.members, NOW)
    await store.enqueue(planned("b-2", B, "second"), B.members, NOW)
    held, sent = await claim_out(store)
    await store.record_retry(held, "held back by a 429", NOW + 30, sent=False)
    await store.record_sent(sent, "u", NOW)

    with pytest.raises(LeaseLost):  # fenced like any outcome: given back once
        await store.record_retry(held, "held back by a 429", NOW + 30, sent=False)
    claimed = await claim_out(store, NOW + 1)
    [again] = await claim_out(store, NOW + 31)

    assert [(i.broadcast_id, i.message.to) for i in claimed] == [("b-2", B.members[1])]
    assert (again.id, again.attempts) == (held.id, 1)  # the first claim did not count
    [record] = [r for r in await store.broadcast("b-1") if r.recipient == held.message.to]
    assert (record.state, record.attempts, record.error) == ("sending", 1, "held back by a 429")


async def test_a_message_given_up_unsent_keeps_its_attempts(store: Store) -> None:
    await store.enqueue(planned("b-1", B, "first"), B.members, NOW)
    [item, *_] = await claim_out(store)

    await store.record_failed(item, "gave up: held back, past ttl_seconds", NOW, sent=False)

    [record] = [r for r in await store.broadcast("b-1") if r.recipient == item.message.to]
    assert (record.state, record.attempts) == ("failed", 0)


async def test_two_stores_on_one_database_never_claim_the_same_message(opener: Opener) -> None:
    one, two = await opener(), await opener()
    for n in range(20):
        group = Group((f"1202555{n:04d}",))
        await one.enqueue(planned(f"b-{n}", group), group.members, NOW)

    claims = await asyncio.gather(
        *(store.claim_outbound(3, NOW, 60, 8) for _ in range(10) for store in (one, two))
    )

    ids = [item.id for claim in claims for item in claim]
    assert len(ids) == len(set(ids)) == 20


async def test_status_updates_the_member_message_and_keeps_history(store: Store) -> None:
    await store.enqueue(planned("b-1", B), B.members, NOW)
    [first, _] = await claim_out(store)
    await store.record_sent(first, "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab", NOW)
    # The API's example, with the client_ref it echoes from the send (the example's own is
    # of a message sent elsewhere).
    submitted = json.loads(
        (DATA / "vonage" / "message-status-mms.submitted.example.json").read_text()
    )
    body = json.dumps({**submitted, "client_ref": first.message.client_ref}).encode()

    assert await store.record_status(parse_status(body), body, NOW) is True

    [record, _] = await store.broadcast("b-1")
    assert (record.state, record.status, record.message_uuid) == (
        "sent",
        "submitted",
        "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab",
    )
    rejected = json.loads(
        (DATA / "vonage" / "message-status-mms.rejected.example.json").read_text()
    )
    rejected["client_ref"] = first.message.client_ref
    assert await store.record_status(parse_status(json.dumps(rejected).encode()), b"{}", NOW)
    [record, _] = await store.broadcast("b-1")
    assert (record.status, record.status_error) == (
        "rejected",
        "1000 Throttled - You have exceeded the submission capacity allowed on this account. "
        "Please wait and retry",
    )


def status_body(status: str, *, message_uuid: str, client_ref: str | None = None) -> bytes:
    return json.dumps(
        {
            "message_uuid": message_uuid,
            "to": B.members[0],
            "from": BOT_NUMBER,
            "channel": "mms",
            "timestamp": "2025-02-03T12:14:25Z",
            "status": status,
            "client_ref": client_ref,
        }
    ).encode()


async def test_a_late_submitted_status_does_not_undo_delivered(store: Store) -> None:
    await store.enqueue(planned("b-1", B), B.members, NOW)
    [first, _] = await claim_out(store)
    uuid = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
    await store.record_sent(first, uuid, NOW)

    for status in ("delivered", "submitted"):
        body = status_body(status, message_uuid=uuid, client_ref="b-1/0")
        assert await store.record_status(parse_status(body), body, NOW)

    assert (await store.broadcast("b-1"))[0].status == "delivered"


async def test_a_status_is_matched_by_client_ref_alone(store: Store) -> None:
    # The API puts the send's client_ref in every status; a status without ours is of a
    # message sent some other way, even when its message_uuid is one of ours.
    await store.enqueue(planned("b-1", B), B.members, NOW)
    [first, _] = await claim_out(store)
    uuid = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
    await store.record_sent(first, uuid, NOW)

    for ref in (None, "abc123"):
        body = status_body("delivered", message_uuid=uuid, client_ref=ref)
        assert await store.record_status(parse_status(body), body, NOW) is False

    assert (await store.broadcast("b-1"))[0].status is None


async def test_a_status_that_overtakes_the_send_record_finds_its_message_by_client_ref(
    store: Store,
) -> None:
    await store.enqueue(planned("b-1", B), B.members, NOW)
    [first, _] = await claim_out(store)
    uuid = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
    assert first.message.client_ref == "b-1/0"

    body = status_body("submitted", message_uuid=uuid, client_ref="b-1/0")
    assert await store.record_status(parse_status(body), body, NOW)
    await store.record_sent(first, uuid, NOW)

    [record, _] = await store.broadcast("b-1")
    assert (record.state, record.status, record.message_uuid) == ("sent", "submitted", uuid)


async def test_a_stale_send_outcome_is_refused(store: Store) -> None:
    await store.enqueue(planned("b-1", B), B.members, NOW)
    [stale, _] = await claim_out(store)
    [again, _] = await claim_out(store, NOW + 61)  # the first lease ran out

    with pytest.raises(LeaseLost):
        await store.record_sent(stale, "late", NOW + 62)
    await store.record_retry(again, "HTTP 500", NOW + 70)

    [record, _] = await store.broadcast("b-1")
    assert (record.state, record.message_uuid, record.attempts) == ("pending", None, 2)


async def test_a_send_that_keeps_dying_is_given_up(store: Store) -> None:
    await store.enqueue(planned("b-1", B), B.members, NOW)
    for attempt in range(8):
        assert len(await claim_out(store, NOW + attempt * 61)) == 2

    assert await claim_out(store, NOW + 8 * 61) == []
    records = await store.broadcast("b-1")
    assert [(r.state, r.attempts) for r in records] == [("failed", 8), ("failed", 8)]
    assert records[0].error == "gave up after 8 attempts that did not finish"


async def test_a_send_that_keeps_dying_with_no_attempt_limit_is_given_up_past_its_ttl(
    store: Store,
) -> None:
    # With provider.retry.max_attempts unset, the message's age bounds a crash loop.
    unbounded = 2**31 - 1
    await store.enqueue(planned("b-1", B), B.members, NOW)
    assert len(await store.claim_outbound(10, NOW, 60, unbounded, created_before=NOW - 1)) == 2
    later = NOW + 61  # the lease ran out: the process died mid-attempt
    assert len(await store.claim_outbound(10, later, 60, unbounded, created_before=NOW - 1)) == 2

    # A day on (the ttl): no longer taken up, but given up.
    day = NOW + 86_400 + 122
    assert await store.claim_outbound(10, day, 60, unbounded, created_before=day - 86_400) == []
    records = await store.broadcast("b-1")
    assert [(r.state, r.attempts) for r in records] == [("failed", 2), ("failed", 2)]
    assert records[0].error == "gave up after 2 attempts that did not finish"


async def test_claims_can_be_limited_to_one_broadcast(store: Store) -> None:
    await store.enqueue(planned("b-1", A), A.members, NOW)
    await store.enqueue(planned("b-2", B), B.members, NOW)

    claimed = await store.claim_outbound(10, NOW, 60, 8, broadcast_id="b-2")

    assert {item.broadcast_id for item in claimed} == {"b-2"}
    assert len(claimed) == 2


async def test_conversation_shows_members_messages_and_answers_in_order(store: Store) -> None:
    body = json.dumps(
        {
            "channel": "mms",
            "message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789fa",
            "from": A.members[0],
            "to": BOT_NUMBER,
            "timestamp": "2025-10-03T12:15:25Z",
            "message_type": "text",
            "text": "Hello to the group!",
            "mms": {"participants": list(A.members[1:])},
        }
    ).encode()
    await store.accept_inbound("aaaaaaaa-bbbb-4ccc-8ddd-0123456789fa", A.key, A.members, body, NOW)
    await store.enqueue(planned("b-1", A, "Hello back"), A.members, NOW + 1)

    conversation = await store.conversation(A.key)

    assert [(e.sender, e.text) for e in conversation] == [(A.members[0], "Hello to the group!")] + [
        (BOT_NUMBER, "Hello back")
    ] * 3
    assert await store.groups() == [(A.key, A.members)]


async def test_claims_of_a_dead_process_are_released_and_a_live_ones_kept(opener: Opener) -> None:
    dead, alive = await opener(), await opener()
    namespace = alive.owner.split(":")[0]
    dead.owner = f"{namespace}:{2**22 + 12345}:1"  # no such pid (above pid_max)
    await accept(dead, "a1", A)
    await dead.enqueue(planned("b-1", B), B.members, NOW)
    await dead.claim_inbound(10, NOW, 60, 5)
    await dead.claim_outbound(10, NOW, 60, 8)
    await accept(alive, "c1", Group(("12025550199",)))
    await alive.claim_inbound(10, NOW, 60, 5)

    assert await alive.release_orphans() == 3

    # The dead process's work is claimable at once, long before its leases would run out.
    assert [i.message_uuid for i in await alive.claim_inbound(10, NOW + 1, 60, 5)] == ["a1"]
    assert len(await alive.claim_outbound(10, NOW + 1, 60, 8)) == 2


async def test_claims_that_cannot_be_judged_from_here_are_kept(opener: Opener) -> None:
    other, here = await opener(), await opener()
    pid, start = here.owner.split(":")[1:]
    for n, owner in enumerate(
        [
            f"elsewhere-4026531836:{pid}:{start}",  # another host or container
            f"{here.owner.split(':')[0]}:{pid}:{int(start) + 1}",  # this pid, a later process
        ]
    ):
        other.owner = owner
        await accept(other, f"m{n}", Group((f"1202555000{n}",)))
        await other.claim_inbound(10, NOW, 60, 5)

    assert await here.release_orphans() == 1  # only the pid that was reused since
    assert [i.message_uuid for i in await here.claim_inbound(10, NOW + 1, 60, 5)] == ["m1"]


async def test_messages_queued_before_a_stop_are_dropped_but_its_confirmation_goes(
    store: Store,
) -> None:
    stopper = B.members[1]
    await store.enqueue(planned("b-before", B), B.members, NOW)  # queued, not sent yet
    await accept(store, "stop", B, NOW + 1)
    [item] = await claim_in(store, NOW + 1)
    confirmation = broadcast.plan(
        Reply("unsubscribed", to_sender_only=True), B, bot_number=BOT_NUMBER, sender=stopper
    )

    await store.complete_inbound(
        item,
        now=NOW + 2,
        route="stop",
        outbound=entries("stop", B.key, confirmation),
        state=None,
        consent=(stopper, False),
    )
    claimed = await claim_out(store, NOW + 3)

    assert await store.opted_out(B.members) == frozenset({stopper})
    assert sorted((i.broadcast_id, i.message.to) for i in claimed) == [
        ("b-before", B.members[0]),
        ("stop", stopper),
    ]
    dropped = [r for r in await store.broadcast("b-before") if r.recipient == stopper]
    assert [(r.state, r.error) for r in dropped] == [("failed", "recipient opted out (STOP)")]


async def test_a_store_of_an_older_schema_is_upgraded_and_keeps_its_rows(
    store_url: str, tmp_path: Path
) -> None:
    if store_url.startswith("sqlite"):
        path = Path(store_url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as lite:
            lite.executescript(SQLITE_MIGRATIONS[0] + "PRAGMA user_version = 1;")
            lite.execute(
                "INSERT INTO groups (key, members, created_at, updated_at) "
                "VALUES ('g-old', '[\"12025550101\"]', 1, 1)"
            )
            lite.execute(SENT_BEFORE)
            # Ids up to 41 were given before (their rows since deleted): never again.
            lite.execute("UPDATE sqlite_sequence SET seq = 41 WHERE name = 'outbound'")
        latest = len(SQLITE_MIGRATIONS)
    else:
        pg = await asyncpg.connect(store_url)
        try:
            await pg.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            await pg.execute(POSTGRES_MIGRATIONS[0])
            await pg.execute("INSERT INTO schema_migrations (version) VALUES (1)")
            await pg.execute(
                "INSERT INTO groups (key, members, created_at, updated_at) "
                "VALUES ('g-old', '[\"12025550101\"]', 1, 1)"
            )
            await pg.execute(SENT_BEFORE)
        finally:
            await pg.close()
        latest = len(POSTGRES_MIGRATIONS)
    assert latest >= 2  # there is an upgrade to apply

    store = await open_store(store_url, root=tmp_path)
    try:
        assert await store.schema_version() == latest
        assert await store.groups() == [("g-old", ("12025550101",))]
        [old] = await store.broadcast("b-old")
        assert (old.state, old.message_uuid) == ("sent", "p-1")
        await accept(store, "m1", A)  # the upgraded schema takes new work
        assert [i.message_uuid for i in await claim_in(store)] == ["m1"]
        await store.enqueue(planned("b-new", B), B.members, NOW)
        ids = [item.id for item in await claim_out(store)]
        assert len(ids) == 2
        if store_url.startswith("sqlite"):
            assert ids == [42, 43]
    finally:
        await store.close()


# A message sent before an upgrade.
SENT_BEFORE = (
    "INSERT INTO outbound (broadcast_id, group_key, recipient, client_ref, body, state, "
    "next_attempt_at, message_uuid, created_at) VALUES ('b-old', 'g-old', '12025550101', "
    '\'b-old/0\', \'{"to": "12025550101", "from": "11234567890", '
    '"message_type": "text", "channel": "mms", "text": "hi"}\', '
    "'sent', 1, 'p-1', 1)"
)


def insert_token(jti: str) -> Callable[[sqlite3.Connection], None]:
    """A unit whose one write stores a webhook token."""
    return lambda db: db.execute(
        "INSERT INTO webhook_tokens (jti, seen_at) VALUES (?, 1)", (jti,)
    ).close()


async def stored_tokens(store: SqliteStore) -> list[str]:
    rows = await store._read(lambda db: db.execute("SELECT jti FROM webhook_tokens").fetchall())
    return sorted(row[0] for row in rows)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "bot.db")
    yield store
    await store.close()


# A process that opens (and closes) the store at the moment given, its imports done before.
OPEN_AT = """
import asyncio, sys, time
from pathlib import Path
from bot.store.sqlite import SqliteStore

path, moment = Path(sys.argv[1]), float(sys.argv[2])


async def open_and_close() -> None:
    await (await SqliteStore.open(path)).close()


while time.time() < moment:
    pass
asyncio.run(open_and_close())
"""


def test_sqlite_processes_opening_a_new_database_at_once_all_open_it(tmp_path: Path) -> None:
    # The race is narrow: a few rounds of four, each started together once all have imported.
    for round_ in range(6):
        path, moment = tmp_path / f"bot{round_}.db", time.time() + 1.2
        processes = [
            subprocess.Popen(  # noqa: S603 - this Python, our own code
                [sys.executable, "-c", OPEN_AT, str(path), str(moment)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        errors = [process.communicate(timeout=60)[1] for process in processes]
        assert [process.returncode for process in processes] == [0] * 4, errors


async def test_sqlite_a_new_database_is_readable_by_its_owner_alone(tmp_path: Path) -> None:
    path = tmp_path / "var" / "bot.db"
    umask = os.umask(0o022)  # the usual one, under which files are made readable by all
    try:
        store = await SqliteStore.open(path)
    finally:
        os.umask(umask)
    try:
        await store._unit(insert_token("one"))  # the WAL and its index exist from here
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        modes = {file.name: stat.S_IMODE(file.stat().st_mode) for file in files}
    finally:
        await store.close()

    assert modes == {"bot.db": 0o600, "bot.db-wal": 0o600, "bot.db-shm": 0o600}
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


async def test_sqlite_an_existing_database_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    path.touch(mode=0o640)  # the operator's choice (a group that reads backups, say)
    path.chmod(0o640)
    await (await SqliteStore.open(path)).close()

    assert stat.S_IMODE(path.stat().st_mode) == 0o640


async def test_sqlite_checkpoints_its_wal_every_10_000_pages_not_every_1_000(
    sqlite_store: SqliteStore,
) -> None:
    page = await sqlite_store._read(lambda db: int(db.execute("PRAGMA page_size").fetchone()[0]))
    wal = Path(f"{sqlite_store.path}-wal")
    # About 6,000 pages (each token is written twice: its row and its key's index), in
    # commits of their own: at SQLite's default the WAL would be checkpointed after 1,000
    # pages and written again from its start.
    for n in range(24):
        await sqlite_store._unit(insert_token(f"{n}:" + "x" * 500_000))

    size = (await asyncio.to_thread(wal.stat)).st_size
    assert size > 2_500 * page  # no checkpoint has started it over
    assert len(await stored_tokens(sqlite_store)) == 24


@pytest.mark.parametrize("one_write", [False, True], ids=["in savepoints", "one write each"])
async def test_sqlite_fails_every_unit_of_a_transaction_that_sqlite_rolled_back(
    sqlite_store: SqliteStore, one_write: bool
) -> None:
    await sqlite_store._unit(fill_up)

    outcomes = await asyncio.gather(
        sqlite_store._unit(insert_token("small-before"), one_write=one_write),
        sqlite_store._unit(insert_token("x" * 1_000_000), one_write=one_write),  # SQLITE_FULL
        sqlite_store._unit(insert_token("small-after"), one_write=one_write),
        return_exceptions=True,
    )

    assert all(isinstance(o, sqlite3.Error) for o in outcomes), outcomes
    assert await stored_tokens(sqlite_store) == []  # nothing the callers were told failed


async def test_sqlite_tells_a_unit_early_what_it_returned_before_it_returns(
    sqlite_store: SqliteStore,
) -> None:
    told: list[object] = []

    def stored(db: sqlite3.Connection) -> str:
        insert_token("early")(db)
        return "stored"

    def fails(db: sqlite3.Connection) -> str:
        insert_token("early")(db)  # a duplicate
        return "never"

    async def call(work: Callable[[sqlite3.Connection], str]) -> object:
        try:
            value: object = await sqlite_store._unit(work, early=told.append)
        except sqlite3.IntegrityError as exc:
            value = exc
        told.append(("returned", value))
        return value

    await asyncio.gather(call(stored), call(fails))

    assert told[0] == "stored"  # before either call returned; the unit that failed: never
    assert sorted(map(str, told[1:])) == [
        "('returned', 'stored')",
        "('returned', IntegrityError('UNIQUE constraint failed: webhook_tokens.jti'))",
    ]


def fill_up(db: sqlite3.Connection) -> None:  # a disk that fills up
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    db.execute(f"PRAGMA max_page_count = {pages + 2}")


async def test_sqlite_a_unit_told_early_still_fails_with_its_commit(
    sqlite_store: SqliteStore,
) -> None:
    await sqlite_store._unit(fill_up)
    told: list[None] = []
    # The thread held while a commit is under way, so that the next units share one
    # transaction though they reach the thread one at a time.
    thread_free = threading.Event()
    sqlite_store._thread.submit(thread_free.wait)
    first = asyncio.ensure_future(sqlite_store._unit(lambda db: None))
    await asyncio.sleep(0)
    small = asyncio.ensure_future(sqlite_store._unit(insert_token("small"), early=told.append))
    await asyncio.sleep(0)
    big = asyncio.ensure_future(sqlite_store._unit(insert_token("x" * 1_000_000)))  # FULL
    for _ in range(10):  # until both have gone to the (held) thread, behind the commit
        await asyncio.sleep(0)
    assert len(sqlite_store._open) == 2
    assert not sqlite_store._queued
    thread_free.set()

    outcomes = await asyncio.gather(first, small, big, return_exceptions=True)

    assert told == [None]  # it ran, and was told so; then its transaction was lost
    assert outcomes[0] is None
    assert all(isinstance(o, sqlite3.Error) for o in outcomes[1:]), outcomes
    assert await stored_tokens(sqlite_store) == []


async def test_sqlite_tells_no_unit_of_a_transaction_already_lost(
    sqlite_store: SqliteStore,
) -> None:
    await sqlite_store._unit(fill_up)
    told: list[None] = []

    outcomes = await asyncio.gather(  # one job: the loss is known before anyone is told
        sqlite_store._unit(insert_token("small"), early=told.append),
        sqlite_store._unit(insert_token("x" * 1_000_000)),
        return_exceptions=True,
    )

    assert told == []
    assert all(isinstance(o, sqlite3.Error) for o in outcomes), outcomes


async def test_sqlite_an_answer_to_a_message_stored_anew_is_refused(
    sqlite_store: SqliteStore,
) -> None:
    # Handled as it was stored (told early); then its commit failed, and Vonage sent it
    # again, and that was stored: the first handling must not complete the new row.
    first = (await take_in(sqlite_store, "m1", A)).item
    assert first is not None
    await sqlite_store._unit(lambda db: db.execute("DELETE FROM inbound WHERE message_uuid = 'm1'"))
    again = (await take_in(sqlite_store, "m1", A, at=NOW + 1)).item
    assert again is not None
    assert again.attempts == first.attempts

    with pytest.raises(LeaseLost):
        await sqlite_store.complete_inbound(first, now=NOW + 2, route=None, outbound=[], state=None)
    await sqlite_store.complete_inbound(again, now=NOW + 2, route=None, outbound=[], state=None)
    record = await sqlite_store.inbound("m1")
    assert record is not None
    assert record.state == "done"


async def test_sqlite_a_unit_of_one_write_that_fails_leaves_its_batch_alone(
    sqlite_store: SqliteStore,
) -> None:
    await sqlite_store._unit(insert_token("taken"))
    outcomes = await asyncio.gather(
        sqlite_store._unit(insert_token("before"), one_write=True),
        sqlite_store._unit(insert_token("taken"), one_write=True),  # fails: a duplicate
        sqlite_store._unit(insert_token("after"), one_write=True),
        return_exceptions=True,
    )

    assert outcomes[0] is None
    assert isinstance(outcomes[1], sqlite3.IntegrityError)
    assert outcomes[2] is None
    assert await stored_tokens(sqlite_store) == ["after", "before", "taken"]


async def test_sqlite_a_unit_of_one_write_that_fails_after_it_writes_nothing(
    sqlite_store: SqliteStore,
) -> None:
    def write_then_fail(db: sqlite3.Connection) -> None:
        insert_token("written")(db)
        raise ValueError("a bug after the write")

    outcomes = await asyncio.gather(
        sqlite_store._unit(lambda db: db.execute("SELECT 1").fetchone()),
        sqlite_store._unit(write_then_fail, one_write=True),
        return_exceptions=True,
    )

    assert isinstance(outcomes[1], ValueError)
    assert isinstance(outcomes[0], sqlite3.OperationalError)  # its batch went with it
    assert await stored_tokens(sqlite_store) == []


async def test_waiting_counts_what_waits_to_be_taken_now(store: Store) -> None:
    await accept(store, "a1", A)
    await accept(store, "b1", B)
    await store.enqueue(planned("b-1", B), B.members, NOW)
    assert await store.waiting(NOW) == {"inbox": 2, "outbox": 2}

    [first, _] = await claim_out(store)
    await store.record_retry(first, "HTTP 500", NOW + 3600)

    # A retry not yet due, and one in flight.
    assert await store.waiting(NOW) == {"inbox": 2, "outbox": 0}
    assert await store.waiting(NOW + 3601) == {"inbox": 2, "outbox": 1}
    assert set(await store.oldest(NOW)) == {"inbox"}
    assert set(await store.oldest(NOW + 3601)) == {"inbox", "outbox"}


async def take_in(store: Store, uuid: str, group: Group, at: float = NOW) -> Accepted:
    return await store.accept_inbound(
        uuid, group.key, group.members, f'{{"id": "{uuid}"}}'.encode(), at, take=Take(1, 60)
    )


async def test_a_message_that_heads_its_group_is_taken_as_it_is_stored(store: Store) -> None:
    # Someone of the group sent STOP before (with another group's message).
    stopper = A.members[1]
    await accept(store, "c1", Group((stopper, "12025550199")))
    [stop] = await claim_in(store)
    await store.complete_inbound(
        stop, now=NOW, route=None, outbound=[], state=None, consent=(stopper, False)
    )
    first = await take_in(store, "a1", A)
    behind = await take_in(store, "a2", A)  # a1 is still open: a2 waits its turn
    again = await take_in(store, "a1", A)

    assert first.new
    assert first.item is not None
    assert (first.item.message_uuid, first.item.attempts, first.item.received_at) == ("a1", 1, NOW)
    assert first.item.members == A.members
    assert first.item.opted_out == {stopper}
    assert (behind.new, behind.item) == (True, None)
    assert (again.new, again.item) == (False, None)
    assert await claim_in(store) == []  # a1 is taken; a2 waits for it
    assert await store.waiting(NOW) == {"inbox": 1, "outbox": 0}

    await store.complete_inbound(first.item, now=NOW, route=None, outbound=[], state='{"n": 2}')
    [second] = await claim_in(store)
    assert (second.message_uuid, second.state) == ("a2", {"n": 2})


async def test_a_taken_message_is_claimed_again_when_its_lease_runs_out(store: Store) -> None:
    taken = (await take_in(store, "a1", A)).item
    assert taken is not None
    assert await claim_in(store, NOW + 59) == []

    [again] = await claim_in(store, NOW + 61)

    assert (again.message_uuid, again.attempts) == ("a1", 2)
    with pytest.raises(LeaseLost):
        await store.complete_inbound(taken, now=NOW, route=None, outbound=[], state=None)


async def test_answers_that_head_their_member_are_taken_as_they_are_stored(
    store: Store,
) -> None:
    earlier = planned("b-0", A, "earlier")[:1]  # the first member has a message open
    await store.enqueue(earlier, A.members, NOW)
    assert earlier[0].message.to == A.members[0]
    item = (await take_in(store, "a1", A)).item
    assert item is not None

    taken = await store.complete_inbound(
        item, now=NOW + 1, route="r", outbound=planned("a1", A), state=None, take=Take(5, 60)
    )

    records = {r.recipient: r for r in await store.broadcast("a1")}
    assert [t.message.to for t in taken] == list(A.members[1:])
    assert all(records[t.message.to].state == "sending" for t in taken)
    assert records[A.members[0]].state == "pending"
    assert [(t.attempts, t.origin_at, t.created_at) for t in taken] == [(1, NOW, NOW + 1)] * 2
    # Not claimed twice; the busy member's message follows its earlier one.
    assert [c.broadcast_id for c in await claim_out(store, NOW + 1)] == ["b-0"]
    for t in taken:
        await store.record_sent(t, f"uuid-{t.message.to}", NOW + 2)
    states = {r.recipient: r.state for r in await store.broadcast("a1")}
    assert states == {A.members[0]: "pending", **dict.fromkeys(A.members[1:], "sent")}


async def test_no_more_answers_are_taken_than_asked(store: Store) -> None:
    item = (await take_in(store, "a1", A)).item
    assert item is not None

    taken = await store.complete_inbound(
        item, now=NOW, route="r", outbound=planned("a1", A), state=None, take=Take(1, 60)
    )

    assert [t.message.to for t in taken] == [A.members[0]]
    claimed = await claim_out(store)
    assert sorted(c.message.to for c in claimed) == sorted(A.members[1:])


async def test_a_taken_answer_is_what_a_claim_would_read_back(store: Store) -> None:
    item = (await take_in(store, "a1", A)).item
    assert item is not None
    outbound = planned("a1", A)
    [taken] = await store.complete_inbound(
        item, now=NOW, route="r", outbound=outbound, state=None, take=Take(1, 60)
    )
    await store.record_retry(taken, "HTTP 500", NOW)  # given back, then claimed

    claimed = [c for c in await claim_out(store) if c.id == taken.id]

    assert [c.message for c in claimed] == [taken.message]
    assert (claimed[0].origin_at, claimed[0].attempts) == (taken.origin_at, 2)


async def test_closing_commits_what_was_stored_just_before(tmp_path: Path) -> None:
    store = await open_store("sqlite:///bot.db", root=tmp_path)
    stored = asyncio.create_task(accept(store, "a1", A))
    await asyncio.sleep(0)  # queued for the writer, not yet handed to it

    await store.close()

    assert await stored is True
    again = await open_store("sqlite:///bot.db", root=tmp_path)
    assert (await again.inbound("a1")) is not None
    await again.close()


CLOSE_AS_A_COMMIT_IS_TOLD = """
import asyncio, sys
from pathlib import Path
import bot.store.sqlite_base as base
from bot.store.sqlite import SqliteStore

async def main() -> None:
    store = await SqliteStore.open(Path(sys.argv[1]))
    loop = asyncio.get_running_loop()
    closing = []
    real_commit = base._commit

    def commit(db, tx):  # the real commit; then close() becomes ready before it is told
        real_commit(db, tx)
        loop.call_soon_threadsafe(lambda: closing.append(asyncio.ensure_future(store.close())))

    base._commit = commit
    await store._unit(lambda db: db.execute("SELECT 1").fetchone())
    base._commit = real_commit
    await closing[0]

asyncio.run(main())
"""


def test_closing_as_a_commit_is_being_told_returns(tmp_path: Path) -> None:
    # In a process of its own: a close() that never yields would hang this one.
    done = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, "-c", CLOSE_AS_A_COMMIT_IS_TOLD, str(tmp_path / "bot.db")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def test_a_webhook_token_is_accepted_once(store: Store) -> None:
    await store.accept_inbound("m1", A.key, A.members, b"{}", NOW, jti="token-1")

    with pytest.raises(Replayed):
        await store.accept_inbound("m2", B.key, B.members, b"{}", NOW, jti="token-1")

    assert await store.inbound("m2") is None
    assert [key for key, _ in await store.groups()] == [A.key]  # the replay left no trace


async def test_keyed_locks_serialise_one_key_not_others_and_forget_keys_no_one_holds() -> None:
    locks = KeyedLocks()
    events: list[str] = []
    go_on = asyncio.Event()

    async def hold(key: str, name: str) -> None:
        async with locks.hold(key):
            events.append(f"{name} in")
            await go_on.wait()
            events.append(f"{name} out")

    who = (("b", "b1"), ("b", "b2"), ("c", "c1"))
    holders = [asyncio.create_task(hold(key, name)) for key, name in who]

    async def first_ones_in() -> bool:
        return {"b1 in", "c1 in"} <= set(events)

    await eventually(first_ones_in)
    assert "b2 in" not in events  # behind b1, on the same key
    assert len(locks) == 2
    go_on.set()
    await asyncio.gather(*holders)
    assert events.index("b1 out") < events.index("b2 in")
    assert len(locks) == 0


def test_a_take_is_of_one_item_at_least_and_none_without_room() -> None:
    assert Take.up_to(3, 60) == Take(3, 60)
    assert Take.up_to(0, 60) is None  # stored for a claim instead
    with pytest.raises(ValueError, match=r"Take\.limit: expected at least 1, got 0"):
        Take(0, 60)
