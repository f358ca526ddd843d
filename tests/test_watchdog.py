"""bot.watchdog: a blocked event loop is named, with the line that blocks it; a busy one is not."""

from __future__ import annotations

import asyncio
import time

import structlog

from bot.watchdog import LoopWatchdog
from tests.conftest import eventually


def blocking_handler() -> None:
    time.sleep(0.6)  # what a handler calling a blocking library does to every group


def busy_step() -> None:
    time.sleep(0.01)  # a step of work that holds the loop briefly, as any callback does


async def test_a_blocked_loop_is_logged_with_the_line_that_blocks_it() -> None:
    watchdog = LoopWatchdog(stuck_seconds=0.2, beat_seconds=0.02)
    with structlog.testing.capture_logs() as logs:
        watchdog.start()
        try:
            blocking_handler()

            async def told() -> bool:
                return any(e["event"] == "event_loop_unblocked" for e in logs)

            await eventually(told)
        finally:
            watchdog.stop()

    events = [e for e in logs if e["event"].startswith("event_loop")]
    assert [e["event"] for e in events] == ["event_loop_blocked", "event_loop_unblocked"]
    blocked, unblocked = events
    line = blocking_handler.__code__.co_firstlineno + 1
    assert blocked["where"] == f"{__file__}:{line} in blocking_handler"
    assert blocked["seconds"] >= 0.2
    assert blocked["log_level"] == "warning"
    assert 0.6 <= unblocked["seconds"] < 5


async def test_a_loop_that_keeps_coming_round_is_not_reported() -> None:
    watchdog = LoopWatchdog(stuck_seconds=0.2, beat_seconds=0.02)
    with structlog.testing.capture_logs() as logs:
        watchdog.start()
        try:
            # Busy for longer than stuck_seconds in all, but in steps that each yield.
            deadline = time.monotonic() + 0.6
            while time.monotonic() < deadline:
                busy_step()
                await asyncio.sleep(0)
        finally:
            watchdog.stop()
    assert not [e for e in logs if e["event"].startswith("event_loop")]


async def test_a_stall_the_watchdog_could_not_see_is_told_when_it_ends() -> None:
    # C code that holds the interpreter (a regular expression backtracking, say) keeps the
    # watchdog's thread from running at all: the loop tells of the stall once it is back.
    watchdog = LoopWatchdog(stuck_seconds=0.2, beat_seconds=60)  # the thread never looks
    with structlog.testing.capture_logs() as logs:
        watchdog.start()
        try:
            watchdog._beat -= 3  # as if the loop had last come round 3 s ago
            watchdog._tick()
        finally:
            watchdog.stop()
    [told] = [e for e in logs if e["event"].startswith("event_loop")]
    assert told["event"] == "event_loop_unblocked"
    assert told["seconds"] >= 3
    assert told["where"].startswith("unknown")
