"""The embedded provider: messages are "delivered" inside the process, no account needed.

Every outbound message is accepted with a fresh message_uuid, as the Messages API would, and
then reported delivered through the same status path as Vonage's callbacks (when a
`on_status` is attached). What each simulated phone shows is read from the store, so messages
sent by `groupbot send` from another process appear too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from bot.models import MessageStatus, OutboundMessage

KEEP_SENT = 1000


class SimulatorProvider:
    def __init__(self) -> None:
        # The latest messages "delivered", newest last (for tests and debugging).
        self.sent: deque[tuple[str, OutboundMessage]] = deque(maxlen=KEEP_SENT)
        self.on_status: Callable[[MessageStatus], Coroutine[Any, Any, None]] | None = None
        self._reports: set[asyncio.Task[None]] = set()

    async def send(self, message: OutboundMessage) -> str:
        message_uuid = str(uuid.uuid4())
        self.sent.append((message_uuid, message))
        if self.on_status is not None:
            task = asyncio.create_task(self.on_status(_delivered(message_uuid, message)))
            self._reports.add(task)
            task.add_done_callback(self._reports.discard)
        return message_uuid

    async def close(self) -> None:
        for task in list(self._reports):
            task.cancel()
        await asyncio.gather(*self._reports, return_exceptions=True)
        self.sent.clear()


def _delivered(message_uuid: str, message: OutboundMessage) -> MessageStatus:
    return MessageStatus.model_validate(
        {
            "message_uuid": message_uuid,
            "to": message.to,
            "from": message.from_,
            "channel": "mms",
            "timestamp": datetime.now(UTC),
            "status": "delivered",
            "client_ref": message.client_ref,
        }
    )
