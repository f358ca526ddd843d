"""GET /metrics: the counters move as messages flow."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Harness, eventually, inbound

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
        values = await scrape(bot)
        return values.get(("groupbot_outbound_total", (("result", "sent"),))) == 3.0

    await eventually(settled)
    values = await scrape(bot)

    assert values[("groupbot_inbound_total", (("outcome", "stored"),))] == 1.0
    assert values[("groupbot_inbound_total", (("outcome", "duplicate"),))] == 1.0
    assert values[("groupbot_inbound_total", (("outcome", "refused_signature"),))] == 1.0
    assert values[("groupbot_routed_total", (("route", "ticket"),))] == 1.0
    assert values[("groupbot_queue_depth", (("queue", "outbox"),))] == 0.0
    assert values[("groupbot_send_seconds_count", ())] == 3.0
