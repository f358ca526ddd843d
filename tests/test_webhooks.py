"""The webhook endpoints: what is refused (and leaves no trace), what is stored, and when."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import BOT_NUMBER, DATA, Harness, eventually, inbound

StartBot = Callable[..., Awaitable[Harness]]
SEED = ["11234567891", "11234567892", "11234567893"]


def count(bot: Harness, table: str) -> int:
    with sqlite3.connect(bot.bot.config.sqlite_path) as db:
        row = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()  # noqa: S608 - fixed names
    return int(row[0])


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


VALID = inbound(SEED[0], "ticket 42", SEED[1:])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "(body)"),
        (b"[]", "(body)"),
        (json.dumps(without(VALID, "message_uuid")).encode(), "message_uuid"),
        (json.dumps(without(VALID, "from")).encode(), "from"),
        (json.dumps(without(VALID, "to")).encode(), "to"),
        (json.dumps(without(VALID, "timestamp")).encode(), "timestamp"),
        (json.dumps(without(VALID, "message_type")).encode(), "message_type"),
        (json.dumps(without(VALID, "text")).encode(), "text"),
        (json.dumps({**VALID, "message_uuid": "not-a-uuid"}).encode(), "message_uuid"),
        (json.dumps({**VALID, "channel": "sms"}).encode(), "channel"),
        (json.dumps({**VALID, "message_type": "sticker"}).encode(), "message_type"),
        (json.dumps({**VALID, "message_type": "image"}).encode(), "image"),
        (json.dumps({**VALID, "from": "12"}).encode(), "from"),
        (json.dumps({**VALID, "to": "11234567899"}).encode(), "to"),
        (
            json.dumps({**VALID, "mms": {"participants": [SEED[1], "call me"]}}).encode(),
            "mms.participants[1]",
        ),
        (
            json.dumps({**VALID, "message_type": "image", "image": {"caption": "x"}}).encode(),
            "image.url",
        ),
    ],
)
async def test_bad_inbound_body_is_400_naming_the_field_and_nothing_is_stored_or_sent(
    start_bot: StartBot, body: bytes, field: str
) -> None:
    bot = await start_bot()

    response = await bot.post_inbound(body)

    assert response.status == 400
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["field"] == field
    assert problem["detail"].startswith(field)
    assert count(bot, "inbound") == 0
    assert count(bot, "outbound") == 0
    assert bot.api.attempts == []


async def test_the_docs_inbound_example_is_refused_for_its_uk_numbers(
    start_bot: StartBot,
) -> None:
    # Vonage's example uses UK numbers; group MMS reaches only US and Canadian ones.
    bot = await start_bot()
    body = json.loads((DATA / "vonage" / "inbound-mms-group.example.json").read_text())
    body["to"] = BOT_NUMBER

    response = await bot.post_inbound(body)

    assert response.status == 400
    problem = await response.json()
    assert problem["field"] == "from"
    assert problem["detail"].endswith("group MMS reaches only those, got 447700900001")
    assert count(bot, "inbound") == 0


async def test_the_guides_inbound_example_is_accepted(start_bot: StartBot) -> None:
    bot = await start_bot()
    body = json.loads((DATA / "vonage" / "inbound-mms-group.example.json").read_text())
    body.update(to=BOT_NUMBER, mms={"participants": SEED[1:]}, **{"from": SEED[0]})

    response = await bot.post_inbound(body)

    assert response.status == 200
    assert await response.json() == {
        "message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab",
        "duplicate": False,
    }
    assert count(bot, "inbound") == 1


async def test_a_message_is_durable_when_answered_200(start_bot: StartBot) -> None:
    bot = await start_bot()
    body = inbound(SEED[0], "nothing to answer here", SEED[1:])

    response = await bot.post_inbound(body)

    assert response.status == 200
    # A separate connection to the file sees the committed row: it is on disk, not in a cache.
    with sqlite3.connect(bot.bot.config.sqlite_path) as db:
        stored = db.execute(
            "SELECT body FROM inbound WHERE message_uuid = ?", (body["message_uuid"],)
        ).fetchone()
    assert json.loads(stored[0]) == body


async def test_an_answer_is_sent_only_once_it_and_its_message_are_durable(
    start_bot: StartBot,
) -> None:
    bot = await start_bot()
    held = asyncio.Event()
    bot.api.respond(202, hold=held)  # the first send waits here while we look
    body = inbound(SEED[0], "ticket 42", SEED[1:])

    await bot.post_inbound(body)
    await bot.api.wait_for_arrived(1)

    # A separate connection to the file: what it sees is committed.
    with sqlite3.connect(bot.bot.config.sqlite_path) as db:
        message = db.execute(
            "SELECT state FROM inbound WHERE message_uuid = ?", (body["message_uuid"],)
        ).fetchone()
        answers = db.execute(
            "SELECT COUNT(*) FROM outbound WHERE inbound_uuid = ?", (body["message_uuid"],)
        ).fetchone()
    held.set()
    assert message == ("done",)
    assert answers == (3,)
    await bot.api.wait_for_accepted(3)


async def test_store_failure_answers_503_so_that_vonage_retries(start_bot: StartBot) -> None:
    bot = await start_bot()
    await bot.runtime.store.close()

    response = await bot.post_inbound(inbound(SEED[0], "ticket 1", SEED[1:]))

    assert response.status == 503
    assert (await response.json())["title"] == "Store unavailable"


async def test_status_callback_is_recorded_against_the_member_message(start_bot: StartBot) -> None:
    bot = await start_bot()
    await bot.post_inbound(inbound(SEED[0], "ticket 42", SEED[1:]))
    accepted = await bot.api.wait_for_accepted(3)
    target = accepted[0]

    async def recorded() -> bool:
        with sqlite3.connect(bot.bot.config.sqlite_path) as db:
            row = db.execute(
                "SELECT state FROM outbound WHERE message_uuid = ?", (target.message_uuid,)
            ).fetchone()
        return row is not None and row[0] == "sent"

    await eventually(recorded)
    status = json.loads((DATA / "vonage" / "message-status-mms.submitted.example.json").read_text())
    status.update(
        message_uuid=target.message_uuid,
        to=target.body["to"],
        client_ref=target.body["client_ref"],  # echoed from the send, as the API does
        **{"from": BOT_NUMBER},
    )
    response = await bot.post_status(status)

    assert response.status == 200
    assert await response.json() == {"message_uuid": target.message_uuid, "known": True}
    with sqlite3.connect(bot.bot.config.sqlite_path) as db:
        row = db.execute(
            "SELECT status, price, currency FROM outbound WHERE message_uuid = ?",
            (target.message_uuid,),
        ).fetchone()
    assert row == ("submitted", "0.0333", "EUR")


async def test_status_for_an_unknown_message_is_kept_and_acknowledged(start_bot: StartBot) -> None:
    bot = await start_bot()
    status = (DATA / "vonage" / "message-status-mms.rejected.example.json").read_bytes()

    response = await bot.post_status(status)

    assert response.status == 200
    assert (await response.json())["known"] is False
    assert count(bot, "statuses") == 1


async def test_bad_status_body_is_400_naming_the_field(start_bot: StartBot) -> None:
    bot = await start_bot()
    status = json.loads((DATA / "vonage" / "message-status-mms.submitted.example.json").read_text())
    status["status"] = "lost"

    response = await bot.post_status(status)

    assert response.status == 400
    assert (await response.json())["field"] == "status"
    assert count(bot, "statuses") == 0


async def test_health_and_readiness(start_bot: StartBot) -> None:
    bot = await start_bot()

    assert (await bot.client.get("/healthz")).status == 200
    assert (await bot.client.get("/readyz")).status == 200
    await bot.runtime.store.close()
    assert (await bot.client.get("/readyz")).status == 503
