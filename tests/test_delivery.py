"""Delivery guarantees in one process: handler limits, order, dedupe across a restart."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot.groups import Group
from bot.models import InboundMessage, parse_inbound
from bot.store import InboxItem
from bot.store.sqlite import SqliteStore
from bot.workers import Worker
from tests import plugins
from tests.conftest import Harness, eventually, inbound, until
from tests.test_end_to_end import config_with, processed

StartBot = Callable[..., Awaitable[Harness]]
GROUP_A = ["12025550101", "12025550102", "12025550103"]
GROUP_B = ["12025550201", "12025550202"]


ECHO = {"name": "echo", "keywords": ["ping"], "handler": "echo"}
SLOW = {"name": "slow", "keywords": ["wait"], "handler": "slow"}
BOOM = {"name": "boom", "keywords": ["boom"], "handler": "boom"}


async def test_a_handler_past_its_time_is_cancelled_and_the_error_template_answers(
    start_bot: StartBot,
) -> None:
    plugins.gate = asyncio.Event()  # never set: the handler would wait forever
    bot = await start_bot(
        config_with(SLOW, ECHO, handlers={"timeout_seconds": 0.2, "error_template": "error.txt.j2"})
    )
    stuck = inbound(GROUP_A[0], "please wait", GROUP_A[1:])

    await bot.post_inbound(stuck)

    state, route, error = await processed(bot, stuck["message_uuid"])
    assert (state, route, error) == ("failed", "slow", "handler timed out after 0.2 s")
    sorry = await bot.api.wait_for_accepted(3)
    assert {r.body["text"] for r in sorry} == {"Sorry, that did not work."}
    await bot.post_inbound(inbound(GROUP_A[0], "ping", GROUP_A[1:]))
    assert {r.body["text"] for r in (await bot.api.wait_for_accepted(6))[3:]} == {"echo: ping"}


async def test_without_an_error_template_a_failing_handler_sends_nothing(
    start_bot: StartBot,
) -> None:
    bot = await start_bot(config_with(BOOM))
    failing = inbound(GROUP_A[0], "boom", GROUP_A[1:])

    await bot.post_inbound(failing)

    assert (await processed(bot, failing["message_uuid"]))[0] == "failed"
    with sqlite3.connect(bot.bot.config.sqlite_path) as db:
        assert db.execute("SELECT COUNT(*) FROM outbound").fetchone() == (0,)
    assert bot.api.attempts == []


async def test_messages_of_a_group_are_answered_in_the_order_they_arrived(
    start_bot: StartBot,
) -> None:
    bot = await start_bot(config_with(ECHO))

    for n in range(6):
        response = await bot.post_inbound(inbound(GROUP_A[n % 3], f"ping {n}", []))
        assert response.status == 200
        # One-to-one messages of three members: three groups, each in its own order.
    for n in range(6):
        others = [m for m in GROUP_A if m != GROUP_A[0]]
        await bot.post_inbound(inbound(GROUP_A[0], f"ping group {n}", others))

    accepted = await bot.api.wait_for_accepted(6 + 6 * 3)
    for member in GROUP_A:
        received = [r.body["text"] for r in accepted if r.body["to"] == member]
        alone = [t for t in received if "group" not in t]
        in_group = [t for t in received if "group" in t]
        assert alone == [f"echo: ping {n}" for n in range(6) if GROUP_A[n % 3] == member]
        assert in_group == [f"echo: ping group {n}" for n in range(6)]


async def test_a_slow_group_does_not_hold_up_another_group(start_bot: StartBot) -> None:
    plugins.gate = asyncio.Event()
    bot = await start_bot(config_with(SLOW, ECHO))
    await bot.post_inbound(inbound(GROUP_A[0], "wait", GROUP_A[1:]))
    await bot.post_inbound(inbound(GROUP_A[1], "ping", [GROUP_A[0], GROUP_A[2]]))

    await bot.post_inbound(inbound(GROUP_B[0], "ping", GROUP_B[1:]))

    answered = await bot.api.wait_for_accepted(2)
    assert {r.body["to"] for r in answered} == set(GROUP_B)  # group A is still waiting
    plugins.gate.set()
    later = (await bot.api.wait_for_accepted(2 + 6))[2:]
    assert [r.body["text"] for r in later if r.body["to"] == GROUP_A[2]] == [
        "done waiting",
        "echo: ping",
    ]


async def only_woken(worker: Worker[Any]) -> None:
    """No poll comes round any more: only a wake() moves `worker` (once it has settled)."""
    worker.poll_seconds = 3600.0
    worker.wake()

    async def settled() -> bool:
        return not worker._maybe_waiting

    await eventually(settled)


async def test_a_message_behind_a_slow_one_goes_on_the_store_s_word_with_no_claims_meanwhile(
    start_bot: StartBot,
) -> None:
    plugins.gate = asyncio.Event()
    bot = await start_bot(config_with(SLOW, ECHO))
    inbox = bot.runtime.inbox
    await only_woken(inbox)
    claims = 0
    claim = inbox.claim

    async def counted(limit: int) -> list[InboxItem]:
        nonlocal claims
        claims += 1
        return await claim(limit)

    inbox.claim = counted  # type: ignore[method-assign]
    await bot.post_inbound(inbound(GROUP_A[0], "wait", GROUP_A[1:]))
    behind = inbound(GROUP_A[1], "ping", [GROUP_A[0], GROUP_A[2]])
    await bot.post_inbound(behind)  # stored behind the slow one; one claim finds nothing
    for n in range(20):  # twenty one-to-one conversations, each answered at once
        await bot.post_inbound(inbound(f"120255503{n:02d}", "ping", []))
    await bot.api.wait_for_accepted(20)
    assert claims == 1  # the places they freed were not spent on claims finding nothing

    plugins.gate.set()
    await processed(bot, behind["message_uuid"])  # claimed as soon as the slow one was done
    assert 2 <= claims <= 3  # the claim that took it, and perhaps one more that found nothing
    answers = (await bot.api.wait_for_accepted(20 + 6))[20:]
    assert [r.body["text"] for r in answers if r.body["to"] == GROUP_A[2]] == [
        "done waiting",
        "echo: ping",
    ]


async def test_a_member_s_next_answer_goes_on_the_store_s_word_once_the_one_ahead_is_sent(
    start_bot: StartBot,
) -> None:
    bot = await start_bot(config_with(ECHO))
    await only_woken(bot.runtime.outbox)
    held = asyncio.Event()
    for _ in GROUP_A:
        bot.api.respond(202, hold=held)
    await bot.post_inbound(inbound(GROUP_A[0], "ping 1", GROUP_A[1:]))
    await bot.api.wait_for_arrived(3)  # the first answers are on their way, held there
    second = inbound(GROUP_A[1], "ping 2", [GROUP_A[0], GROUP_A[2]])
    await bot.post_inbound(second)
    await processed(bot, second["message_uuid"])  # its answers wait behind the first ones

    held.set()
    accepted = await bot.api.wait_for_accepted(6)
    for member in GROUP_A:
        assert [r.body["text"] for r in accepted if r.body["to"] == member] == [
            "echo: ping 1",
            "echo: ping 2",
        ]


async def test_a_message_seen_before_a_restart_is_not_answered_again(
    start_bot: StartBot,
) -> None:
    first = await start_bot(config_with(ECHO))
    body = inbound(GROUP_A[0], "ping", GROUP_A[1:])
    await first.post_inbound(body)
    await first.api.wait_for_accepted(3)
    await processed(first, body["message_uuid"])
    await first.client.close()  # the whole app stops; the SQLite file stays

    second = await start_bot(config_with(ECHO))
    retries = await asyncio.gather(*(second.post_inbound(body) for _ in range(3)))

    assert [(await r.json())["duplicate"] for r in retries] == [True] * 3
    with sqlite3.connect(second.bot.config.sqlite_path) as db:
        assert db.execute("SELECT COUNT(*) FROM outbound").fetchone() == (3,)
    assert len(second.api.attempts) == 3


async def test_an_expectation_answers_one_message_and_only_in_time(start_bot: StartBot) -> None:
    plugins.gate = None
    bot = await start_bot(
        config_with(
            {"name": "ask", "keywords": ["ask"], "handler": "ask_day"},
            {"name": "echo", "keywords": ["ping"], "handler": "echo"},
        )
    )
    dispatcher = bot.bot.dispatcher
    group = Group(tuple(GROUP_A))

    def message(text: str) -> InboundMessage:
        return parse_inbound(json.dumps(inbound(GROUP_A[0], text, GROUP_A[1:])).encode())

    asked = await dispatcher.dispatch(message("ask"), group, {}, now=1000.0)
    assert asked.state is not None
    state = json.loads(asked.state)
    answered = await dispatcher.dispatch(message("monday"), group, state, now=1059.0)
    late = await dispatcher.dispatch(message("monday"), group, state, now=1061.0)
    used = await dispatcher.dispatch(
        message("tuesday"), group, json.loads(answered.state or "{}"), now=1001.0
    )

    assert answered.route == "ask"
    assert [m.text for m in answered.messages][:1] == ["day noted: monday"]
    assert (late.route, late.messages) == (None, [])
    assert used.route is None  # one answer per expectation


async def test_a_handler_that_replaces_the_state_fails_alone(start_bot: StartBot) -> None:
    bot = await start_bot(
        config_with({"name": "clobber", "keywords": ["clobber"], "handler": "clobber_state"}, ECHO)
    )
    bad = inbound(GROUP_A[0], "clobber", GROUP_A[1:])
    await bot.post_inbound(bad)
    await bot.post_inbound(inbound(GROUP_B[0], "ping", GROUP_B[1:]))
    await bot.post_inbound(inbound(GROUP_A[0], "ping", GROUP_A[1:]))

    assert await processed(bot, bad["message_uuid"]) == (
        "failed",
        "clobber",
        "ctx.state: expected a dict of JSON values",
    )
    answered = await bot.api.wait_for_accepted(2 + 3)
    assert {r.body["text"] for r in answered} == {"echo: ping"}  # both groups go on


async def test_a_failing_handler_uses_up_the_expectation_it_answered(
    start_bot: StartBot,
) -> None:
    bot = await start_bot(
        config_with({"name": "ask", "keywords": ["ask"], "handler": "ask_then_fail"})
    )
    dispatcher = bot.bot.dispatcher
    group = Group(tuple(GROUP_A))

    def message(text: str) -> InboundMessage:
        return parse_inbound(json.dumps(inbound(GROUP_A[0], text, GROUP_A[1:])).encode())

    asked = await dispatcher.dispatch(message("ask"), group, {}, now=1000.0)
    failed = await dispatcher.dispatch(
        message("monday"), group, json.loads(asked.state or "{}"), now=1001.0
    )
    later = await dispatcher.dispatch(
        message("lol"), group, json.loads(failed.state or "{}"), now=1002.0
    )

    assert (failed.route, failed.error) == ("ask", "RuntimeError: no day like that")
    assert later.route is None  # not answered again: the expectation was used up


async def yield_to_the_loop(times: int = 10) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


def stores_a_webhook(unit: Any) -> bool:
    return bool(unit.work.__qualname__.endswith("accept_inbound.<locals>.accept"))


@pytest.mark.parametrize("daily_limit", [None, 100], ids=["no limit", "a daily limit"])
async def test_a_handler_starts_while_its_message_is_being_committed(
    start_bot: StartBot, daily_limit: int | None
) -> None:
    plugins.gate, plugins.started = asyncio.Event(), asyncio.Event()
    bot = await start_bot(config_with(SLOW, limits={"daily_messages": daily_limit}))
    store = bot.runtime.store
    assert isinstance(store, SqliteStore)
    # No claim of the workers' own may start while the store's thread is held below (a
    # webhook would wait in line behind it): they look again in an hour, once they are idle.
    for worker in (bot.runtime.inbox, bot.runtime.outbox):
        worker.poll_seconds = 3600
        worker.wake()
    await until(
        lambda: not bot.runtime.inbox._maybe_waiting and not bot.runtime.outbox._maybe_waiting
    )
    # The store's thread, held: a commit under way (of a first unit), then the webhook's
    # unit runs, then its own commit is held back until we let it go.
    thread_free, commit_free, commit_held = threading.Event(), threading.Event(), threading.Event()

    def hold_the_commit() -> None:
        commit_held.set()
        commit_free.wait()

    try:
        store._thread.submit(thread_free.wait)
        first = asyncio.ensure_future(store._unit(lambda db: None))
        await until(lambda: store._committing)
        body = inbound(GROUP_A[0], "please wait", GROUP_A[1:])
        answered = asyncio.ensure_future(bot.post_inbound(body))
        await until(lambda: any(map(stores_a_webhook, store._open)))  # uncommitted
        store._thread.submit(hold_the_commit)
        thread_free.set()
        await first
        await until(commit_held.is_set)  # the webhook's unit has run
        await yield_to_the_loop()

        with sqlite3.connect(bot.bot.config.sqlite_path) as db:
            stored = db.execute("SELECT COUNT(*) FROM inbound").fetchone()
        assert stored == (0,)  # not durable yet
        assert not answered.done()  # so no 200 yet
        # Its handler has started meanwhile; with a daily limit (read from what is
        # committed), not before the message is durable.
        assert plugins.started.is_set() is (daily_limit is None)
    finally:
        thread_free.set()
        commit_free.set()
    assert (await answered).status == 200
    await asyncio.wait_for(plugins.started.wait(), 10)
    plugins.gate.set()
    assert {r.body["text"] for r in await bot.api.wait_for_accepted(3)} == {"done waiting"}
    plugins.started = None
