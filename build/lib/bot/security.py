"""Signed webhooks, checked exactly as Vonage signs them.

`Authorization: Bearer <JWT>`, HS256 with the account's signature secret; the claims carry
`iat`, `jti` and `payload_hash`, the SHA-256 hex of the raw body. There is no `exp`, so
freshness (`iat` within `max_age_seconds`) and replay (a `jti` seen before) are ours to check;
the store remembers every accepted `jti` for as long as its token could still be fresh.

An unsigned callback can happen after an internal error at Vonage, which advises answering it
with a 5xx so that it is retried; a signature that is present but wrong is refused with 401.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass

import jwt

from bot.exceptions import BadSignature, Unsigned

# Tolerated clock difference for an `iat` slightly in the future.
CLOCK_SKEW_SECONDS = 30.0


@dataclass(frozen=True)
class Verified:
    jti: str
    iat: float


@dataclass(frozen=True)
class WebhookVerifier:
    secret: str
    max_age_seconds: float = 300.0

    def verify(
        self, body: bytes, authorization: str | None, *, now: float | None = None
    ) -> Verified:
        """The token's claims, or Unsigned / BadSignature saying why not."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unsigned("expected Authorization: Bearer <JWT>")
        try:
            claims = jwt.decode(
                token.strip(),
                self.secret,
                algorithms=["HS256"],
                options={"require": ["iat", "jti", "payload_hash"]},
                leeway=CLOCK_SKEW_SECONDS,
            )
        except jwt.PyJWTError as exc:
            raise BadSignature(f"token does not verify: {exc}") from None
        expected = hashlib.sha256(body).hexdigest().encode()
        # As bytes: compare_digest refuses str with non-ASCII characters, which a token can hold.
        if not hmac.compare_digest(str(claims["payload_hash"]).encode(), expected):
            raise BadSignature("payload_hash does not match the body")
        try:
            iat = float(claims["iat"])
        except (TypeError, ValueError):
            raise BadSignature("iat: expected a number of seconds") from None
        age = (time.time() if now is None else now) - iat
        if age > self.max_age_seconds:
            raise BadSignature(f"token issued {age:.0f} s ago, over {self.max_age_seconds:g} s")
        return Verified(jti=str(claims["jti"]), iat=iat)

    def sign(self, body: bytes, *, now: float | None = None) -> str:
        """An Authorization header for `body`, as Vonage makes it (the simulator uses this)."""
        issued = int(time.time() if now is None else now)
        claims = {
            "iat": issued,
            "jti": str(uuid.uuid4()),
            "iss": "Vonage",
            "payload_hash": hashlib.sha256(body).hexdigest(),
        }
        return "Bearer " + jwt.encode(claims, self.secret, algorithm="HS256")
