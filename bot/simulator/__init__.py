"""The embedded provider: messages are "delivered" inside the process, no account needed.

Every outbound message is accepted with a fresh message_uuid, as the Messages API would.
What each simulated phone shows is read from the store, so messages sent by `groupbot send`
from another process appear too.
"""

from __future__ import annotations

import uuid
from collections import deque

from bot.models import OutboundMessage

KEEP_SENT = 1000


class SimulatorProvider:
    def __init__(self) -> None:
        # The latest messages "delivered", newest last (for tests and debugging).
        self.sent: deque[tuple[str, OutboundMessage]] = deque(maxlen=KEEP_SENT)

    async def send(self, message: OutboundMessage) -> str:
        message_uuid = str(uuid.uuid4())
        self.sent.append((message_uuid, message))
        return message_uuid

    async def close(self) -> None:
        self.sent.clear()
