"""`POST /api/messages`: start a group conversation with a bearer token."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import BOT_NUMBER, Harness

StartBot = Callable[..., Awaitable[Harness]]
SEED = ["11234567891", "11234567892", "11234567893"]
AUTH = {"Authorization": "Bearer test-token"}


def outbound_rows(bot: Harness) -> int:
    with sqlite3.connect(bot.bot.config.sqlite_path) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbound").fetchone()[0])


async def test_send_reaches_every_member_with_recomputed_participants(start_bot: StartBot) -> None:
    bot = await start_bot()

    response = await bot.client.post(
        "/api/messages", json={"to": SEED, "text": "Hello from Vonage"}, headers=AUTH
    )

    assert response.status == 202
    answer = await response.json()
    assert [m["to"] for m in answer["messages"]] == SEED
    accepted = await bot.api.wait_for_accepted(3)
    assert sorted((r.body["to"], r.body["mms"]["participants"]) for r in accepted) == [
        (SEED[0], [SEED[1], SEED[2]]),
        (SEED[1], [SEED[0], SEED[2]]),
        (SEED[2], [SEED[0], SEED[1]]),
    ]
    assert {r.body["from"] for r in accepted} == {BOT_NUMBER}


async def test_send_renders_a_template_with_members_and_variables(start_bot: StartBot) -> None:
    bot = await start_bot()

    response = await bot.client.post(
        "/api/messages", json={"to": SEED[:2], "template": "welcome.txt.j2"}, headers=AUTH
    )

    assert response.status == 202
    accepted = await bot.api.wait_for_accepted(2)
    assert all(
        r.body["text"].startswith("Hello from groupbot! This thread connects 2 people")
        for r in accepted
    )


async def test_send_can_carry_an_image(start_bot: StartBot) -> None:
    bot = await start_bot()
    media = {"kind": "image", "url": "https://example.com/van.jpg", "caption": "Our van"}

    response = await bot.client.post(
        "/api/messages", json={"to": SEED[:2], "media": media}, headers=AUTH
    )

    assert response.status == 202
    accepted = await bot.api.wait_for_accepted(2)
    assert {
        (r.body["message_type"], r.body["image"]["url"], r.body["image"]["caption"])
        for r in accepted
    } == {("image", "https://example.com/van.jpg", "Our van")}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "test-token"}]
)
async def test_send_without_the_right_token_is_401_and_sends_nothing(
    start_bot: StartBot, headers: dict[str, str]
) -> None:
    bot = await start_bot()

    response = await bot.client.post(
        "/api/messages", json={"to": SEED, "text": "hi"}, headers=headers
    )

    assert response.status == 401
    assert outbound_rows(bot) == 0


async def test_admin_api_is_off_without_a_configured_token(start_bot: StartBot) -> None:
    bot = await start_bot({"server": {"api_token": ""}})

    response = await bot.client.post(
        "/api/messages", json={"to": SEED, "text": "hi"}, headers={"Authorization": "Bearer "}
    )

    assert response.status == 403
    assert outbound_rows(bot) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to": [], "text": "hi"}, "to"),
        ({"to": ["11234567891", "nope"], "text": "hi"}, "to[1]"),
        ({"to": SEED}, "text"),
        ({"to": SEED, "text": "hi", "template": "welcome.txt.j2"}, "text"),
        ({"to": SEED, "template": "missing.txt.j2"}, "template"),
        ({"to": SEED, "text": "hi", "colour": "red"}, "colour"),
        ({"to": SEED, "media": {"kind": "hologram", "url": "https://x.example/a"}}, "media.kind"),
        ({"to": SEED, "media": {"kind": "image", "url": "ftp://x.example/a.jpg"}}, "media"),
        ({"to": [BOT_NUMBER], "text": "hi"}, "to"),
        ({"to": [SEED[0], "447700900001"], "text": "hi"}, "to[1]"),  # MMS: US and Canada only
        ({"to": [f"1202555{i:04d}" for i in range(11)], "text": "hi"}, "to"),
    ],
)
async def test_bad_send_request_is_400_naming_the_field(
    start_bot: StartBot, body: dict[str, Any], field: str
) -> None:
    bot = await start_bot()

    response = await bot.client.post("/api/messages", json=body, headers=AUTH)

    assert response.status == 400
    assert (await response.json())["field"] == field
    assert outbound_rows(bot) == 0


async def test_an_oversized_request_is_413_as_a_problem(start_bot: StartBot) -> None:
    bot = await start_bot({"server": {"max_body_bytes": 2048}})

    response = await bot.client.post(
        "/api/messages", json={"to": SEED, "text": "x" * 4000}, headers=AUTH
    )

    assert response.status == 413
    assert response.content_type == "application/problem+json"
    assert outbound_rows(bot) == 0


async def test_a_retry_with_the_same_idempotency_key_is_not_queued_again(
    start_bot: StartBot,
) -> None:
    bot = await start_bot()
    keyed = {**AUTH, "Idempotency-Key": "order-1042-welcome"}
    body = {"to": SEED, "text": "Welcome aboard"}

    first = await bot.client.post("/api/messages", json=body, headers=keyed)
    again = await bot.client.post("/api/messages", json=body, headers=keyed)  # answer "lost"
    other = await bot.client.post(
        "/api/messages", json=body, headers={**AUTH, "Idempotency-Key": "order-1043-welcome"}
    )
    bad = await bot.client.post("/api/messages", json=body, headers={**AUTH, "Idempotency-Key": ""})

    assert (first.status, again.status, other.status, bad.status) == (202, 200, 202, 400)
    queued, repeated = await first.json(), await again.json()
    assert repeated["broadcast_id"] == queued["broadcast_id"]
    assert repeated["duplicate"] is True
    assert [m["to"] for m in repeated["messages"]] == SEED
    assert (await bad.json())["field"] == "Idempotency-Key"
    accepted = await bot.api.wait_for_accepted(6)  # the first and the other, once each
    assert sorted(str(r.body["to"]) for r in accepted) == sorted(SEED * 2)
    assert outbound_rows(bot) == 6


async def test_an_idempotency_key_used_for_another_request_is_422(start_bot: StartBot) -> None:
    bot = await start_bot()
    keyed = {**AUTH, "Idempotency-Key": "daily"}
    monday = await bot.client.post(
        "/api/messages", json={"to": SEED, "text": "Monday"}, headers=keyed
    )
    tuesday = await bot.client.post(
        "/api/messages", json={"to": SEED[:2], "text": "Tuesday"}, headers=keyed
    )

    image = {"kind": "image", "url": "https://example.com/a.jpg", "caption": "Menu"}
    other_image = {**image, "url": "https://example.com/b.jpg"}  # the same caption
    menus = [
        await bot.client.post(
            "/api/messages",
            json={"to": SEED, "media": media},
            headers={**AUTH, "Idempotency-Key": "menu"},
        )
        for media in (image, other_image)
    ]
    wider = await bot.client.post(  # Monday's, to one member more
        "/api/messages", json={"to": [*SEED, "11234567894"], "text": "Monday"}, headers=keyed
    )

    assert (monday.status, tuesday.status) == (202, 422)
    assert [m.status for m in menus] == [202, 422]
    assert wider.status == 422
    assert (await tuesday.json())["field"] == "Idempotency-Key"
    assert outbound_rows(bot) == 6  # Monday's and the first menu's, nothing of the others


async def test_the_same_idempotency_key_at_once_queues_one_broadcast(start_bot: StartBot) -> None:
    bot = await start_bot()
    keyed = {**AUTH, "Idempotency-Key": "burst-7"}
    body = {"to": SEED, "text": "Once"}

    answers = await asyncio.gather(
        *(bot.client.post("/api/messages", json=body, headers=keyed) for _ in range(4))
    )

    # One queued it; the others were told so, not told to retry what was done.
    assert sorted(a.status for a in answers) == [200, 200, 200, 202]
    ids = {(await a.json())["broadcast_id"] for a in answers}
    assert len(ids) == 1
    assert outbound_rows(bot) == 3
    accepted = await bot.api.wait_for_accepted(3)  # and sent, once each
    assert sorted(str(r.body["to"]) for r in accepted) == SEED
