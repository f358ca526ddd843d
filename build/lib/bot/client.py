"""The Messages API client: one OutboundMessage -> `POST {api_url}/v1/messages`.

Auth is a fresh RS256 JWT per request (application id + private key, new `jti`, short `exp`)
or HTTP Basic (api key + secret). Answers become ApiErrors carrying the problem document's
title and detail; 429 and 5xx, timeouts and lost connections are transient, other 4xx are
permanent.
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from pathlib import Path
from typing import Protocol

import aiohttp
import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from multidict import CIMultiDict
from pydantic import ValidationError

from bot.config import ProviderSettings
from bot.exceptions import ApiError, ConfigError, PermanentApiError, TransientApiError
from bot.models import Accepted, OutboundMessage

JSON = "application/json"
JWT_LIFETIME_SECONDS = 120
# A token serves the requests of this many seconds (Vonage accepts an application JWT until it
# expires): an RS256 signature costs more than the rest of a send, and one per request would
# be a third of a busy bot's time. Renewed well before it expires.
JWT_REUSE_SECONDS = 10
# A Retry-After beyond this is taken as this: one bad header must not stop sending for days.
MAX_RETRY_AFTER_SECONDS = 3600.0

log = structlog.get_logger("groupbot.client")


class Provider(Protocol):
    """Where outbound messages go: the Messages API, or the embedded simulator."""

    async def send(self, message: OutboundMessage) -> str | None:
        """Submit one message; return the provider's message_uuid (None if it gave none)
        or raise ApiError."""
        ...

    async def close(self) -> None: ...


class MessagesClient:
    def __init__(self, settings: ProviderSettings, *, root: Path) -> None:
        self.url = settings.api_url.rstrip("/") + "/v1/messages"
        self.timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
        self._application_id = settings.application_id
        self._key: RSAPrivateKey | None = None
        self._basic: str | None = None
        private_key = settings.private_key.get_secret_value()
        api_secret = settings.api_secret.get_secret_value()
        if settings.application_id and private_key:
            self._key = _load_private_key(private_key, root)
        elif settings.api_key and api_secret:
            pair = f"{settings.api_key}:{api_secret}".encode()
            self._basic = "Basic " + base64.b64encode(pair).decode()
        else:
            raise ConfigError(
                ["provider: expected application_id and private_key, or api_key and api_secret"]
            )
        self._session: aiohttp.ClientSession | None = None
        self._token: tuple[float, str] | None = None  # (signed at, header value)
        self._built: tuple[str, CIMultiDict[str]] | None = None  # (authorization, headers)

    def authorization(self, now: float | None = None) -> str:
        if self._key is None:
            assert self._basic is not None
            return self._basic
        now = time.time() if now is None else now
        if self._token is None or now - self._token[0] >= JWT_REUSE_SECONDS or now < self._token[0]:
            claims = {
                "application_id": self._application_id,
                "iat": int(now),
                "exp": int(now) + JWT_LIFETIME_SECONDS,
                "jti": str(uuid.uuid4()),
            }
            self._token = (now, "Bearer " + jwt.encode(claims, self._key, algorithm="RS256"))
        return self._token[1]

    def _headers(self, authorization: str) -> CIMultiDict[str]:
        """A send's headers, built once per token (aiohttp copies them into each request)."""
        if self._built is None or self._built[0] != authorization:
            headers = CIMultiDict(Authorization=authorization, Accept=JSON)
            headers["Content-Type"] = JSON
            self._built = (authorization, headers)
        return self._built[1]

    async def send(self, message: OutboundMessage) -> str | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        headers = self._headers(self.authorization())
        try:
            async with self._session.post(self.url, data=message.api_json, headers=headers) as resp:
                body = await resp.read()
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except TimeoutError:
            raise TransientApiError(f"no answer within {self.timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            raise TransientApiError(f"connection failed: {type(exc).__name__}: {exc}") from None
        if 200 <= status < 300:
            try:
                return Accepted.model_validate_json(body).message_uuid
            except ValidationError:
                # Accepted all the same: sending again would double the message.
                log.warning("accepted_without_uuid", status=status)
                return None
        raise problem_error(status, body, retry_after)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def problem_error(status: int, body: bytes, retry_after: str | None = None) -> ApiError:
    """An RFC 7807 problem document as the ApiError it means."""
    title: str | None = None
    detail: str | None = None
    try:
        problem = json.loads(body)
    except ValueError:
        problem = None
    if isinstance(problem, dict):
        title = str(problem["title"]) if problem.get("title") is not None else None
        detail = str(problem["detail"]) if problem.get("detail") is not None else None
    message = f"HTTP {status}: {title or 'no problem document'}" + (f": {detail}" if detail else "")
    kind = TransientApiError if status == 429 or status >= 500 else PermanentApiError
    return kind(
        message, status=status, title=title, detail=detail, retry_after=_seconds(retry_after)
    )


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare from this API; the backoff applies instead
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)


def _load_private_key(value: str, root: Path) -> RSAPrivateKey:
    if value.lstrip().startswith("-----BEGIN"):
        pem = value.encode()
    else:
        path = Path(value) if Path(value).is_absolute() else root / value
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                [f"provider.private_key: cannot read {path}: {exc.strerror}"]
            ) from None
    try:
        key = load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise ConfigError([f"provider.private_key: not a PEM private key: {exc}"]) from None
    if not isinstance(key, RSAPrivateKey):
        raise ConfigError(["provider.private_key: expected an RSA key (the JWT is RS256)"])
    return key
