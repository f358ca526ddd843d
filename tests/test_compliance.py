"""STOP, START and HELP: answered before any route, to the sender alone, remembered for good."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest

from bot.compliance import Keywords
from bot.config import ComplianceSettings, parse_config
from bot.core import build_bot
from bot.models import parse_status
from bot.testing import Kit
from tests.conftest import BOT_NUMBER, DATA, ROOT, Harness, inbound, merge, shipped_config

StartBot = Callable[..., Awaitable[Harness]]
A, B, C = "12025550141", "12025550142", "12025550143"


@pytest.mark.parametrize("text", ["STOP", "stop", " Stop! ", "unsubscribe", "End.", "QUIT"])
def test_stop_words_match_the_whole_message_in_any_case(text: str) -> None:
    assert Keywords.of(ComplianceSettings()).action(text) == "stop"


@pytest.mark.parametrize("text", ["please stop that", "stop by at 5", "helpful", "cancel it"])
def test_a_keyword_inside_a_sentence_is_not_one(text: str) -> None:
    assert Keywords.of(ComplianceSettings()).action(text) is None


async def test_stop_confirms_to_the_sender_alone_then_nothing_more(groupbot: Kit) -> None:
    group = groupbot.group(A, B, C)

    stop = await group.say(B, "STOP")
    after = await group.say(A, "ticket 42")

    assert stop == {A: [], B: [stop[B][0]], C: []}
    assert stop[B][0].startswith("You are unsubscribed from groupbot")
    assert after[B] == []
    assert (
        after[A]
        == after[C]
        == ["Ticket #42 is open. Everyone in this thread (3 people) will get its updates here."]
    )


async def test_the_opt_out_holds_in_every_group_of_the_bot(groupbot: Kit) -> None:
    await groupbot.group(A, B).say(B, "stop")

    other = await groupbot.group(B, C).say(C, "ticket 7")

    assert other[B] == []
    assert other[C] != []


async def test_start_opts_back_in_and_help_answers_the_sender(groupbot: Kit) -> None:
    group = groupbot.group(A, B, C)
    await group.say(B, "STOP")

    start = await group.say(B, "start")
    help_ = await group.say(C, "HELP")
    after = await group.say(A, "ticket 42")

    assert start[B][0].startswith("You are subscribed to groupbot again")
    never_left = await group.say(C, "Start")
    assert never_left[C] == [
        "You are subscribed to groupbot. Reply STOP to unsubscribe, HELP for help."
    ]
    assert help_ == {A: [], B: [], C: [help_[C][0]]}
    assert "Reply STOP to unsubscribe" in help_[C][0]
    assert after[B] != []


async def test_an_opted_out_member_stays_in_the_others_participant_lists(
    start_bot: StartBot,
) -> None:
    bot = await start_bot()
    await bot.post_inbound(inbound(B, "STOP", [A, C]))
    await bot.api.wait_for_accepted(1)

    await bot.post_inbound(inbound(A, "ticket 42", [B, C]))

    answers = (await bot.api.wait_for_accepted(3))[1:]
    assert {r.body["to"]: sorted(r.body["mms"]["participants"]) for r in answers} == {
        A: [B, C],
        C: [A, B],
    }


async def test_or_leaves_them_when_configured_to(start_bot: StartBot) -> None:
    bot = await start_bot({"compliance": {"keep_opted_out_in_participants": False}})
    await bot.post_inbound(inbound(B, "STOP", [A, C]))
    await bot.api.wait_for_accepted(1)

    await bot.post_inbound(inbound(A, "ticket 42", [B, C]))

    answers = (await bot.api.wait_for_accepted(3))[1:]
    assert {r.body["to"]: r.body["mms"]["participants"] for r in answers} == {A: [C], C: [A]}


async def test_a_carrier_rejection_1240_opts_the_number_out(start_bot: StartBot) -> None:
    bot = await start_bot()
    status = json.loads((DATA / "vonage" / "message-status-mms.rejected.example.json").read_text())
    status.update(
        to=B,
        **{"from": BOT_NUMBER},
        error={"type": "https://developer.vonage.com/api-errors/messages#1240", "title": "1240"},
    )
    assert parse_status(json.dumps(status).encode()).status == "rejected"

    response = await bot.post_status(status)
    await bot.post_inbound(inbound(A, "ticket 42", [B, C]))

    assert response.status == 200
    answers = await bot.api.wait_for_accepted(2)
    assert sorted(r.body["to"] for r in answers) == [A, C]
    assert await bot.runtime.store.opted_out([A, B, C]) == frozenset({B})


def test_a_route_keyword_that_is_a_carrier_keyword_is_a_warning() -> None:
    # Not an error: the route still answers the word within a longer message.
    raw = merge(shipped_config(), {})
    raw["routes"].append({"name": "helpdesk", "keywords": ["help"], "template": "hours.txt.j2"})
    bot = build_bot(parse_config(raw, root=ROOT))
    index = len(raw["routes"]) - 1
    assert bot.warnings == (
        f"config.yaml: routes[{index}] (helpdesk): keyword 'help' is also the carrier keyword "
        "'HELP' (compliance): a message that is only that word is answered as such before "
        "any route; this one answers it only within a longer message",
    )
    found = bot.router.match("I need help with my order")
    assert found is not None
    assert found.route.name == "helpdesk"
    assert bot.dispatcher.keywords.action("Help!") == "help"
