"""The shipped examples, one per use case of group MMS, through the whole pipeline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.conftest import Harness, inbound

StartBot = Callable[..., Awaitable[Harness]]

# A support agent, a customer and a specialist.
AGENT, CUSTOMER, SPECIALIST = "12025550111", "12025550112", "12025550113"
# A service provider (the bot's business), a client and a field technician.
CLIENT, TECHNICIAN = "12025550121", "12025550122"
# A small team.
TEAM = ["12025550131", "12025550132", "12025550133", "12025550134"]


async def say(bot: Harness, sender: str, text: str, group: list[str], expect: int) -> set[str]:
    """Post `text` from `sender` to `group`; return the texts of the next `expect` messages."""
    before = len(bot.api.accepted)
    others = [m for m in group if m != sender]
    await bot.post_inbound(inbound(sender, text, others))
    accepted = await bot.api.wait_for_accepted(before + expect)
    return {r.body.get("text") or r.body[r.body["message_type"]]["url"] for r in accepted[before:]}


async def test_support_ticket_and_escalation(start_bot: StartBot) -> None:
    bot = await start_bot()
    group = [AGENT, CUSTOMER, SPECIALIST]

    ticket = await say(bot, CUSTOMER, "Ticket #4711 still not fixed", group, 3)
    escalated = await say(bot, AGENT, "I'll escalate this", group, 3)
    case = await say(bot, CUSTOMER, "what's my case status?", group, 3)

    assert ticket == {
        "Ticket #4711 is open. Everyone in this thread (3 people) will get its updates here."
    }
    assert escalated == {
        "+1 202-555-0111 asked for a specialist. A specialist is joining this conversation."
    }
    assert case == {"This case has been escalated 1 time; a specialist is on it."}


async def test_field_service_status_before_and_after_arrival(start_bot: StartBot) -> None:
    bot = await start_bot()
    group = [CLIENT, TECHNICIAN]

    before = await say(bot, CLIENT, "What's the ETA?", group, 2)
    arrived = await say(bot, TECHNICIAN, "Arrived!", group, 2)
    after = await say(bot, CLIENT, "status?", group, 2)

    assert before == {'The technician is on the way. Reply "arrived" when they are on site.'}
    assert arrived == {
        "The technician (ending 0122) is on site. We'll confirm when the job is done."
    }
    assert after == {"The technician arrived at 12:15 UTC and is working on it."}


async def test_field_service_answers_with_an_image(start_bot: StartBot) -> None:
    bot = await start_bot()

    await say(bot, CLIENT, "which van should I look for?", [CLIENT, TECHNICIAN], 2)

    for request in bot.api.accepted:
        assert request.body["message_type"] == "image"
        assert request.body["image"] == {
            "url": "https://example.com/groupbot/van.jpg",
            "caption": "This is our van. The technician will show an ID badge.",
        }


async def test_team_updates_recap_and_on_call_card_to_the_sender_alone(start_bot: StartBot) -> None:
    bot = await start_bot()

    empty = await say(bot, TEAM[0], "recap", TEAM, 4)
    saved = await say(bot, TEAM[1], "update: release 2.3 is out", TEAM, 4)
    await say(bot, TEAM[2], "update: db migration at 6pm", TEAM, 4)
    recap = await say(bot, TEAM[3], "catch me up", TEAM, 4)
    await say(bot, TEAM[3], "who is on call?", TEAM, 1)

    assert empty == {"No updates yet. Post one with: update: <what changed>"}
    assert saved == {"Update from +1 202-555-0132 saved (1 kept): release 2.3 is out"}
    assert recap == {
        "Latest updates:\n"
        "- release 2.3 is out (+1 202-555-0132)\n"
        "- db migration at 6pm (+1 202-555-0133)"
    }
    card = bot.api.accepted[-1].body
    assert card["to"] == TEAM[3]
    assert "mms" not in card
    assert card["vcard"] == {
        "url": "https://example.com/groupbot/on-call.vcf",
        "caption": "On-call engineer",
    }


async def test_people_talking_among_themselves_get_no_answer(start_bot: StartBot) -> None:
    bot = await start_bot()
    group = [AGENT, CUSTOMER, SPECIALIST]

    await bot.post_inbound(inbound(CUSTOMER, "thanks, talk soon", [AGENT, SPECIALIST]))
    answered = await say(bot, CUSTOMER, "opening hours?", group, 3)

    assert answered == {
        "We answer Monday to Friday, 8am to 6pm. "
        'Outside those hours, write "escalate" for urgent help.'
    }
    assert len(bot.api.attempts) == 3  # the first message got no answer


async def test_free_text_books_a_visit_over_two_turns(start_bot: StartBot) -> None:
    bot = await start_bot()
    group = [CLIENT, TECHNICIAN]

    asked = await say(
        bot, CLIENT, "The heater broke again, could someone come out to fix it?", group, 2
    )
    booked = await say(bot, TECHNICIAN, "friday works for me", group, 2)

    assert asked == {"Happy to book a visit. Which day suits you?"}
    assert booked == {'Booked: the technician comes Friday. Reply "status" any time.'}


async def test_a_keyword_still_wins_while_an_answer_is_expected(start_bot: StartBot) -> None:
    bot = await start_bot()
    group = [CLIENT, TECHNICIAN]

    await say(bot, CLIENT, "can the tech come by?", group, 2)
    status = await say(bot, CLIENT, "what's the ETA?", group, 2)

    assert status == {'The technician is on the way. Reply "arrived" when they are on site.'}
