"""The Messages API client: one OutboundMessage -> `POST {api_url}/v1/messages`.

Auth is an RS256 application JWT (application id + private key, new `jti`, short `exp`),
signed anew every JWT_REUSE_SECONDS, or HTTP Basic (api key + secret). Requests go through
bot.transport's kept-alive connections. Answers become ApiErrors carrying the problem document's
title and detail; 429 and 5xx, timeouts and lost connections are transient, other 4xx are
permanent.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import importlib.metadata
import json
import math
import time
import uuid
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import structlog
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc import jwt
from joserfc.jwk import RSAKey
from pydantic import ValidationError

from bot.config import ProviderSettings
from bot.exceptions import ApiError, ConfigError, PermanentApiError, TransientApiError
from bot.models import Accepted, OutboundMessage
from bot.numbers import mask
from bot.transport import NoAnswer, Origin

JSON = "application/json"
JWT_LIFETIME_SECONDS = 120
# A token serves the requests of this many seconds (Vonage accepts an application JWT until it
# expires): an RS256 signature costs more than the rest of a send, and one per request would
# be a third of a busy bot's time. Renewed well before it expires.
JWT_REUSE_SECONDS = 10
# A Retry-After beyond this is taken as this: one bad header must not stop sending for days.
MAX_RETRY_AFTER_SECONDS = 3600.0


def _version() -> str:
    try:
        return importlib.metadata.version("groupbot")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


VERSION = _version()
USER_AGENT = "groupbot" if VERSION == "unknown" else f"groupbot/{VERSION}"

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
        self.timeout_seconds = settings.timeout_seconds
        self._application_id = settings.application_id
        self._key: RSAKey | None = None
        self._basic: str | None = None
        private_key = settings.private_key.get_secret_value()
        api_secret = settings.api_secret.get_secret_value()
        if settings.application_id and private_key:
            self._key = RSAKey.import_key(_load_private_key(private_key, root))
        elif settings.api_key and api_secret:
            pair = f"{settings.api_key}:{api_secret}".encode()
            self._basic = "Basic " + base64.b64encode(pair).decode()
        else:
            raise ConfigError(
                ["provider: expected application_id and private_key, or api_key and api_secret"]
            )
        self._origin: Origin | None = None  # made on the first send: https loads the CAs
        self._token: tuple[float, str] | None = None  # (signed at, header value)
        self._head: tuple[str, bytes] | None = None  # (authorization, request head)

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
            token = jwt.encode({"alg": "RS256", "typ": "JWT"}, claims, self._key)
            self._token = (now, "Bearer " + token)
        return self._token[1]

    def _request_head(self, origin: Origin, authorization: str) -> bytes:
        """A send's request line and headers, encoded once per token."""
        if self._head is None or self._head[0] != authorization:
            headers = {
                "Authorization": authorization,
                "Accept": JSON,
                "Content-Type": JSON,
                "User-Agent": USER_AGENT,
            }
            self._head = (authorization, origin.head(urlsplit(self.url).path, headers))
        return self._head[1]

    async def send(self, message: OutboundMessage) -> str | None:
        if self._origin is None:
            self._origin = Origin(self.url, timeout_seconds=self.timeout_seconds)
        head = self._request_head(self._origin, self.authorization())
        try:
            answer = await self._origin.post(head, message.api_json)
        except TimeoutError as exc:  # an OSError too: first
            said = str(exc) or f"no answer within {self.timeout_seconds:g} s"
            raise TransientApiError(said) from None
        except NoAnswer as exc:  # an OSError too: before the next
            raise TransientApiError(
                f"no answer: {exc} (the request may have reached the API)"
            ) from None
        except OSError as exc:
            host = self._origin.host
            where = (
                f"[{host}]:{self._origin.port}" if ":" in host else f"{host}:{self._origin.port}"
            )
            raise TransientApiError(
                f"connection failed: cannot connect to {where}: {type(exc).__name__}: {exc}"
            ) from None
        if 200 <= answer.status < 300:
            try:
                return Accepted.model_validate_json(answer.body).message_uuid
            except ValidationError:
                # Accepted all the same: sending again would double the message.
                log.warning(
                    "accepted_without_uuid",
                    status=answer.status,
                    client_ref=message.client_ref,  # the broadcast's id and the member's place
                    to=mask(message.to),
                )
                return None
        raise problem_error(answer.status, answer.body, answer.headers.get("retry-after"), self.url)

    async def close(self) -> None:
        if self._origin is not None:
            await self._origin.close()


def problem_error(
    status: int, body: bytes, retry_after: str | None = None, url: str | None = None
) -> ApiError:
    """An RFC 7807 problem document as the ApiError it means (`url`: where it came from)."""
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
    if status == 404 and url is not None:  # most likely an api_url that is not the API's base
        message += f" (POST {url}: is provider.api_url right?)"
    kind = TransientApiError if status == 429 or status >= 500 else PermanentApiError
    return kind(
        message, status=status, title=title, detail=detail, retry_after=_seconds(retry_after)
    )


def _seconds(value: str | None) -> float | None:
    """A Retry-After header, seconds or an HTTP date, as seconds to wait (None: unreadable,
    and the backoff applies instead)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # asctime's form has no zone: an HTTP date is always GMT
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)


def credential_problems(settings: ProviderSettings, root: Path) -> list[str]:
    """What is wrong with the provider's credentials (the private key read and parsed), as
    `groupbot check` reports it, rather than at the first send."""
    try:
        MessagesClient(settings, root=root)
    except ConfigError as exc:
        return exc.problems
    return []


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
    except TypeError:  # cryptography's way of saying it needs a password
        raise ConfigError(
            ["provider.private_key: the key is encrypted; give it unencrypted (openssl rsa)"]
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError([f"provider.private_key: not a PEM private key: {exc}"]) from None
    if not isinstance(key, RSAPrivateKey):
        raise ConfigError(["provider.private_key: expected an RSA key (the JWT is RS256)"])
    return key
