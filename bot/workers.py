"""The loop both queues share: claim what is due, handle each item in its own task, sleep
until woken (new work in this process) or until the poll interval (work from other processes,
retries coming due).

Most work never needs a claim. A worker has a fixed number of places (its concurrency); work
that arrives in this process asks for a place first (`reserve_within`), and the store then
takes it for this process as it stores it (see store.Take), so that it goes straight to
`run`: one write instead of two, and no wait for the loop. Whoever waits for a place waits
in line; that wait is what holds a webhook back while the process is busy (backpressure).

The loop claims only while something may be waiting in the store (`wake()` says so, or the
poll comes round), and stops once a claim finds nothing. While it may, stored work has first
pick of the places that free up, and the line gets the rest: older work first.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog

T = TypeVar("T")
R = TypeVar("R")
log = structlog.get_logger("groupbot.workers")

MIN_IDLE_SECONDS = 0.005
# A claim outlives the work's own timeout (handler or request) by this much before another
# worker may take it over.
LEASE_MARGIN_SECONDS = 30.0


class Worker(ABC, Generic[T]):
    def __init__(
        self, name: str, *, concurrency: int, poll_seconds: float, lease_seconds: float
    ) -> None:
        self.name = name
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds  # how long a claim of this worker's holds
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = False  # stop() has returned: nothing may start any more
        self._reserved = 0  # places held for work being taken as it is stored
        self._line: deque[tuple[int, asyncio.Future[int]]] = deque()  # waiting for places
        self._settled = asyncio.Event()  # set when nothing runs and no place is held
        self._maybe_waiting = True  # the store may hold work to claim
        self._told = 0  # how many times wake() said so: a claim under way may miss one
        self._next_due = 0.0  # monotonic: when idle_seconds said to look again

    @abstractmethod
    async def claim(self, limit: int) -> list[T]: ...

    @abstractmethod
    async def handle(self, item: T) -> None: ...

    async def idle_seconds(self) -> float:
        """How long to sleep when nothing was claimed, unless woken first."""
        return self.poll_seconds

    def taking(self) -> bool:
        """Whether work may be taken as it is stored at the moment: started, not draining."""
        return not self._stopping and self._loop is not None

    def wake(self) -> None:
        """Something may be waiting in the store: claim."""
        self._told += 1
        self._maybe_waiting = True
        self._wake.set()

    async def reserve_within(self, wanted: int, seconds: float) -> int:
        """Hold `wanted` places for work about to be taken as it is stored, waiting up to
        `seconds` for them in line; return how many are held (after the wait, what was free,
        possibly none). Hand them to `run`, or back with `release`."""
        if not self.taking() or wanted <= 0:
            return 0
        if not self._line and not self._maybe_waiting and self._free() >= wanted:
            self._reserved += wanted
            return wanted
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._line.append((wanted, waiter))
        if self._maybe_waiting:
            self._wake.set()  # the loop claims first, then lets the line in
        else:
            self._let_in()
        try:
            if not waiter.done():
                await asyncio.wait({waiter}, timeout=seconds)
        except BaseException:  # cancelled while in line: what was given goes back
            if waiter.done():
                self.release(waiter.result())
            else:
                waiter.cancel()
                self._freed()  # those behind may fit where it did not
            raise
        if waiter.done():
            return waiter.result()
        waiter.cancel()  # skipped when its turn comes
        self._freed()  # those behind may fit where it did not
        return 0

    async def run_taken(
        self,
        reserved: int,
        call: Callable[[Callable[[R], None] | None], Awaitable[R]],
        took: Callable[[R], list[T]],
    ) -> R:
        """Await `call(early)`, a store call that may claim work for this process in the
        `reserved` places, and hand what it claimed (`took` of its result) to `run`, or the
        places back if it fails. Handed once, as soon as the store tells the result `early`
        (its work may start before the result is durable) or else when the call returns
        (with no places, `early` is None). Also when the caller is cancelled meanwhile: the
        call goes on, and work claimed for a live process must not wait for its lease."""
        if not reserved:
            return await call(None)
        handed = False

        def hand(result: R | None) -> None:
            nonlocal handed
            if handed:
                return
            handed = True
            try:
                items = [] if result is None else took(result)
            except Exception:
                log.exception("worker_take_failed", worker=self.name)
                items = []
            self.run(items, reserved)

        pending = asyncio.ensure_future(call(hand))

        def settle(done: asyncio.Future[R]) -> None:
            hand(None if done.cancelled() or done.exception() else done.result())

        pending.add_done_callback(settle)
        return await asyncio.shield(pending)

    def release(self, reserved: int) -> None:
        self._reserved -= reserved
        self._freed()

    def run(self, items: list[T], reserved: int) -> None:
        """Handle work taken for this process as it was stored, in the places reserved."""
        self._reserved -= reserved
        if self._stopped:  # too late: it stays claimed, for a claim after its lease
            log.warning("worker_took_after_stop", worker=self.name, items=len(items))
            items = []
        for item in items:
            self._start(item)
        self._freed()

    @property
    def alive(self) -> bool:
        """True while the loop runs (for readiness): a loop that died serves nothing."""
        return self._loop is not None and not self._loop.done()

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name=f"groupbot-{self.name}")

    def _free(self) -> int:
        return self.concurrency - len(self._tasks) - self._reserved

    def _freed(self) -> None:
        """Places came free: stored work first, if there may be some; else the line."""
        if not self._tasks and not self._reserved:
            self._settled.set()
        if self._maybe_waiting:
            self._wake.set()
        else:
            self._let_in()

    def _let_in(self) -> None:
        """Give free places to those in line, in the order they came."""
        while self._line:
            wanted, waiter = self._line[0]
            if waiter.done():  # gave up
                self._line.popleft()
                continue
            granted = min(wanted, self._free())
            if granted < wanted and (self._tasks or self._reserved):
                return  # not yet; when more finish (all of them, for more than concurrency)
            self._line.popleft()  # granted >= 1: all wanted, or what is free with nothing held
            self._reserved += granted
            waiter.set_result(granted)

    def _start(self, item: T) -> None:
        task = asyncio.create_task(self._handle(item))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._freed()

    async def _run(self) -> None:
        polled = True
        while not self._stopping:
            try:
                timeout = await self._step(polled)
            except Exception:
                log.exception("worker_step_failed", worker=self.name)
                timeout = self.poll_seconds
            finally:
                self._let_in()  # what the claims left
            polled = True
            if timeout > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                    polled = False
                except TimeoutError:
                    pass

    async def _step(self, polled: bool) -> float:
        """Claim and start what is due; return how long to wait before the next step."""
        self._wake.clear()
        if polled:
            # Work can become due with no wake(): a retry's time, a lease run out, another
            # process's work. Each poll, freed places go to a claim first, until one finds
            # nothing; else a line that never empties could keep that work waiting.
            self._maybe_waiting = True
        free = self._free()
        if free <= 0:
            return self.poll_seconds  # a finishing task wakes us
        if not polled and not self._maybe_waiting:
            # Woken with nothing stored to claim: wait on.
            return max(MIN_IDLE_SECONDS, min(self.poll_seconds, self._next_due - time.monotonic()))
        told = self._told
        self._reserved += free  # held while the claim is under way, so that no one else
        try:  # is given them meanwhile
            claimed = await self.claim(free)
        finally:
            self._reserved -= free
        for item in claimed:
            self._start(item)
        if claimed:
            # There may be more where these came from: claim again until a claim comes back
            # empty (a rate-limited claim takes one at a time, and must not wait for it).
            return 0
        if told == self._told:
            # Nothing to claim, and no wake() came meanwhile. Work stored behind work in
            # progress (a group's next message) is not claimed until it may go: the store
            # says when (Store.listen), rather than every freed place asking.
            self._maybe_waiting = False
        idle = max(MIN_IDLE_SECONDS, await self.idle_seconds())
        self._next_due = time.monotonic() + idle
        return idle

    async def _handle(self, item: T) -> None:
        try:
            await self.handle(item)
        except Exception:
            # The item stays claimed until its lease runs out, then is taken up again.
            log.exception("worker_item_failed", worker=self.name)

    async def stop(self, grace_seconds: float) -> None:
        """Stop claiming; give in-flight items `grace_seconds`, then cancel what is left.

        The loop is stopped first, so nothing is claimed after the drain begins. A cancelled
        item stays claimed in the store and is taken up again after its lease.
        """
        self._stopping = True
        self._wake.set()
        while self._line:  # nothing more is taken: those in line store their work for later
            _, waiter = self._line.popleft()
            if not waiter.done():
                waiter.set_result(0)
        deadline = time.monotonic() + grace_seconds
        if self._loop is not None:
            done, _ = await asyncio.wait({self._loop}, timeout=grace_seconds)
            if not done:
                self._loop.cancel()
                await asyncio.gather(self._loop, return_exceptions=True)
        # Places held for a store call under way become tasks (or come back) when it ends.
        while self._tasks or self._reserved:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._settled.clear()
            try:
                await asyncio.wait_for(self._settled.wait(), left)
            except TimeoutError:
                break
        self._stopped = True
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
