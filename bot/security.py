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
import math
import time
import uuid
import warnings
from dataclasses import dataclass

from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError, SecurityWarning
from joserfc.jwk import OctKey
from joserfc.jws import JWSRegistry

from bot.exceptions import BadSignature, Unsigned

# Tolerated clock difference for an `iat` slightly in the future.
CLOCK_SKEW_SECONDS = 30


@dataclass(frozen=True)
class Verified:
    jti: str
    iat: float


class WebhookVerifier:
    """joserfc checks the token (its base64 strictly, HS256 only, the claims Vonage always
    sends): 17 µs a webhook, where PyJWT 2.15 took 28, most of it checking on every token
    that the key, ours and fixed, is not a PEM, DER or JWK one."""

    def __init__(self, secret: str, max_age_seconds: float = 300.0) -> None:
        self.max_age_seconds = max_age_seconds
        with warnings.catch_warnings():
            # A secret under 14 bytes: said at start, in our words (Bot.warnings: under 32).
            warnings.simplefilter("ignore", SecurityWarning)
            self._key = OctKey.import_key(secret)
        # HS256 only; a header parameter it does not know is let through (PyJWT let it, and a
        # new one from Vonage, a key id say, must not refuse every webhook).
        self._registry = JWSRegistry(algorithms=["HS256"], strict_check_header=False)
        self._claims = jwt.JWTClaimsRegistry(
            leeway=CLOCK_SKEW_SECONDS,
            iat={"essential": True},
            jti={"essential": True},
            payload_hash={"essential": True},
        )

    def verify(
        self, body: bytes, authorization: str | None, *, now: float | None = None
    ) -> Verified:
        """The token's claims, or Unsigned / BadSignature saying why not."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unsigned("expected Authorization: Bearer <JWT>")
        try:
            claims = jwt.decode(token.strip(), self._key, registry=self._registry).claims
            self._claims.validate(claims)
        except JoseError as exc:
            raise BadSignature(f"token does not verify: {_reason(exc)}") from None
        except (TypeError, ValueError, AttributeError, ArithmeticError):
            # A shape joserfc does not expect ("crit" not a list, a header that is not an
            # object, bytes that are not text): checked before the signature, so anyone could
            # send it. Refused like any bad token, never a 5xx.
            raise BadSignature("token does not verify: a malformed token") from None
        expected = hashlib.sha256(body).hexdigest().encode()
        # As bytes: compare_digest refuses str with non-ASCII characters, which a token can hold.
        if not hmac.compare_digest(str(claims["payload_hash"]).encode(errors="replace"), expected):
            raise BadSignature("payload_hash does not match the body")
        try:
            iat = float(claims["iat"])
        except (TypeError, ValueError, OverflowError):
            raise BadSignature("iat: expected a number of seconds") from None
        if not math.isfinite(iat):
            raise BadSignature("iat: expected a number of seconds")
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
        return "Bearer " + jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, self._key)


def _reason(exc: JoseError) -> str:
    if isinstance(exc, BadSignatureError):
        return "the signature does not match the signature secret"
    return exc.description or exc.error.replace("_", " ")
