"""The webhook endpoints Vonage calls: inbound messages and delivery statuses.

Each turns a request into a validated model and hands it on; the answer is 200 only once the
message is durably stored, 400 naming the field for a bad body (nothing stored), and 503 when
the store cannot take it, so that Vonage retries.
"""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from bot.exceptions import InvalidInput
from bot.http import RUNTIME, invalid, problem
from bot.inbox import accept
from bot.models import parse_status

log = structlog.get_logger("groupbot.webhooks")


async def inbound(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    structlog.contextvars.clear_contextvars()
    body = await request.read()
    try:
        stored = await accept(
            runtime.store,
            body,
            bot_number=runtime.bot.config.bot.number,
            max_group_size=runtime.bot.config.bot.max_group_size,
        )
    except InvalidInput as exc:
        log.warning("inbound_invalid", field=exc.field, reason=exc.message)
        return invalid(exc, "Invalid inbound message")
    except Exception:
        log.exception("inbound_store_failed")
        return problem(503, "Store unavailable", "the message was not stored; retry later")
    if not stored.duplicate:
        runtime.inbox.wake()
    return web.json_response(
        {"message_uuid": str(stored.message.message_uuid), "duplicate": stored.duplicate}
    )


async def status(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    structlog.contextvars.clear_contextvars()
    body = await request.read()
    try:
        update = parse_status(body)
    except InvalidInput as exc:
        log.warning("status_invalid", field=exc.field, reason=exc.message)
        return invalid(exc, "Invalid message status")
    structlog.contextvars.bind_contextvars(provider_uuid=str(update.message_uuid))
    try:
        known = await runtime.store.record_status(update, body, time.time())
    except Exception:
        log.exception("status_store_failed")
        return problem(503, "Store unavailable", "the status was not stored; retry later")
    error = update.error.title if update.error else None
    log.info(
        "status_recorded" if known else "status_unknown_message", status=update.status, error=error
    )
    return web.json_response({"message_uuid": str(update.message_uuid), "known": known})
