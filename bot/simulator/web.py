"""The web chat of the simulator: type as any member of a group, see every member's phone.

A member's message goes through the same path as a webhook from Vonage (`inbox.accept`);
what each phone shows is read from the store.
"""

from __future__ import annotations

import contextlib
import functools
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.exceptions import InvalidInput
from bot.groups import Group
from bot.http import RUNTIME, invalid, problem
from bot.models import Number, invalid_input
from bot.numbers import only_north_american, reaches_by_mms
from bot.runtime import Runtime
from bot.webhooks import receive_inbound

STATIC = Path(__file__).parent / "static"


class MemberMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sender: Number = Field(alias="from")
    members: list[Number] = Field(min_length=1)
    text: str = Field(min_length=1, max_length=640)


def inbound_body(*, bot_number: str, sender: str, members: list[str], text: str) -> bytes:
    """The webhook Vonage would post when `sender` writes `text` to the group."""
    participants = [m for m in dict.fromkeys(members) if m not in (sender, bot_number)]
    body: dict[str, object] = {
        "channel": "mms",
        "message_uuid": str(uuid.uuid4()),
        "to": bot_number,
        "from": sender,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "message_type": "text",
        "text": text,
    }
    if participants:
        body["mms"] = {"participants": participants}
    return json.dumps(body).encode()


async def index(request: web.Request) -> web.Response:
    # The page checks a new group's size as the bot will: it is told the bot's limit.
    most = request.app[RUNTIME].bot.config.bot.max_group_size
    return web.Response(
        text=_page().replace("__MAX_GROUP_SIZE__", str(most)), content_type="text/html"
    )


@functools.cache
def _page() -> str:
    return (STATIC / "index.html").read_text(encoding="utf-8")


async def groups(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    found = await runtime.store.groups()
    return web.json_response([{"key": key, "members": list(members)} for key, members in found])


async def _conversation(runtime: Runtime, key: str) -> dict[str, Any] | None:
    """What every member's phone shows, or None for an unknown group."""
    members = dict(await runtime.store.groups()).get(key)
    if members is None:
        return None
    entries = await runtime.store.conversation(key)
    phones = {
        member: [
            {
                "at": e.at,
                "from": e.sender,
                "text": e.text,
                "state": e.state,
                "mine": e.sender == member,
                "participants": list(e.participants),
                "media": {"kind": e.media_kind, "url": e.media_url} if e.media_kind else None,
            }
            for e in entries
            if e.sender == member or member in e.recipients
        ]
        for member in members
    }
    number = runtime.bot.config.bot.number
    return {"key": key, "bot_number": number, "members": list(members), "phones": phones}


async def conversation(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    found = await _conversation(request.app[RUNTIME], key)
    if found is None:
        return problem(404, "No such group", f"no group {key!r}")
    return web.json_response(found)


async def post_message(request: web.Request) -> web.Response:
    """A member writes to the group: the webhook Vonage would send, signed as Vonage signs
    it, goes through the same path as a real one."""
    runtime = request.app[RUNTIME]
    structlog.contextvars.clear_contextvars()
    number = runtime.bot.config.bot.number
    if request.content_type != "application/json":  # no cross-site form posts
        return problem(415, "Unsupported media type", "expected Content-Type: application/json")
    try:
        said = MemberMessage.model_validate_json(await request.read())
    except ValidationError as exc:
        return invalid(invalid_input(exc))
    config = runtime.bot.config.bot
    if (refused := _refused_members(said, number, config.max_group_size)) is not None:
        return invalid(refused)
    body = inbound_body(bot_number=number, sender=said.sender, members=said.members, text=said.text)
    signature = runtime.verifier.sign(body) if runtime.verifier else None
    answer = await receive_inbound(runtime, body, signature)
    if answer.status != 200:
        return answer
    group = Group.of([said.sender, *said.members], bot_number=number)
    message_uuid = json.loads(body)["message_uuid"]  # for `groupbot status`
    return web.json_response({"group": group.key, "message_uuid": message_uuid}, status=201)


def _refused_members(said: MemberMessage, bot_number: str, max_size: int) -> InvalidInput | None:
    """What is wrong with the members, named as the request names them (a webhook's own
    checks would name the fields of the webhook made from it)."""
    if said.sender == bot_number:
        return InvalidInput("from", "the bot's own number cannot write as a member")
    for field, member in (("from", said.sender), *_indexed("members", said.members)):
        if member == bot_number:
            return InvalidInput(field, "the bot's own number is in every group, not a member")
        if not reaches_by_mms(member):
            return InvalidInput(field, only_north_american(member))
    size = len(Group.of([said.sender, *said.members], bot_number=bot_number).members)
    if size > max_size:
        return InvalidInput("members", f"expected at most {max_size} members, got {size}")
    return None


def _indexed(field: str, values: list[str]) -> list[tuple[str, str]]:
    return [(f"{field}[{n}]", value) for n, value in enumerate(values)]


def add_routes(app: web.Application) -> None:
    app[STREAMS] = Streams()
    app.on_shutdown.append(_close_streams)
    app.router.add_get("/", index)
    app.router.add_get("/simulator/groups", groups)
    app.router.add_get("/simulator/groups/{key}", conversation)
    app.router.add_get("/simulator/groups/{key}/events", events)
    app.router.add_post("/simulator/messages", post_message)


HEARTBEAT_SECONDS = 15.0


@dataclass
class Streams:
    """The open event streams, told to end when the bot shuts down (a stream never ends by
    itself, and would hold the shutdown for its whole grace period)."""

    closing: bool = False


STREAMS = web.AppKey("simulator_streams", Streams)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the group's conversation, again whenever it changes."""
    runtime = request.app[RUNTIME]
    streams = request.app[STREAMS]
    key = request.match_info["key"]
    if await _conversation(runtime, key) is None:
        return problem(404, "No such group", f"no group {key!r}")
    stream = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await stream.prepare(request)
    last = b""
    with contextlib.suppress(ConnectionResetError):
        while not streams.closing:
            seen = runtime.changes.version
            payload = json.dumps(await _conversation(runtime, key)).encode()
            # A comment line when nothing changed keeps proxies from closing an idle stream.
            await stream.write(b"data: " + payload + b"\n\n" if payload != last else b": idle\n\n")
            last = payload
            await runtime.changes.wait(seen, HEARTBEAT_SECONDS)
    return stream


async def _close_streams(app: web.Application) -> None:
    app[STREAMS].closing = True
    if RUNTIME in app:
        app[RUNTIME].changes.notify()
