"""Says when the event loop is stuck, and where.

Every group is answered on one event loop, so a handler that blocks it (`time.sleep`,
`requests`, a long computation) stalls them all: webhooks wait unanswered, sends wait
unsent. No timeout can stop it, since a task is only cancelled where it awaits. A thread of
its own notices that the loop has not come round for `stuck_seconds` and logs
`event_loop_blocked` once per stall, with the line the loop's thread is running (the
innermost one outside Python and its installed packages: usually the handler's own), then
`event_loop_unblocked` with how long the stall lasted.
"""

from __future__ import annotations

import asyncio
import sys
import sysconfig
import threading
import time
import traceback
from types import FrameType

import structlog

log = structlog.get_logger("groupbot.watchdog")

STUCK_SECONDS = 1.0  # far above a busy loop's longest step (a full collection: ~30 ms)
BEAT_SECONDS = 0.1
HINT = "a handler must not block: await, or asyncio.to_thread(...)"
_INSTALLED = tuple(
    {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
)


class LoopWatchdog:
    def __init__(
        self, *, stuck_seconds: float = STUCK_SECONDS, beat_seconds: float = BEAT_SECONDS
    ) -> None:
        self.stuck_seconds = stuck_seconds
        self.beat_seconds = beat_seconds
        # Both threads read and write these under the lock, and log under it too: a stall's
        # end is never told before its start.
        self._lock = threading.Lock()
        self._beat = time.monotonic()  # when the loop last came round
        self._told: float | None = None  # the beat whose stall was told (blocked)
        self._stopped = threading.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._loop_thread_id = 0

    def start(self) -> None:
        """Watch the running loop (call from it)."""
        self._loop_thread_id = threading.get_ident()
        self._tick()
        self._thread = threading.Thread(target=self._watch, name="groupbot-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._thread is not None:
            self._thread.join()

    def _tick(self) -> None:
        with self._lock:
            now, since = time.monotonic(), self._beat
            self._beat = now
            if self._told == since:
                log.warning("event_loop_unblocked", seconds=round(now - since, 2))
            elif now - since > self.stuck_seconds:
                # Stuck all the while the watchdog could not run: something that held the
                # interpreter throughout (a C extension's call, a regular expression).
                log.warning(
                    "event_loop_unblocked",
                    seconds=round(now - since, 2),
                    where="unknown: the interpreter was held throughout (C code)",
                    hint=HINT,
                )
        self._timer = asyncio.get_running_loop().call_later(self.beat_seconds, self._tick)

    def _watch(self) -> None:
        while not self._stopped.wait(self.beat_seconds):
            with self._lock:
                beat = self._beat
                stuck = time.monotonic() - beat
                if self._told == beat or stuck <= self.stuck_seconds:
                    continue
                self._told = beat
                frame = sys._current_frames().get(self._loop_thread_id)
                log.warning(
                    "event_loop_blocked", seconds=round(stuck, 2), where=_where(frame), hint=HINT
                )


def _where(frame: FrameType | None) -> str:
    """The innermost line of the stack not in Python or an installed package (else the
    innermost line)."""
    stack = traceback.extract_stack(frame) if frame is not None else []
    if not stack:
        return "unknown"
    for entry in reversed(stack):
        if not entry.filename.startswith(_INSTALLED) and not entry.filename.startswith("<"):
            return f"{entry.filename}:{entry.lineno} in {entry.name}"
    entry = stack[-1]
    return f"{entry.filename}:{entry.lineno} in {entry.name}"
