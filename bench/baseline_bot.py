"""The baseline for bench/e2e.py: the same visible work as groupbot, with no framework.

A minimal aiohttp bot: it parses the webhook's JSON body and, when the text contains the word
"ping", sends "pong <text>" to every member of the group (the sender and the participants),
one POST per member with the other members as participants, through one shared client
session. It answers 200 first and sends afterwards, in a background task. No store, no
signature check, no retries: the least a bot can do.

    .venv/bin/python bench/baseline_bot.py --port 8090 --api-url http://127.0.0.1:8091
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

BOT = "11234567890"
SESSION = web.AppKey("session", aiohttp.ClientSession)
API_URL = web.AppKey("api_url", str)
TASKS: set[asyncio.Task[None]] = set()  # strong references, so tasks are not collected early


async def send_all(app: web.Application, sender: str, participants: list[str], text: str) -> None:
    members = [sender, *participants]
    session = app[SESSION]
    url = app[API_URL] + "/v1/messages"

    async def one(member: str) -> None:
        body: dict[str, Any] = {
            "to": member,
            "from": BOT,
            "channel": "mms",
            "message_type": "text",
            "text": "pong " + text,
            "mms": {"participants": [m for m in members if m != member]},
        }
        async with session.post(url, json=body) as response:
            await response.read()

    await asyncio.gather(*(one(m) for m in members), return_exceptions=True)


async def inbound(request: web.Request) -> web.Response:
    try:
        data = json.loads(await request.read())
        text = str(data.get("text") or "")
        sender = str(data["from"])
        participants = [str(p) for p in (data.get("mms") or {}).get("participants", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        return web.Response(status=400)
    if "ping" in text.lower().split():
        task = asyncio.create_task(send_all(request.app, sender, participants, text))
        TASKS.add(task)
        task.add_done_callback(TASKS.discard)
    return web.Response(status=200)


async def readyz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app(api_url: str) -> web.Application:
    app = web.Application()
    app[API_URL] = api_url.rstrip("/")

    async def session(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession()
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session)
    app.router.add_post("/webhooks/inbound", inbound)
    app.router.add_get("/readyz", readyz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-url", required=True)
    args = parser.parse_args()
    web.run_app(
        make_app(args.api_url), host="127.0.0.1", port=args.port, print=None, access_log=None
    )


if __name__ == "__main__":
    main()
