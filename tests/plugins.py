"""Handlers used by the tests' configs (listed in `plugins` as `tests.plugins`)."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime

from bot import Context, handler

# Tests that need a handler to wait set a fresh Event here, and set() it to let it finish.
gate: asyncio.Event | None = None
# Set (when a test puts an Event here) once the slow handler has started.
started: asyncio.Event | None = None


@handler("echo")
async def echo(ctx: Context) -> str:
    return f"echo: {ctx.text}"


@handler("slow")
async def slow(ctx: Context) -> str:
    assert gate is not None
    if started is not None:
        started.set()
    await gate.wait()
    return "done waiting"


@handler("blocking")
async def blocking(ctx: Context) -> str:
    time.sleep(1.3)  # noqa: ASYNC251 - the mistake under test: it stalls every group
    return "done blocking"


@handler("number_key")
async def number_key(ctx: Context) -> str:
    ctx.state["orders"] = {3: "soup"}  # a number key, which JSON would turn into "3"
    return "noted"


@handler("date_value")
async def date_value(ctx: Context) -> str:
    ctx.state["orders"] = [{"at": datetime.now(UTC)}]
    return "noted"


@handler("nan_value")
async def nan_value(ctx: Context) -> str:
    ctx.state["total"] = float("nan")  # json.dumps would write NaN, which is not JSON
    return "noted"


@handler("boom")
async def boom(ctx: Context) -> str:
    raise RuntimeError("handler exploded")


@handler("silent")
async def silent(ctx: Context) -> None:
    ctx.state["seen"] = ctx.state.get("seen", 0) + 1


@handler("attachments")
async def attachments(ctx: Context) -> str:
    return "got " + ", ".join(f"{m.type}:{m.url}" for m in ctx.media)


@handler("whoami")
async def whoami(ctx: Context) -> str:
    return f"{ctx.sender} in a group of {len(ctx.members)}: {','.join(ctx.members)}"


@handler("wrong_type")
async def wrong_type(ctx: Context) -> int:
    return 42


@handler("match_values")
async def match_values(ctx: Context) -> dict[str, object]:
    return {"extra": "from the handler"}


@handler("stall")
async def stall(ctx: Context) -> str:
    # Stalls only in the process the crash tests start with GROUPBOT_TEST_STALL set, so the
    # process can be killed mid-handler; after the restart the same message goes through.
    if os.environ.get("GROUPBOT_TEST_STALL"):
        await asyncio.Event().wait()
    return f"handled: {ctx.text}"


@handler("ask_day")
async def ask_day(ctx: Context) -> str:
    if not ctx.match.get("expected"):  # asked by keyword
        ctx.expect("ask", within_seconds=60)
        return "which day?"
    return f"day noted: {ctx.text}"


@handler("clobber_state")
async def clobber_state(ctx: Context) -> str:
    ctx.state = None  # type: ignore[assignment]  # what a careless handler might do
    return "state gone"


@handler("ask_then_fail")
async def ask_then_fail(ctx: Context) -> str:
    if ctx.match.get("expected"):
        raise RuntimeError("no day like that")
    ctx.expect("ask", within_seconds=60)
    return "which day?"
