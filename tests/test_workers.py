"""The worker loop's places: work taken as it is stored waits in line for a place, stored work
has first pick while there may be some, and the loop stops claiming once nothing waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from bot.workers import Worker

DEADLINE = 5.0


class Toy(Worker[int]):
    """Items are numbers; each is handled until its event is set. `stored` is the store."""

    def __init__(self, concurrency: int) -> None:
        super().__init__("toy", concurrency=concurrency, poll_seconds=60.0, lease_seconds=60.0)
        self.stored: list[int] = []
        self.claims = 0
        self.handled: list[int] = []
        self.release_item: dict[int, asyncio.Event] = {}

    async def claim(self, limit: int) -> list[int]:
        self.claims += 1
        taken, self.stored = self.stored[:limit], self.stored[limit:]
        return taken

    async def waiting(self) -> bool:
        return bool(self.stored)

    async def handle(self, item: int) -> None:
        self.handled.append(item)
        await self.release_item.setdefault(item, asyncio.Event()).wait()

    def finish(self, item: int) -> None:
        self.release_item.setdefault(item, asyncio.Event()).set()


@pytest.fixture
async def toy() -> AsyncIterator[Toy]:
    worker = Toy(concurrency=2)
    worker.start()
    await until(lambda: not worker._maybe_waiting)  # the first claim found nothing
    yield worker
    for item in list(worker.release_item):
        worker.finish(item)
    await worker.stop(1.0)


async def until(condition: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


async def test_places_are_given_at_once_while_free_and_in_turn_when_full(toy: Toy) -> None:
    assert await toy.reserve_within(2, 1.0) == 2
    toy.run([1, 2], 2)
    second = asyncio.create_task(toy.reserve_within(1, DEADLINE))
    third = asyncio.create_task(toy.reserve_within(1, DEADLINE))
    await asyncio.sleep(0)
    assert not second.done()
    assert not third.done()

    toy.finish(1)
    assert await second == 1  # first come, first served
    assert not third.done()
    toy.finish(2)
    assert await third == 1


async def test_a_wait_that_times_out_holds_nothing(toy: Toy) -> None:
    assert await toy.reserve_within(2, 1.0) == 2
    toy.run([1, 2], 2)

    assert await toy.reserve_within(1, 0.01) == 0

    toy.finish(1)
    toy.finish(2)
    await until(lambda: not toy._tasks)
    assert await toy.reserve_within(2, 0.01) == 2  # nothing was left held


async def test_a_caller_cancelled_in_line_gives_its_places_back(toy: Toy) -> None:
    assert await toy.reserve_within(2, 1.0) == 2
    toy.run([1, 2], 2)
    waiting = asyncio.create_task(toy.reserve_within(1, DEADLINE))
    await asyncio.sleep(0)

    waiting.cancel()
    toy.finish(1)
    with pytest.raises(asyncio.CancelledError):
        await waiting

    assert await toy.reserve_within(1, 0.01) == 1


async def test_places_not_used_are_released(toy: Toy) -> None:
    assert await toy.reserve_within(2, 1.0) == 2
    toy.run([1], 2)  # one of the two was not taken after all
    assert await toy.reserve_within(1, 0.01) == 1


async def test_stored_work_has_first_pick_of_a_freed_place(toy: Toy) -> None:
    assert await toy.reserve_within(2, 1.0) == 2
    toy.run([1, 2], 2)
    toy.stored = [10]
    toy.wake()
    in_line = asyncio.create_task(toy.reserve_within(1, DEADLINE))
    await asyncio.sleep(0)

    toy.finish(1)  # the claim takes this place
    await until(lambda: 10 in toy.handled)
    assert not in_line.done()
    toy.finish(2)  # nothing more stored: the line gets this one
    assert await in_line == 1


async def test_the_loop_stops_claiming_once_nothing_is_stored(toy: Toy) -> None:
    claims = toy.claims
    for item in range(20):
        assert await toy.reserve_within(1, DEADLINE) == 1
        toy.run([item], 1)
        toy.finish(item)
    await until(lambda: not toy._tasks)

    assert toy.claims == claims  # work taken as stored never needed a claim
    assert toy.handled == list(range(20))


async def test_nothing_is_taken_while_stopping() -> None:
    worker = Toy(concurrency=1)
    assert await worker.reserve_within(1, 0.01) == 0  # not started
    worker.start()
    await worker.stop(1.0)
    assert await worker.reserve_within(1, 0.01) == 0
