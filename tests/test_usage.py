"""What broadcasts cost: the usage report, and the daily limit per group."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from tests.cli_support import write_config
from tests.conftest import BOT_NUMBER, DATA, Harness, eventually, inbound
from tests.test_cli import groupbot
from tests.test_end_to_end import processed

StartBot = Callable[..., Awaitable[Harness]]
A, B, C = "12025550151", "12025550152", "12025550153"


async def test_usage_counts_each_member_message_and_adds_up_the_prices(
    start_bot: StartBot, tmp_path: Path
) -> None:
    bot = await start_bot()
    body = inbound(A, "ticket 42", [B, C])
    await bot.post_inbound(body)
    accepted = await bot.api.wait_for_accepted(3)
    await processed(bot, body["message_uuid"])
    status = json.loads((DATA / "vonage" / "message-status-mms.submitted.example.json").read_text())
    for request in accepted[:2]:
        await bot.post_status(
            {**status, "message_uuid": request.message_uuid, "to": request.body["to"],
             "from": BOT_NUMBER, "client_ref": request.body["client_ref"]}
        )  # fmt: skip

    async def all_sent() -> bool:
        return [r.messages for r in await bot.runtime.store.usage(0)] == [3]

    await eventually(all_sent)
    [row] = await bot.runtime.store.usage(0)
    assert (row.messages, row.spend) == (3, {"EUR": Decimal("0.0666")})
    config = write_config(tmp_path, {"storage": {"url": f"sqlite:///{bot.bot.config.sqlite_path}"}})
    result = await groupbot("usage", "--since", row.day, "--config", config, cwd=tmp_path)
    assert result.code == 0, result.err
    assert f"{row.day}  {row.group_key}" in result.out
    assert result.out.splitlines()[-1].split() == ["total", "3", "0.0666", "EUR"]


async def test_usage_counts_this_month_unless_told_a_day(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    result = await groupbot("usage", "--config", config, cwd=tmp_path)

    assert result.code == 0, result.err
    first = datetime.now(UTC).replace(day=1)
    assert result.out.splitlines()[0] == f"since {first:%Y-%m-%d} (UTC)"


async def test_usage_needs_a_day(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    result = await groupbot("usage", "--since", "last week", "--config", config, cwd=tmp_path)

    assert result.code == 2
    assert "expected a day as YYYY-MM-DD, got 'last week'" in result.err


async def test_the_daily_limit_sends_one_notice_then_nothing(start_bot: StartBot) -> None:
    bot = await start_bot({"limits": {"daily_messages": 4}})
    texts: list[set[str]] = []
    for n in range(4):
        body = inbound(A, f"ticket {n}", [B])
        await bot.post_inbound(body)
        await processed(bot, body["message_uuid"])

    accepted = await bot.api.wait_for_accepted(6)
    for n in range(3):
        texts.append({str(r.body["text"]) for r in accepted[2 * n : 2 * n + 2]})

    assert texts[0] == {
        "Ticket #0 is open. Everyone in this thread (2 people) will get its updates here."
    }
    assert texts[1] == {
        "Ticket #1 is open. Everyone in this thread (2 people) will get its updates here."
    }
    assert texts[2] == {
        "groupbot has reached today's message limit for this group; answers resume tomorrow."
    }
    assert len(bot.api.attempts) == 6  # the fourth message got nothing at all
