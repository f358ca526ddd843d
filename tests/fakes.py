"""A scripted fake Messages API: a real aiohttp server that checks auth like Vonage would.

Each request's JWT is verified with the application's public key (RS256, `application_id`,
`jti`, `exp`). Answers come from a script (status, body, headers, delay), else 202 with
a new message_uuid. Tests read `accepted` (requests answered 202) and `attempts` (all).
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey


@dataclass(frozen=True)
class Recorded:
    body: dict[str, Any]
    authorization: str
    claims: dict[str, Any] | None
    status: int
    message_uuid: str | None
    at: float = field(default_factory=time.monotonic)  # when it was answered (or dropped)
    arrived: float = 0.0  # when the request came in (time.monotonic())


@dataclass(frozen=True)
class Scripted:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without an answer
    lost_answer: bool = False  # accept the message, then never answer (the client gives up)
    hold: asyncio.Event | None = None  # answer only once this is set


class FakeMessagesApi:
    def __init__(
        self,
        *,
        public_key: RSAPublicKey | None = None,
        application_id: str | None = None,
        basic: tuple[str, str] | None = None,
    ) -> None:
        self.public_key = public_key
        self.application_id = application_id
        self.basic = basic
        self.attempts: list[Recorded] = []
        self.arrived = 0  # requests received, including those still held by a delay
        self.script: deque[Scripted] = deque()
        self.url = ""
        self._changed = asyncio.Condition()

    @property
    def accepted(self) -> list[Recorded]:
        return [r for r in self.attempts if r.status == 202]

    def respond(self, status: int, body: dict[str, Any] | None = None, **options: Any) -> None:
        """Answer the next request with this, instead of 202."""
        self.script.append(Scripted(status, body, **options))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        return app

    async def wait_for_accepted(self, count: int, within: float = 10.0) -> list[Recorded]:
        """Wait until `count` requests were accepted; fail loudly if that takes too long."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.accepted) >= count), within
            )
        return self.accepted

    async def wait_for_arrived(self, count: int, within: float = 10.0) -> None:
        """Wait until `count` requests have arrived (answered or still held)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.arrived >= count), within)

    async def _messages(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        authorization = request.headers.get("Authorization", "")
        body = await request.json()
        claims, problem = self._check_auth(authorization)
        if problem:
            return await self._record(body, authorization, claims, Scripted(401, problem), arrived)
        step = self.script.popleft() if self.script else Scripted(202)
        async with self._changed:
            self.arrived += 1
            self._changed.notify_all()
        if step.lost_answer:
            await self._record(body, authorization, claims, step, arrived)
            await asyncio.Event().wait()  # held until the client or the server gives up
        if step.hold is not None:
            await step.hold.wait()
        if step.delay:
            await asyncio.sleep(step.delay)  # the scripted slowness under test, not a sync
        if step.drop:
            assert request.transport is not None
            request.transport.close()
            async with self._changed:
                self.attempts.append(
                    Recorded(body, authorization, claims, 0, None, arrived=arrived)
                )
                self._changed.notify_all()
            return web.Response(status=500)  # never reaches the client: the line is down
        return await self._record(body, authorization, claims, step, arrived)

    async def _record(
        self,
        body: dict[str, Any],
        authorization: str,
        claims: dict[str, Any] | None,
        step: Scripted,
        arrived: float,
    ) -> web.Response:
        message_uuid = str(uuid.uuid4()) if step.status == 202 else None
        answer = step.body if step.body is not None else {"message_uuid": message_uuid}
        async with self._changed:
            self.attempts.append(
                Recorded(body, authorization, claims, step.status, message_uuid, arrived=arrived)
            )
            self._changed.notify_all()
        content_type = "application/json" if step.status < 400 else "application/problem+json"
        return web.json_response(
            answer, status=step.status, headers=step.headers, content_type=content_type
        )

    def _check_auth(
        self, authorization: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        unauthorized = {
            "type": "https://developer.nexmo.com/api-errors#unauthorized",
            "title": "Unauthorized",
            "detail": "You did not provide correct credentials.",
            "instance": str(uuid.uuid4()),
        }
        if self.basic is not None:
            expected = base64.b64encode(":".join(self.basic).encode()).decode()
            return (None, None) if authorization == f"Basic {expected}" else (None, unauthorized)
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or self.public_key is None:
            return None, unauthorized
        try:
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                options={"require": ["exp", "iat", "jti"]},
            )
        except jwt.PyJWTError as exc:
            return None, {**unauthorized, "detail": str(exc)}
        # Like Vonage: a token is good until it expires (checked by decode above), and may
        # serve several requests; a lifetime over five minutes is refused here, as a
        # long-lived token would be a risk.
        short_lived = claims["exp"] - claims["iat"] <= 300
        if claims.get("application_id") != self.application_id or not short_lived:
            return claims, unauthorized
        return claims, None
