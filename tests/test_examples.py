"""The shipped examples, one per use case of group MMS, through the whole pipeline, written
with the `groupbot` fixture that handler authors use (bot/testing.py)."""

from __future__ import annotations

from bot.testing import Kit

# A support agent, a customer and a specialist.
AGENT, CUSTOMER, SPECIALIST = "12025550111", "12025550112", "12025550113"
# A service provider (the bot's business), a client and a field technician.
CLIENT, TECHNICIAN = "12025550121", "12025550122"
# A small team.
TEAM = ["12025550131", "12025550132", "12025550133", "12025550134"]


async def test_support_ticket_and_escalation(groupbot: Kit) -> None:
    group = groupbot.group(AGENT, CUSTOMER, SPECIALIST)

    ticket = await group.say(CUSTOMER, "Ticket #4711 still not fixed")
    escalated = await group.say(AGENT, "I'll escalate this")
    case = await group.say(CUSTOMER, "what's my case status?")

    assert ticket.text == (
        "Ticket #4711 is open. Everyone in this thread (3 people) will get its updates here."
    )
    assert escalated.text == (
        "+1 202-555-0111 asked for a specialist. A specialist is joining this conversation."
    )
    assert case.text == "This case has been escalated 1 time; a specialist is on it."


async def test_field_service_status_before_and_after_arrival(groupbot: Kit) -> None:
    group = groupbot.group(CLIENT, TECHNICIAN)

    before = await group.say(CLIENT, "What's the ETA?")
    arrived = await group.say(TECHNICIAN, "Arrived!")
    after = await group.say(CLIENT, "status?")

    assert before.text == 'The technician is on the way. Reply "arrived" when they are on site.'
    assert arrived.text == (
        "The technician (ending 0122) is on site. We'll confirm when the job is done."
    )
    assert after.text is not None
    assert after.text.startswith("The technician arrived at ")


async def test_field_service_answers_with_an_image(groupbot: Kit) -> None:
    group = groupbot.group(CLIENT, TECHNICIAN)

    replies = await group.say(CLIENT, "which van should I look for?")

    assert replies.text == "[image] This is our van. The technician will show an ID badge."


async def test_free_text_books_a_visit_over_two_turns(groupbot: Kit) -> None:
    group = groupbot.group(CLIENT, TECHNICIAN)

    asked = await group.say(CLIENT, "The heater broke again, could someone come out to fix it?")
    booked = await group.say(TECHNICIAN, "friday works for me")

    assert asked.text == "Happy to book a visit. Which day suits you?"
    assert booked.text == 'Booked: the technician comes on Friday. Reply "status" any time.'


async def test_an_answer_after_the_window_is_not_taken_as_the_day(groupbot: Kit) -> None:
    group = groupbot.group(CLIENT, TECHNICIAN)

    await group.say(CLIENT, "can the tech come by?")
    await groupbot.advance(601)  # the booking handler waits 600 s for the day
    late = await group.say(TECHNICIAN, "friday works for me")

    assert late.text is None


async def test_a_keyword_still_wins_while_an_answer_is_expected(groupbot: Kit) -> None:
    group = groupbot.group(CLIENT, TECHNICIAN)

    await group.say(CLIENT, "can the tech come by?")
    status = await group.say(CLIENT, "what's the ETA?")

    assert status.text == 'The technician is on the way. Reply "arrived" when they are on site.'


async def test_team_updates_recap_and_on_call_card_to_the_sender_alone(groupbot: Kit) -> None:
    group = groupbot.group(*TEAM)

    empty = await group.say(TEAM[0], "recap")
    saved = await group.say(TEAM[1], "update: release 2.3 is out")
    await group.say(TEAM[2], "update: db migration at 6pm")
    recap = await group.say(TEAM[3], "catch me up")
    card = await group.say(TEAM[3], "who is on call?")

    assert empty.text == "No updates yet. Post one with: update: <what changed>"
    assert saved.text == "Update from +1 202-555-0132 saved (1 kept): release 2.3 is out"
    assert recap.text == (
        "Latest updates:\n"
        "- release 2.3 is out (+1 202-555-0132)\n"
        "- db migration at 6pm (+1 202-555-0133)"
    )
    assert card == {**{m: [] for m in TEAM[:3]}, TEAM[3]: ["[vcard] On-call engineer"]}


async def test_people_talking_among_themselves_get_no_answer(groupbot: Kit) -> None:
    group = groupbot.group(AGENT, CUSTOMER, SPECIALIST)

    chat = await group.say(CUSTOMER, "thanks, talk soon")
    hours = await group.say(CUSTOMER, "opening hours?")

    assert chat.text is None
    assert hours.text == (
        "We answer Monday to Friday, 8am to 6pm. "
        'Outside those hours, write "escalate" for urgent help.'
    )


async def test_booking_asks_for_the_day_once_then_lets_the_chat_be(groupbot: Kit) -> None:
    group = groupbot.group(CLIENT, TECHNICIAN)

    asked = await group.say(CLIENT, "could someone come out to fix it?")
    chat = await group.say(TECHNICIAN, "ok I'll check with my boss")
    more = await group.say(CLIENT, "thanks")

    assert asked.text == "Happy to book a visit. Which day suits you?"
    assert (chat.text, more.text) == (None, None)
