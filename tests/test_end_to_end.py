"""The whole path: webhook -> store -> route -> handler/template -> one message per member."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.conftest import DATA, Harness, inbound

SEED_MEMBERS = ["11234567891", "11234567892", "11234567893"]


def by_recipient(bodies: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    return {body["to"]: body for body in bodies}


async def test_seed_group_of_three_gets_the_exact_requests_of_the_docs(
    start_bot: Callable[..., Awaitable[Harness]],
) -> None:
    bot = await start_bot(
        {
            "routes": [{"name": "hello", "keywords": ["hello"], "template": "hello.txt.j2"}],
            "plugins": [],
            "templates": str(Path(__file__).parent / "data" / "templates"),
        }
    )
    seed = inbound("11234567891", "Hello to the group!", ["11234567892", "11234567893"])
    response = await bot.post_inbound(seed)
    assert response.status == 200

    accepted = await bot.api.wait_for_accepted(3)
    expected = json.loads((DATA / "vonage" / "outbound-mms-group.docs-example.json").read_text())
    assert by_recipient([r.body for r in accepted]) == by_recipient(expected)
