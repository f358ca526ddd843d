"""The whole path, over real HTTP on loopback: webhook -> store -> route -> handler/template ->
one message per member at the (fake) Messages API."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from tests import plugins
from tests.conftest import BOT_NUMBER, DATA, Harness, eventually, inbound

StartBot = Callable[..., Awaitable[Harness]]
SEED = ["11234567891", "11234567892", "11234567893"]
FIVE = ["12025550101", "12025550102", "12025550103", "12025550104", "12025550105"]


def config_with(*routes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Overrides for a bot with the tests' own plugins and templates."""
    return {
        "routes": list(routes),
        "plugins": ["tests.plugins"],
        "templates": str(DATA / "templates"),
        "handlers": {"error_template": None},
        **extra,
    }


def inbound_state(bot: Harness, message_uuid: str) -> tuple[str, str | None, str | None] | None:
    """(state, route, error) of a stored inbound message, read straight from the SQLite file."""
    with sqlite3.connect(bot.bot.config.sqlite_path) as db:
        row = db.execute(
            "SELECT state, route, error FROM inbound WHERE message_uuid = ?", (message_uuid,)
        ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


async def processed(bot: Harness, message_uuid: str) -> tuple[str, str | None, str | None]:
    async def done() -> bool:
        state = inbound_state(bot, message_uuid)
        return state is not None and state[0] in ("done", "failed")

    await eventually(done)
    state = inbound_state(bot, message_uuid)
    assert state is not None
    return state


def by_recipient(bodies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {body["to"]: body for body in bodies}


async def test_seed_group_of_three_gets_the_exact_requests_of_the_docs(start_bot: StartBot) -> None:
    bot = await start_bot(
        config_with({"name": "hello", "keywords": ["hello"], "template": "hello.txt.j2"})
    )
    response = await bot.post_inbound(inbound(SEED[0], "Hello to the group!", SEED[1:]))
    assert response.status == 200

    accepted = await bot.api.wait_for_accepted(3)
    expected = json.loads((DATA / "vonage" / "outbound-mms-group.docs-example.json").read_text())
    # Each also carries a client_ref (echoed in its status callbacks), unique per member.
    refs = [r.body.pop("client_ref") for r in accepted]
    assert by_recipient([r.body for r in accepted]) == by_recipient(expected)
    assert len(set(refs)) == 3


async def test_five_member_group_each_member_lists_the_other_four(start_bot: StartBot) -> None:
    bot = await start_bot(config_with({"name": "echo", "keywords": ["ping"], "handler": "echo"}))
    await bot.post_inbound(inbound(FIVE[2], "ping", [FIVE[0], FIVE[1], FIVE[3], FIVE[4]]))

    accepted = await bot.api.wait_for_accepted(5)
    bodies = by_recipient([r.body for r in accepted])
    assert sorted(bodies) == sorted(FIVE)
    for member, body in bodies.items():
        assert body == {
            "to": member,
            "from": BOT_NUMBER,
            "channel": "mms",
            "message_type": "text",
            "text": "echo: ping",
            "mms": {
                "participants": [
                    m for m in [FIVE[2], FIVE[0], FIVE[1], FIVE[3], FIVE[4]] if m != member
                ]
            },
            "client_ref": body["client_ref"],
        }
    assert len(bot.api.attempts) == 5


async def test_bot_number_in_participants_is_never_a_member(start_bot: StartBot) -> None:
    bot = await start_bot(config_with({"name": "echo", "keywords": ["ping"], "handler": "echo"}))
    await bot.post_inbound(inbound(SEED[0], "ping", [SEED[1], BOT_NUMBER, SEED[1]]))

    accepted = await bot.api.wait_for_accepted(2)
    assert {r.body["to"] for r in accepted} == {SEED[0], SEED[1]}
    assert all(BOT_NUMBER not in r.body["mms"]["participants"] for r in accepted)


async def test_one_to_one_message_is_answered_without_participants(start_bot: StartBot) -> None:
    bot = await start_bot(config_with({"name": "echo", "keywords": ["ping"], "handler": "echo"}))
    await bot.post_inbound(inbound(SEED[0], "ping"))

    [request] = await bot.api.wait_for_accepted(1)
    assert request.body["to"] == SEED[0]
    assert "mms" not in request.body


async def test_the_answer_does_not_wait_for_a_slow_handler(start_bot: StartBot) -> None:
    plugins.gate = asyncio.Event()
    bot = await start_bot(config_with({"name": "slow", "keywords": ["wait"], "handler": "slow"}))
    body = inbound(SEED[0], "please wait", SEED[1:])

    response = await bot.post_inbound(body)

    assert response.status == 200
    assert inbound_state(bot, body["message_uuid"]) is not None  # durable before the 200
    assert bot.api.attempts == []
    plugins.gate.set()
    accepted = await bot.api.wait_for_accepted(3)
    assert {r.body["text"] for r in accepted} == {"done waiting"}


async def test_same_message_uuid_is_processed_once_however_often_it_arrives(
    start_bot: StartBot,
) -> None:
    bot = await start_bot(config_with({"name": "echo", "keywords": ["ping"], "handler": "echo"}))
    body = inbound(SEED[0], "ping", SEED[1:])

    first = await bot.post_inbound(body)
    concurrent = await asyncio.gather(*(bot.post_inbound(body) for _ in range(5)))

    assert first.status == 200
    assert (await first.json())["duplicate"] is False
    assert [r.status for r in concurrent] == [200] * 5
    assert [(await r.json())["duplicate"] for r in concurrent] == [True] * 5
    await processed(bot, body["message_uuid"])
    await bot.api.wait_for_accepted(3)
    with sqlite3.connect(bot.bot.config.sqlite_path) as db:
        assert db.execute("SELECT COUNT(*) FROM inbound").fetchone() == (1,)
        assert db.execute("SELECT COUNT(*) FROM outbound").fetchone() == (3,)


async def test_no_matching_route_means_silence(start_bot: StartBot) -> None:
    bot = await start_bot(config_with({"name": "echo", "keywords": ["ping"], "handler": "echo"}))
    body = inbound(SEED[0], "see you all at noon", SEED[1:])
    await bot.post_inbound(body)

    assert await processed(bot, body["message_uuid"]) == ("done", None, None)
    assert bot.api.attempts == []


async def test_fallback_answers_when_configured(start_bot: StartBot) -> None:
    bot = await start_bot(
        config_with(
            {"name": "echo", "keywords": ["ping"], "handler": "echo"},
            fallback={"template": "hello.txt.j2"},
        )
    )
    body = inbound(SEED[0], "see you all at noon", SEED[1:])
    await bot.post_inbound(body)

    accepted = await bot.api.wait_for_accepted(3)
    assert {r.body["text"] for r in accepted} == {"Hello from Vonage"}
    assert (await processed(bot, body["message_uuid"]))[1] == "fallback"


async def test_template_sees_message_group_match_and_handler_variables(start_bot: StartBot) -> None:
    bot = await start_bot(
        config_with(
            {
                "name": "ticket",
                "pattern": r"ticket\s+(?P<ticket_id>\d+)",
                "handler": "match_values",
                "template": "everything.txt.j2",
            }
        )
    )
    await bot.post_inbound(inbound(SEED[0], "About Ticket 42", SEED[1:]))

    accepted = await bot.api.wait_for_accepted(3)
    expected = f"ticket|About Ticket 42|{SEED[0]}|{','.join(SEED)}|{BOT_NUMBER}|42|from the handler"
    assert {r.body["text"] for r in accepted} == {expected}


async def test_handler_that_raises_is_logged_and_the_bot_keeps_serving(start_bot: StartBot) -> None:
    bot = await start_bot(
        config_with(
            {"name": "boom", "keywords": ["boom"], "handler": "boom"},
            {"name": "echo", "keywords": ["ping"], "handler": "echo"},
        )
    )
    failing = inbound(SEED[0], "boom", SEED[1:])
    await bot.post_inbound(failing)
    state, route, error = await processed(bot, failing["message_uuid"])
    assert (state, route) == ("failed", "boom")
    assert error == "RuntimeError: handler exploded"

    await bot.post_inbound(inbound(SEED[0], "ping", SEED[1:]))
    accepted = await bot.api.wait_for_accepted(3)
    assert {r.body["text"] for r in accepted} == {"echo: ping"}


async def test_a_handler_that_blocks_the_loop_is_named_in_the_log(start_bot: StartBot) -> None:
    bot = await start_bot(
        config_with({"name": "blocking", "keywords": ["block"], "handler": "blocking"})
    )
    with structlog.testing.capture_logs() as logs:
        await bot.post_inbound(inbound(SEED[0], "block", SEED[1:]))
        accepted = await bot.api.wait_for_accepted(3)
    assert {r.body["text"] for r in accepted} == {"done blocking"}

    [blocked] = [e for e in logs if e["event"] == "event_loop_blocked"]
    line = plugins.blocking.__code__.co_firstlineno + 2  # the decorator's line is the first
    assert blocked["where"] == f"{plugins.__file__}:{line} in blocking"
    assert any(e["event"] == "event_loop_unblocked" for e in logs)


async def test_state_that_is_not_json_is_refused_naming_where(start_bot: StartBot) -> None:
    bot = await start_bot(
        config_with(
            {"name": "key", "keywords": ["key"], "handler": "number_key"},
            {"name": "date", "keywords": ["date"], "handler": "date_value"},
            {"name": "nan", "keywords": ["nan"], "handler": "nan_value"},
        )
    )
    by_key = inbound(SEED[0], "key", SEED[1:])
    await bot.post_inbound(by_key)
    assert await processed(bot, by_key["message_uuid"]) == (
        "failed", "key", "ctx.state['orders']: key 3 is int; keys must be str"
    )  # fmt: skip
    by_value = inbound(SEED[0], "date", SEED[1:])
    await bot.post_inbound(by_value)
    assert await processed(bot, by_value["message_uuid"]) == (
        "failed", "date", "ctx.state['orders'][0]['at']: datetime is not a JSON value "
        "(str, int, float, bool, None, list or dict)",
    )  # fmt: skip
    by_nan = inbound(SEED[0], "nan", SEED[1:])
    await bot.post_inbound(by_nan)
    assert await processed(bot, by_nan["message_uuid"]) == (
        "failed", "nan", "ctx.state['total']: nan is not a JSON number"
    )  # fmt: skip


async def test_template_error_and_bad_return_type_are_isolated(start_bot: StartBot) -> None:
    bot = await start_bot(
        config_with(
            # A handler whose mapping lacks what the template reads: found only at run time.
            {
                "name": "undefined",
                "keywords": ["undefined"],
                "handler": "match_values",
                "template": "undefined.txt.j2",
            },
            {"name": "wrong", "keywords": ["wrong"], "handler": "wrong_type"},
            {"name": "echo", "keywords": ["ping"], "handler": "echo"},
        )
    )
    undefined = inbound(SEED[0], "undefined", SEED[1:])
    wrong = inbound(SEED[0], "wrong", SEED[1:])
    await bot.post_inbound(undefined)
    await bot.post_inbound(wrong)

    assert "no_such_variable" in str((await processed(bot, undefined["message_uuid"]))[2])
    assert "returned int" in str((await processed(bot, wrong["message_uuid"]))[2])
    await bot.post_inbound(inbound(SEED[0], "ping", SEED[1:]))
    assert len(await bot.api.wait_for_accepted(3)) == 3


async def test_inbound_attachments_reach_the_handler_typed(start_bot: StartBot) -> None:
    bot = await start_bot(
        config_with({"name": "files", "keywords": ["files"], "handler": "attachments"})
    )
    body = inbound(
        SEED[0],
        None,
        SEED[1:],
        message_type="image",
        image={"url": "https://example.com/a.jpg", "caption": "files attached"},
        content=[
            {"type": "image", "url": "https://example.com/a.jpg"},
            {"type": "vcard", "url": "https://example.com/b.vcf"},
        ],
    )
    await bot.post_inbound(body)

    accepted = await bot.api.wait_for_accepted(3)
    assert {r.body["text"] for r in accepted} == {
        "got image:https://example.com/a.jpg, vcard:https://example.com/b.vcf"
    }


async def test_handler_state_persists_between_messages_of_a_group(start_bot: StartBot) -> None:
    bot = await start_bot()  # the shipped config and examples
    await bot.post_inbound(inbound(SEED[0], "update: parts ordered", SEED[1:]))
    await bot.api.wait_for_accepted(3)
    await bot.post_inbound(inbound(SEED[1], "recap please", [SEED[0], SEED[2]]))

    accepted = await bot.api.wait_for_accepted(6)
    recaps = {r.body["text"] for r in accepted[3:]}
    assert recaps == {"Latest updates:\n- parts ordered (+1 123-456-7891)"}
