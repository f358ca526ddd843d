"""The embedded simulator: no account, messages delivered to simulated phones, a web chat."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from bot.simulator import SimulatorProvider
from tests.conftest import BOT_NUMBER, Harness, eventually

StartBot = Callable[..., Awaitable[Harness]]
SEED = ["11234567891", "11234567892", "11234567893"]
SIMULATOR = {"provider": {"kind": "simulator"}}


async def test_a_member_message_is_answered_in_every_members_thread(start_bot: StartBot) -> None:
    bot = await start_bot(SIMULATOR)

    posted = await bot.client.post(
        "/simulator/messages", json={"from": SEED[0], "members": SEED, "text": "ticket 7"}
    )
    assert posted.status == 201
    key, message_uuid = (await posted.json())["group"], (await posted.json())["message_uuid"]
    record = await bot.runtime.store.inbound(message_uuid)  # what `groupbot status` reads
    assert record is not None
    assert record.group_key == key

    async def answered() -> bool:
        convo = await (await bot.client.get(f"/simulator/groups/{key}")).json()
        phones = [convo["phones"][m] for m in SEED]
        return all(len(p) == 2 and p[1]["state"] == "delivered" for p in phones)

    await eventually(answered)
    convo = await (await bot.client.get(f"/simulator/groups/{key}")).json()
    answer = "Ticket #7 is open. Everyone in this thread (3 people) will get its updates here."
    assert convo["members"] == SEED
    for member in SEED:
        said, reply = convo["phones"][member]
        assert (said["from"], said["text"], said["mine"]) == (
            SEED[0],
            "ticket 7",
            member == SEED[0],
        )
        assert (reply["from"], reply["text"], reply["state"]) == (BOT_NUMBER, answer, "delivered")
        assert reply["participants"] == [m for m in SEED if m != member]  # recomputed for each
    assert bot.api.attempts == []  # nothing left the process


async def test_simulator_provider_gives_each_message_its_own_uuid(start_bot: StartBot) -> None:
    bot = await start_bot(SIMULATOR)
    provider = bot.runtime.provider
    assert isinstance(provider, SimulatorProvider)

    response = await bot.client.post(
        "/api/messages",
        json={"to": SEED, "text": "Hello from Vonage"},
        headers={"Authorization": "Bearer test-token"},
    )
    assert response.status == 202

    async def delivered() -> bool:
        return len(provider.sent) == 3

    await eventually(delivered)
    assert len({uuid for uuid, _ in provider.sent}) == 3
    assert sorted(m.to for _, m in provider.sent) == SEED


async def test_web_chat_page_and_group_list_are_served(start_bot: StartBot) -> None:
    bot = await start_bot(SIMULATOR)
    await bot.client.post(
        "/simulator/messages", json={"from": SEED[1], "members": SEED, "text": "hi"}
    )

    page = await bot.client.get("/")
    groups: list[dict[str, Any]] = await (await bot.client.get("/simulator/groups")).json()

    assert page.status == 200
    assert "groupbot web chat" in await page.text()
    assert [g["members"] for g in groups] == [[SEED[1], SEED[0], SEED[2]]]


async def test_bad_member_message_is_400_naming_the_field(start_bot: StartBot) -> None:
    bot = await start_bot(SIMULATOR)

    response = await bot.client.post(
        "/simulator/messages", json={"from": "12", "members": SEED, "text": "hi"}
    )

    assert response.status == 400
    assert (await response.json())["field"] == "from"


async def test_members_are_checked_and_named_as_the_request_names_them(
    start_bot: StartBot,
) -> None:
    bot = await start_bot({**SIMULATOR, "bot": {"number": BOT_NUMBER, "max_group_size": 3}})

    async def refused(members: list[str], sender: str = SEED[0]) -> tuple[str, str]:
        response = await bot.client.post(
            "/simulator/messages", json={"from": sender, "members": members, "text": "hi"}
        )
        assert response.status == 400
        problem = await response.json()
        return problem["field"], problem["detail"]

    field, detail = await refused([SEED[0], "442071838750"])
    assert field == "members[1]"
    assert "expected a US or Canadian number" in detail
    assert await refused([SEED[0], BOT_NUMBER]) == (
        "members[1]",
        "members[1]: the bot's own number is in every group, not a member",
    )
    assert await refused(SEED, sender=BOT_NUMBER) == (
        "from",
        "from: the bot's own number cannot write as a member",
    )
    assert await refused([*SEED, "11234567894"]) == (
        "members",
        "members: expected at most 3 members, got 4",
    )
    assert await bot.runtime.store.groups() == []  # nothing was stored


async def test_web_chat_is_not_served_with_a_real_provider(start_bot: StartBot) -> None:
    bot = await start_bot()

    assert (await bot.client.get("/")).status == 404
    assert (await bot.client.post("/simulator/messages", json={})).status == 404


async def test_live_updates_stream_each_change_of_the_conversation(start_bot: StartBot) -> None:
    bot = await start_bot(SIMULATOR)
    posted = await bot.client.post(
        "/simulator/messages", json={"from": SEED[0], "members": SEED, "text": "hello all"}
    )
    key = (await posted.json())["group"]

    stream = await bot.client.get(f"/simulator/groups/{key}/events")
    assert stream.headers["Content-Type"] == "text/event-stream"
    first = await asyncio.wait_for(stream.content.readuntil(b"\n\n"), 5)
    await bot.client.post(
        "/simulator/messages", json={"from": SEED[1], "members": SEED, "text": "ticket 9"}
    )
    while True:  # events until the bot's answer to ticket 9 shows in a phone
        event = await asyncio.wait_for(stream.content.readuntil(b"\n\n"), 5)
        if event.startswith(b"data: ") and b"Ticket #9 is open" in event:
            break

    assert json.loads(first.removeprefix(b"data: "))["phones"][SEED[2]][0]["text"] == "hello all"
    stream.close()
