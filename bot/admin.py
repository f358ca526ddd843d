"""`POST /api/messages`: start a group conversation, as the seed's "Sending a Group Message".

Needs `Authorization: Bearer <server.api_token>`, compared in constant time; the API is off
while no token is configured.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot import broadcast
from bot.compose import compose
from bot.context import Media, Reply
from bot.exceptions import HandlerError, InvalidInput
from bot.groups import Group
from bot.http import RUNTIME, invalid, problem
from bot.models import MediaKind, Number, OutboundMessage, invalid_input
from bot.runtime import Runtime
from bot.store import OutboxRecord

log = structlog.get_logger("groupbot.admin")


class MediaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: MediaKind
    url: str
    caption: str | None = None


IDEMPOTENCY_KEY = "Idempotency-Key"
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


async def _repeated(
    runtime: Runtime, broadcast_id: str, reply: Reply, group: Group
) -> web.Response | None:
    """The answer to a request whose Idempotency-Key named a broadcast queued before: 200
    with it if this request asks the same (the same message, to the same members but those
    left out as opted out), 422 if not; None when nothing was queued under the key."""
    earlier = await runtime.store.broadcast(broadcast_id)
    if not earlier:
        return None
    planned = {
        m.to: _as_queued(m)
        for m in broadcast.plan(reply, group, bot_number=runtime.bot.config.bot.number)
    }
    queued = {r.recipient: _as_queued(r.message) for r in earlier}
    missing = planned.keys() - queued.keys()
    same = all(planned.get(to) == message for to, message in queued.items()) and (
        not missing or missing <= await runtime.store.opted_out(sorted(missing))
    )
    if not same:
        return problem(
            422, "Idempotency-Key reused",
            f"{IDEMPOTENCY_KEY} was used for another request (other members or message)",
            field=IDEMPOTENCY_KEY,
        )  # fmt: skip
    log.info("broadcast_repeated", broadcast=broadcast_id)
    answer = {"broadcast_id": broadcast_id, "group": group.key, "messages": _listed(earlier)}
    return web.json_response({**answer, "duplicate": True}, status=200)


def _as_queued(message: OutboundMessage) -> OutboundMessage:
    """The message as a request asks it: its client_ref is the broadcast's, not the ask's."""
    return message.model_copy(update={"client_ref": None})


def _listed(records: list[OutboxRecord]) -> list[dict[str, object]]:
    """A broadcast's messages as the answer lists them."""
    return [{"id": r.id, "to": r.recipient, "state": r.state} for r in records]


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: list[Number] = Field(min_length=1)
    text: str | None = None
    template: str | None = None
    variables: dict[str, Any] = {}
    media: MediaBody | None = None


async def send_message(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    config = runtime.bot.config
    structlog.contextvars.clear_contextvars()
    token = config.server.api_token.get_secret_value()
    if not token:
        return problem(403, "Admin API disabled", "set server.api_token to use /api/messages")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        log.warning("admin_unauthorized")
        return problem(401, "Unauthorized", "expected Authorization: Bearer <server.api_token>")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = config.server.max_body_bytes
        return problem(413, "Body too large", f"expected at most {limit} bytes")
    try:
        body = SendRequest.model_validate_json(raw)
        group = Group.for_broadcast(
            body.to, bot_number=config.bot.number, max_size=config.bot.max_group_size
        )
        media = Media(body.media.kind, body.media.url, body.media.caption) if body.media else None
        reply = compose(
            runtime.bot.templates,
            bot_number=config.bot.number,
            members=group.members,
            text=body.text,
            template=body.template,
            variables=body.variables,
            media=media,
        )
    except ValidationError as exc:
        return invalid(invalid_input(exc))
    except HandlerError as exc:
        return invalid(InvalidInput("media", str(exc)))
    except InvalidInput as exc:
        return invalid(exc)
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is not None and not _KEY.fullmatch(key):
        return invalid(InvalidInput(IDEMPOTENCY_KEY, "expected 1 to 255 printable characters"))
    # A key names one broadcast: a retry of a request whose answer was lost finds it queued
    # and gets it back, instead of queueing it again (the store's unique index decides races).
    broadcast_id = f"key-{hashlib.sha256(key.encode()).hexdigest()[:32]}" if key else None
    try:
        if broadcast_id is not None and (
            repeated := await _repeated(runtime, broadcast_id, reply, group)
        ):
            return repeated
        broadcast_id = await runtime.send(reply, group, broadcast_id=broadcast_id)
    except Exception:
        # The same key sent twice at once: the store's unique index let one in, and this one
        # finds it queued. Else the store failed, and nothing was queued.
        with contextlib.suppress(Exception):
            if broadcast_id is not None and (
                repeated := await _repeated(runtime, broadcast_id, reply, group)
            ):
                return repeated
        log.exception("admin_send_failed")
        return problem(503, "Store unavailable", "the broadcast was not queued; retry later")
    answer: dict[str, object] = {"broadcast_id": broadcast_id, "group": group.key}
    try:  # queued is queued: a failing read-back must not invite a retry that doubles it
        answer["messages"] = _listed(await runtime.store.broadcast(broadcast_id))
    except Exception:
        log.exception("admin_readback_failed")
    return web.json_response(answer, status=202)
