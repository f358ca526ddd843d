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
        self.blocked: set[int] = set()  # stored behind work in progress: no claim takes them
        self.claims = 0
        self.handled: list[int] = []
        self.release_item: dict[int, asyncio.Event] = {}

    async def claim(self, limit: int) -> list[int]:
        self.claims += 1
        taken = [item for item in self.stored if item not in self.blocked][:limit]
        self.stored = [item for item in self.stored if item not in taken]
        return taken

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
    toy.release(2)


async def test_a_wait_that_times_out_holds_nothing(toy: Toy) -> None:
    assert await toy.reserve_within(2, 1.0) == 2
    toy.run([1, 2], 2)

    assert await toy.reserve_within(1, 0.01) == 0

    toy.finish(1)
    toy.finish(2)
    await until(lambda: not toy._tasks)
    assert await toy.reserve_within(2, 0.01) == 2  # nothing was left held
    toy.release(2)


async def test_a_caller_cancelled_in_line_gives_its_places_back(toy: Toy) -> None:
    assert await toy.reserve_within(2, 1.0) == 2  # held, as for work about to be stored
    waiting = asyncio.create_task(toy.reserve_within(1, DEADLINE))
    await asyncio.sleep(0)
    assert not waiting.done()

    toy.release(2)  # the place is given to the one in line...
    waiting.cancel()  # ...who is cancelled before it can use it
    with pytest.raises(asyncio.CancelledError):
        await waiting

    assert await toy.reserve_within(2, 0.01) == 2  # both places came back
    toy.release(2)


async def test_a_caller_cancelled_before_its_turn_leaves_the_line(toy: Toy) -> None:
    assert await toy.reserve_within(2, 1.0) == 2
    toy.run([1, 2], 2)
    waiting = asyncio.create_task(toy.reserve_within(1, DEADLINE))
    await asyncio.sleep(0)

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    toy.finish(1)

    assert await toy.reserve_within(1, DEADLINE) == 1
    toy.release(1)


async def test_places_not_used_are_released(toy: Toy) -> None:
    assert await toy.reserve_within(2, 1.0) == 2
    toy.run([1], 2)  # one of the two was not taken after all
    assert await toy.reserve_within(1, 0.01) == 1
    toy.release(1)


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
    toy.release(1)


async def test_the_loop_stops_claiming_once_nothing_is_stored(toy: Toy) -> None:
    claims = toy.claims
    for item in range(20):
        assert await toy.reserve_within(1, DEADLINE) == 1
        toy.run([item], 1)
        toy.finish(item)
    await until(lambda: not toy._tasks)

    assert toy.claims == claims  # work taken as stored never needed a claim
    assert toy.handled == list(range(20))


async def test_work_stored_behind_work_in_progress_waits_for_word_not_for_every_place(
    toy: Toy,
) -> None:
    toy.stored, toy.blocked = [7], {7}  # e.g. a group's next message, behind one in progress
    toy.wake()
    await until(lambda: not toy._maybe_waiting)  # one claim found nothing it could take
    claims = toy.claims
    for item in range(100, 120):
        assert await toy.reserve_within(1, DEADLINE) == 1
        toy.run([item], 1)
        toy.finish(item)
    await until(lambda: not toy._tasks)
    assert toy.claims == claims  # the freed places went to the line, not to empty claims
    assert 7 not in toy.handled

    toy.blocked.clear()
    toy.wake()  # the store says it may go now (Store.listen)
    await until(lambda: 7 in toy.handled)


async def test_nothing_is_taken_while_stopping() -> None:
    worker = Toy(concurrency=1)
    assert await worker.reserve_within(1, 0.01) == 0  # not started
    worker.start()
    await worker.stop(1.0)
    assert await worker.reserve_within(1, 0.01) == 0


async def test_stored_work_nobody_announced_is_claimed_under_steady_load() -> None:
    worker = Toy(concurrency=2)
    worker.poll_seconds = 0.05  # the poll comes round quickly
    worker.start()
    await until(lambda: not worker._maybe_waiting)
    worker.stored = [99]  # e.g. a retry come due: no wake()
    claims = worker.claims
    stop = asyncio.Event()

    async def producer(first: int) -> None:
        item = first
        while not stop.is_set():
            if await worker.reserve_within(1, DEADLINE):
                worker.run([item], 1)
                worker.finish(item)
                item += 10
            await asyncio.sleep(0)

    producers = [asyncio.create_task(producer(n)) for n in range(4)]
    try:
        await until(lambda: 99 in worker.handled)
        assert worker.claims > claims  # found by a claim, though nothing announced it
        assert any(item != 99 for item in worker.handled)  # while the line kept coming
    finally:
        stop.set()
        await asyncio.gather(*producers)
        await worker.stop(1.0)
    assert worker.handled.count(99) == 1


async def test_no_place_is_given_twice_while_a_claim_is_under_way() -> None:
    claiming = asyncio.Event()
    go_on = asyncio.Event()

    class SlowClaims(Toy):
        async def claim(self, limit: int) -> list[int]:
            claiming.set()
            await go_on.wait()
            return await super().claim(limit)

    worker = SlowClaims(concurrency=2)
    worker.stored = [1, 2]
    worker.start()
    await claiming.wait()

    # Two in line; the first gives up during the claim, which moves the line on: the next
    # finds no place, for the claim holds both.
    first = asyncio.create_task(worker.reserve_within(1, 0.01))
    await asyncio.sleep(0)
    later = asyncio.create_task(worker.reserve_within(2, DEADLINE))
    assert await first == 0
    assert not later.done()
    go_on.set()
    await until(lambda: worker.handled == [1, 2])
    assert not later.done()  # never more than the concurrency at once
    worker.finish(1)
    worker.finish(2)
    assert await later == 2
    worker.release(2)
    await worker.stop(1.0)


async def test_the_line_moves_on_when_its_head_gives_up(toy: Toy) -> None:
    assert await toy.reserve_within(1, 1.0) == 1
    toy.run([1], 1)  # one place busy, one free
    head = asyncio.create_task(toy.reserve_within(2, 0.05))  # waits for both
    await asyncio.sleep(0)
    behind = asyncio.create_task(toy.reserve_within(1, DEADLINE))
    await asyncio.sleep(0)
    assert not behind.done()  # first come, first served

    assert await head == 0
    assert await behind == 1  # the free place, without waiting for item 1
    toy.release(1)


async def test_the_line_moves_on_when_its_head_is_cancelled(toy: Toy) -> None:
    assert await toy.reserve_within(1, 1.0) == 1
    toy.run([1], 1)
    head = asyncio.create_task(toy.reserve_within(2, DEADLINE))
    await asyncio.sleep(0)
    behind = asyncio.create_task(toy.reserve_within(1, DEADLINE))
    await asyncio.sleep(0)

    head.cancel()
    await asyncio.gather(head, return_exceptions=True)

    assert await asyncio.wait_for(behind, 1.0) == 1
    toy.release(1)


async def taking(toy: Toy, item: int) -> tuple[asyncio.Task[list[int]], asyncio.Event]:
    """A store call under way that will take `item` for this process once `committed` is
    set, in a place it holds; and the task awaiting it."""
    assert await toy.reserve_within(1, 1.0) == 1
    committed = asyncio.Event()

    async def store_call() -> list[int]:
        await committed.wait()
        return [item]

    caller = asyncio.create_task(toy.run_taken(1, lambda _: store_call(), lambda taken: taken))
    await asyncio.sleep(0)
    return caller, committed


async def test_stop_waits_for_places_held_by_a_store_call(toy: Toy) -> None:
    caller, committed = await taking(toy, 5)
    stopping = asyncio.create_task(toy.stop(DEADLINE))
    done, _ = await asyncio.wait({stopping}, timeout=0.2)
    assert not done  # the store call holds a place: stop waits for it

    committed.set()
    await caller
    await until(lambda: 5 in toy.handled)  # taken work is still handled while stopping
    toy.finish(5)
    await asyncio.wait_for(stopping, 1.0)


async def test_work_taken_after_stop_is_left_to_its_lease(toy: Toy) -> None:
    caller, committed = await taking(toy, 7)
    await toy.stop(0.01)  # the store call outlasts the grace

    committed.set()
    await caller

    assert 7 not in toy.handled
    assert not toy._tasks


async def test_work_taken_for_a_caller_cancelled_meanwhile_is_still_handled(toy: Toy) -> None:
    caller, committed = await taking(toy, 7)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    committed.set()

    await until(lambda: 7 in toy.handled)  # not left claimed until its lease runs out


async def test_a_store_call_that_fails_gives_its_places_back(toy: Toy) -> None:
    assert await toy.reserve_within(2, 1.0) == 2

    async def store_call() -> list[int]:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await toy.run_taken(2, lambda _: store_call(), lambda taken: taken)

    assert await toy.reserve_within(2, 0.01) == 2
    toy.release(2)
