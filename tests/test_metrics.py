"""GET /metrics: the counters move as messages flow."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prometheus_client.parser import text_string_to_metric_families

from bot.client import VERSION
from tests import plugins
from tests.conftest import Harness, eventually, inbound
from tests.test_end_to_end import config_with

StartBot = Callable[..., Awaitable[Harness]]
SEED = ["11234567891", "11234567892", "11234567893"]


async def scrape(bot: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await bot.client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(await response.text())
        for sample in family.samples
    }


async def test_counters_follow_inbound_routing_and_sends(start_bot: StartBot) -> None:
    bot = await start_bot()
    body = inbound(SEED[0], "ticket 42", SEED[1:])
    await bot.post_inbound(body)
    await bot.post_inbound(body)  # a repeat
    await bot.client.post("/webhooks/inbound", data=b"{}")  # unsigned
    await bot.api.wait_for_accepted(3)

    async def settled() -> bool:
        # A send is counted before its outcome is stored; the broadcast's end is observed
        # once the last outcome is.
        values = await scrape(bot)
        return (
            values.get(("groupbot_outbound_total", (("result", "sent"),))) == 3.0
            and values.get(("groupbot_webhook_to_last_member_seconds_count", ()), 0.0) >= 1.0
        )

    await eventually(settled)
    values = await scrape(bot)

    assert values[("groupbot_inbound_total", (("outcome", "stored"),))] == 1.0
    assert values[("groupbot_inbound_total", (("outcome", "duplicate"),))] == 1.0
    assert values[("groupbot_inbound_total", (("outcome", "refused_signature"),))] == 1.0
    assert values[("groupbot_routed_total", (("route", "ticket"),))] == 1.0
    assert values[("groupbot_queue_depth", (("queue", "outbox"),))] == 0.0
    assert values[("groupbot_send_seconds_count", ())] == 3.0
    assert values[("groupbot_webhook_to_last_member_seconds_count", ())] == 1.0  # one answer
    assert values[("groupbot_queue_oldest_seconds", (("queue", "inbox"),))] == 0.0


async def test_a_handler_timeout_is_counted_as_such(start_bot: StartBot) -> None:
    plugins.gate = asyncio.Event()  # never set: the handler would wait forever
    bot = await start_bot(
        config_with(
            {"name": "slow", "keywords": ["wait"], "handler": "slow"},
            handlers={"timeout_seconds": 0.2, "error_template": None},
        )
    )
    await bot.post_inbound(inbound(SEED[0], "please wait", SEED[1:]))

    async def timed_out() -> bool:
        values = await scrape(bot)
        key = ("groupbot_handler_errors_total", (("kind", "timeout"), ("route", "slow")))
        return values.get(key) == 1.0

    await eventually(timed_out)
    values = await scrape(bot)
    timeouts = ("groupbot_handler_errors_total", (("kind", "timeout"), ("route", "slow")))
    errors = ("groupbot_handler_errors_total", (("kind", "error"), ("route", "slow")))
    assert values[timeouts] == 1.0
    assert errors not in values  # a timeout is not counted as a failure of another kind


async def test_the_provider_and_version_are_published(start_bot: StartBot) -> None:
    # A bot left on the simulator by mistake shows on a dashboard, not only in its first log line.
    on_vonage = await scrape(await start_bot())
    on_simulator = await scrape(await start_bot({"provider": {"kind": "simulator"}}))

    [(vonage_labels, one)] = [(k[1], v) for k, v in on_vonage.items() if k[0] == "groupbot_info"]
    [simulator_labels] = [k[1] for k in on_simulator if k[0] == "groupbot_info"]
    assert one == 1
    assert dict(vonage_labels)["provider"] == "vonage"
    assert dict(simulator_labels)["provider"] == "simulator"
    assert dict(vonage_labels)["version"] != ""


async def test_metrics_are_served_while_the_store_is_away(start_bot: StartBot) -> None:
    bot = await start_bot()
    assert (await scrape(bot))[("groupbot_store_up", ())] == 1

    await bot.runtime.store.close()  # as good as a database that stopped answering
    values = await scrape(bot)  # 200 all the same: the counters matter most now

    assert values[("groupbot_store_up", ())] == 0
    assert ("groupbot_info", (("provider", "vonage"), ("version", VERSION))) in values


async def test_sends_that_did_not_go_are_counted_by_kind(start_bot: StartBot) -> None:
    bot = await start_bot(
        {"provider": {"retry": {"base_seconds": 0.01, "max_delay_seconds": 0.02}}}
    )
    bot.api.respond(503)
    bot.api.respond(429, headers={"Retry-After": "0"})
    bot.api.respond(422, {"title": "Invalid parameters"})
    await bot.post_inbound(inbound(SEED[0], "ticket 42", SEED[1:]))

    async def counted() -> bool:
        values = await scrape(bot)
        return all(
            values.get(("groupbot_send_problems_total", (("kind", kind),))) == 1.0
            for kind in ("server_error", "rate_limited", "rejected")
        )

    await eventually(counted)
    values = await scrape(bot)
    assert ("groupbot_send_problems_total", (("kind", "unreachable"),)) not in values
