"""The web chat of the simulator: type as any member of a group, see every member's phone.

A member's message goes through the same path as a webhook from Vonage (`inbox.accept`);
what each phone shows is read from the store.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.groups import Group
from bot.http import RUNTIME, invalid, problem
from bot.models import Number, invalid_input
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


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def groups(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    found = await runtime.store.groups()
    return web.json_response([{"key": key, "members": list(members)} for key, members in found])


async def conversation(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    key = request.match_info["key"]
    members = dict(await runtime.store.groups()).get(key)
    if members is None:
        return problem(404, "No such group", f"no group {key!r}")
    entries = await runtime.store.conversation(key)
    phones = {
        member: [
            {
                "at": e.at,
                "from": e.sender,
                "text": e.text,
                "state": e.state,
                "mine": e.sender == member,
            }
            for e in entries
            if e.sender == member or member in e.recipients
        ]
        for member in members
    }
    return web.json_response(
        {
            "key": key,
            "bot_number": runtime.bot.config.bot.number,
            "members": members,
            "phones": phones,
        }
    )


async def post_message(request: web.Request) -> web.Response:
    """A member writes to the group: the webhook Vonage would send, signed as Vonage signs
    it, goes through the same path as a real one."""
    runtime = request.app[RUNTIME]
    structlog.contextvars.clear_contextvars()
    number = runtime.bot.config.bot.number
    try:
        said = MemberMessage.model_validate_json(await request.read())
    except ValidationError as exc:
        return invalid(invalid_input(exc))
    body = inbound_body(bot_number=number, sender=said.sender, members=said.members, text=said.text)
    signature = runtime.verifier.sign(body) if runtime.verifier else None
    answer = await receive_inbound(runtime, body, signature)
    if answer.status != 200:
        return answer
    group = Group.of([said.sender, *said.members], bot_number=number)
    return web.json_response({"group": group.key}, status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/simulator/groups", groups)
    app.router.add_get("/simulator/groups/{key}", conversation)
    app.router.add_post("/simulator/messages", post_message)
