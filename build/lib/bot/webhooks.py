"""The webhook endpoints Vonage calls: inbound messages and delivery statuses.

Each checks, in order: the body's size (413), the signature (503 when missing, so that Vonage
retries; 401 when wrong or replayed), the content type (415), the body itself (400 naming the
field). Only then is the message stored, and only once stored is it answered 200; a store
that cannot take it is answered 503. Nothing refused leaves a trace in the store.
"""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from bot.backlog import MAX_HOLD_SECONDS
from bot.exceptions import BadSignature, InvalidInput, Unsigned, WebhookRefused
from bot.http import RUNTIME, invalid, problem
from bot.inbox import accept
from bot.models import parse_status
from bot.runtime import Runtime

log = structlog.get_logger("groupbot.webhooks")

JSON = "application/json"


async def inbound(request: web.Request) -> web.Response:
    structlog.contextvars.clear_contextvars()
    body, refused = await _read(request)
    if refused is not None:
        return refused
    return await receive_inbound(
        request.app[RUNTIME], body, request.headers.get("Authorization"), request.content_type
    )


async def receive_inbound(
    runtime: Runtime, body: bytes, authorization: str | None, content_type: str = JSON
) -> web.Response:
    """Everything after reading the body; the simulator enters here with its signed webhooks."""
    jti: str | None = None
    try:
        jti = _verify(runtime, body, authorization)
        _check_content_type(content_type)
        # Held while the process is busy, MAX_HOLD_SECONDS at most in all (backpressure).
        hold = MAX_HOLD_SECONDS if runtime.backlog is None else await runtime.backlog.admit()
        config = runtime.bot.config.bot
        stored = await accept(
            runtime.store,
            body,
            bot_number=config.number,
            max_group_size=config.max_group_size,
            jti=jti,
            inbox=runtime.inbox,
            hold_seconds=hold,
        )
    except WebhookRefused as exc:
        runtime.metrics.inbound.labels("refused_signature").inc()
        return _refused(exc)
    except _WrongContentType as exc:
        runtime.metrics.inbound.labels("invalid").inc()
        return problem(415, "Unsupported media type", str(exc))
    except InvalidInput as exc:
        runtime.metrics.inbound.labels("invalid").inc()
        log.warning("inbound_invalid", field=exc.field, reason=exc.message)
        return invalid(exc, "Invalid inbound message")
    except Exception:
        runtime.metrics.inbound.labels("store_failed").inc()
        log.exception("inbound_store_failed")
        return problem(503, "Store unavailable", "the message was not stored; retry later")
    runtime.metrics.inbound.labels("duplicate" if stored.duplicate else "stored").inc()
    if not stored.duplicate:
        if not stored.taken:
            runtime.inbox.wake()  # stored behind its group's open message, for a claim
        runtime.changes.notify()
    return web.json_response(
        {"message_uuid": str(stored.message.message_uuid), "duplicate": stored.duplicate}
    )


async def status(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    structlog.contextvars.clear_contextvars()
    body, refused = await _read(request)
    if refused is not None:
        return refused
    try:
        jti = _verify(runtime, body, request.headers.get("Authorization"))
        _check_content_type(request.content_type)
        update = parse_status(body)
    except WebhookRefused as exc:
        return _refused(exc)
    except _WrongContentType as exc:
        return problem(415, "Unsupported media type", str(exc))
    except InvalidInput as exc:
        log.warning("status_invalid", field=exc.field, reason=exc.message)
        return invalid(exc, "Invalid message status")
    structlog.contextvars.bind_contextvars(provider_uuid=str(update.message_uuid))
    try:
        known = await runtime.store.record_status(update, body, time.time(), jti=jti)
    except WebhookRefused as exc:
        return _refused(exc)
    except Exception:
        log.exception("status_store_failed")
        return problem(503, "Store unavailable", "the status was not stored; retry later")
    runtime.changes.notify()
    error = update.error.title if update.error else None
    event = "status_recorded" if known else "status_unknown_message"
    log.info(event, status=update.status, error=error)
    return web.json_response({"message_uuid": str(update.message_uuid), "known": known})


class _WrongContentType(Exception):
    pass


async def _read(request: web.Request) -> tuple[bytes, web.Response | None]:
    try:
        return await request.read(), None
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[RUNTIME].bot.config.server.max_body_bytes
        log.warning("webhook_too_large", limit=limit)
        return b"", problem(413, "Body too large", f"expected at most {limit} bytes")


def _verify(runtime: Runtime, body: bytes, authorization: str | None) -> str | None:
    """The token's jti (for replay detection), or None when verification is switched off."""
    if runtime.verifier is None:
        return None
    return runtime.verifier.verify(body, authorization).jti


def _check_content_type(content_type: str) -> None:
    if content_type != JSON:
        raise _WrongContentType(f"expected Content-Type: {JSON}, got {content_type or 'none'}")


def _refused(exc: WebhookRefused) -> web.Response:
    if isinstance(exc, Unsigned):
        # Vonage: an unsigned callback follows an internal error there; a 5xx makes it retry.
        log.warning("webhook_unsigned", answer=503, reason=str(exc))
        return problem(503, "Unsigned webhook", f"{exc}; retry with a signed request")
    assert isinstance(exc, BadSignature)
    log.warning("webhook_bad_signature", answer=401, reason=str(exc))
    return problem(401, "Invalid signature", str(exc))
