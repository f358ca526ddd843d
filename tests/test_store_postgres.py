"""What only the PostgreSQL store does: migrations raced by a fleet starting together, claims
by many processes at once, the fleet's shared send slots, and LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from bot.groups import Group
from bot.store import Store, Take, open_store
from bot.store.schema import POSTGRES_MIGRATIONS
from tests.conftest import until
from tests.postgres import TemporaryPostgres
from tests.test_store import A, accept, planned, take_in

NOW = 1_000_000.0


@pytest.fixture
def url(postgres: TemporaryPostgres) -> str:
    return postgres.create_database()


@pytest.fixture
async def fleet(url: str, tmp_path: Path) -> AsyncIterator[list[Store]]:
    """Three stores on one new database, as three processes would have."""
    stores = list(await asyncio.gather(*(open_store(url, root=tmp_path) for _ in range(3))))
    yield stores
    for store in stores:
        await store.close()


async def test_a_fleet_starting_together_migrates_once(fleet: list[Store]) -> None:
    versions = [await store.schema_version() for store in fleet]
    assert versions == [len(POSTGRES_MIGRATIONS)] * 3


async def test_the_apis_message_uuid_has_no_unique_index(url: str, fleet: list[Store]) -> None:
    # Schema v4: a status finds its message by client_ref; the index on the API's id went.
    conn = await asyncpg.connect(url)
    try:
        indexed = await conn.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'outbound' "
            "AND indexdef LIKE '%(message_uuid)%'"
        )
        constraints = await conn.fetch(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'outbound'::regclass"
        )
    finally:
        await conn.close()
    assert indexed == []
    assert "outbound_client_ref_key" in {row["conname"] for row in constraints}


async def test_a_fleet_claiming_at_once_keeps_each_group_in_order_and_once(
    fleet: list[Store],
) -> None:
    groups = [Group((f"1202555{n:04d}", f"1202556{n:04d}")) for n in range(8)]
    arrival = {group.key: [f"{group.key}-{k}" for k in range(6)] for group in groups}
    for k in range(6):
        for group in groups:
            await accept(fleet[k % 3], arrival[group.key][k], group)
    handled: dict[str, list[str]] = {group.key: [] for group in groups}
    busy: set[str] = set()

    async def process(store: Store) -> None:
        idle = 0
        while idle < 20:
            items = await store.claim_inbound(4, NOW, 60, 5)
            idle = 0 if items else idle + 1
            for item in items:
                assert item.group_key not in busy, "two messages of one group at once"
                busy.add(item.group_key)
                await asyncio.sleep(random.uniform(0, 0.003))
                handled[item.group_key].append(item.message_uuid)
                busy.discard(item.group_key)
                await store.complete_inbound(item, now=NOW, route=None, outbound=[], state=None)
            await asyncio.sleep(0)

    await asyncio.gather(*(process(store) for store in fleet for _ in range(2)))

    assert handled == arrival


async def test_send_slots_are_shared_by_the_fleet(fleet: list[Store]) -> None:
    waits = await asyncio.gather(
        *(store.reserve_send("account", 1.0) for _ in range(5) for store in fleet)
    )

    # Fifteen reservations made within a few milliseconds get fifteen slots a second apart,
    # whichever process asked: the first now, the last 14 s from now.
    for slot, wait in enumerate(sorted(waits)):
        assert slot - 0.25 < wait <= slot + 0.05
    assert await fleet[0].reserve_send("number:12025550100", 1.0) == 0.0  # its own schedule


async def test_processes_are_woken_by_what_another_one_stores(fleet: list[Store]) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    fleet[0].listen(heard.put_nowait)
    assert {await heard.get(), await heard.get()} == {"inbox", "outbox"}  # on connecting

    group = Group(("12025550101", "12025550102"))
    await accept(fleet[1], "m1", group)
    assert await asyncio.wait_for(heard.get(), 5) == "inbox"
    await fleet[2].enqueue(planned("b-1", group), group.members, NOW)
    assert await asyncio.wait_for(heard.get(), 5) == "outbox"

    await fleet[2].enqueue(planned("b-2", group), group.members, NOW)  # behind b-1
    assert await asyncio.wait_for(heard.get(), 5) == "outbox"

    # A member's message sent, with another waiting behind it: that one may go now, and the
    # fleet is told. A retry is not announced (it is picked up when it is due), nor a send
    # with nothing behind it (no one has anything new to claim).
    first, second = await fleet[2].claim_outbound(10, NOW, 60, 8)
    await fleet[2].record_retry(first, "HTTP 500", NOW + 60)
    await accept(fleet[1], "m2", Group(("12025550103",)))  # a marker: heard next, nothing before
    assert await asyncio.wait_for(heard.get(), 5) == "inbox"
    assert await fleet[2].record_sent(second, "uuid-2", NOW) is False  # the retry is left
    assert await asyncio.wait_for(heard.get(), 5) == "outbox"
    [last] = await fleet[2].claim_outbound(10, NOW, 60, 8)  # b-2 for the second member
    assert last.message.to == second.message.to
    await fleet[2].record_sent(last, "uuid-3", NOW)
    await accept(fleet[1], "m3", Group(("12025550104",)))
    assert await asyncio.wait_for(heard.get(), 5) == "inbox"  # the marker: nothing before it


async def test_a_group_message_completed_tells_the_fleet_when_the_next_may_go(
    fleet: list[Store],
) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    fleet[0].listen(heard.put_nowait)
    assert {await heard.get(), await heard.get()} == {"inbox", "outbox"}  # on connecting
    group = Group(("12025550101", "12025550102"))
    for uuid in ("m1", "m2"):
        await accept(fleet[1], uuid, group)
        assert await asyncio.wait_for(heard.get(), 5) == "inbox"  # stored
    [first] = await fleet[2].claim_inbound(10, NOW, 60, 5)  # m2 waits behind it

    await fleet[2].complete_inbound(first, now=NOW, route=None, outbound=[], state=None)
    assert await asyncio.wait_for(heard.get(), 5) == "inbox"  # m2 may go now
    [second] = await fleet[1].claim_inbound(10, NOW, 60, 5)
    assert second.message_uuid == "m2"
    await fleet[1].complete_inbound(second, now=NOW, route=None, outbound=[], state=None)
    await accept(fleet[1], "marker", Group(("12025550103",)))
    assert await asyncio.wait_for(heard.get(), 5) == "inbox"  # the marker: nothing before it
    assert heard.empty()


async def test_the_listener_reconnects_when_its_connection_is_lost(
    fleet: list[Store], url: str
) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    fleet[0].listen(heard.put_nowait)
    await heard.get()
    await heard.get()

    admin = await asyncpg.connect(url)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%' AND datname = current_database()"
        )
    finally:
        await admin.close()

    assert killed == 1
    # Reconnected: told to look for what it may have missed, then woken as before.
    assert {await asyncio.wait_for(heard.get(), 10) for _ in range(2)} == {"inbox", "outbox"}
    await accept(fleet[1], "after", Group(("12025550101",)))
    assert await asyncio.wait_for(heard.get(), 5) == "inbox"


async def test_a_connection_goes_back_to_the_pool_without_a_reset_round_trip(
    postgres: TemporaryPostgres, url: str, tmp_path: Path
) -> None:
    """asyncpg's default reset (advisory locks, cursors, LISTEN, settings) is a round trip
    each time a unit of work gives its connection back, and the store leaves none of those
    behind: the server's own statement log shows the units' statements and no reset."""
    postgres.log_statements(url)
    logged = postgres.logged_from_here()
    store = await open_store(url, root=tmp_path)
    try:
        for n in range(5):
            assert await accept(store, f"m{n}", A)
        await store.enqueue(planned("b1", A), A.members, NOW)
        await store.opted_out(A.members)
    finally:
        await store.close()

    await until(lambda: "INSERT INTO outbound" in logged())  # written as the server goes
    assert logged().count("INSERT INTO inbound") == 5
    assert "pg_advisory_unlock_all" not in logged()
    assert "RESET ALL" not in logged()


async def test_a_warm_store_has_its_connections_open_and_its_types_known_before_any_message(
    postgres: TemporaryPostgres, url: str, tmp_path: Path
) -> None:
    """asyncpg asks the server what the array types a statement binds are, once a connection
    (a query of the catalogue, `typeinfo_tree`): `groupbot run`'s store opens all its pooled
    connections at start and asks each then, so that no message waits for it."""
    postgres.log_statements(url)
    store = await open_store(url, root=tmp_path, pool_size=3, warm=True)
    try:
        opened = store._pool.get_size()  # type: ignore[attr-defined]
        logged = postgres.logged_from_here()

        async def answered(n: int) -> None:  # the answers queued and taken in one statement
            group = Group((f"1202555{n:04d}", f"1303555{n:04d}", f"1404555{n:04d}"))
            item = (await take_in(store, f"m{n}", group)).item
            assert item is not None
            await store.complete_inbound(
                item, now=NOW, route="r", outbound=planned(f"m{n}", group), state=None,
                take=Take(3, 60),
            )  # fmt: skip

        await asyncio.gather(*(answered(n) for n in range(6)))  # at once: on several
    finally:
        await store.close()
    command = await open_store(url, root=tmp_path, pool_size=3)  # as `groupbot send` opens it
    try:
        opened_by_a_command = command._pool.get_size()  # type: ignore[attr-defined]
    finally:
        await command.close()

    await until(lambda: logged().count("INSERT INTO outbound") >= 6)  # written as it goes
    assert opened == 3
    assert opened_by_a_command == 1
    assert "typeinfo_tree" not in logged()
