"""The embedded provider: messages are "delivered" inside the process, no account needed.

Every outbound message is accepted with a fresh message_uuid, as the Messages API would, and
kept in `sent`; listeners (the web chat) are told at once. What each simulated phone shows is
read from the store, so messages sent by `groupbot send` from another process appear too.
"""

from __future__ import annotations

import asyncio
import uuid

from bot.models import OutboundMessage


class SimulatorProvider:
    def __init__(self) -> None:
        self.sent: list[tuple[str, OutboundMessage]] = []
        self._listeners: set[asyncio.Queue[tuple[str, OutboundMessage]]] = set()

    async def send(self, message: OutboundMessage) -> str:
        message_uuid = str(uuid.uuid4())
        self.sent.append((message_uuid, message))
        for queue in self._listeners:
            queue.put_nowait((message_uuid, message))
        return message_uuid

    def listen(self) -> asyncio.Queue[tuple[str, OutboundMessage]]:
        queue: asyncio.Queue[tuple[str, OutboundMessage]] = asyncio.Queue()
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[tuple[str, OutboundMessage]]) -> None:
        self._listeners.discard(queue)

    async def close(self) -> None:
        self._listeners.clear()
