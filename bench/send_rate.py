"""Achieved send rate against the configured limits.

Runs the real outbox (SQLite store, Messages API client with JWT auth) against a minimal
Messages API on loopback that only notes when each request arrived, and prints, for each
configuration: the configured limit, the achieved rate over the run, the most requests seen
in any one-second window, and their ratios to the limit. The unlimited run is the baseline:
it shows the API and outbox could go much faster, so the limiter is what holds the rate. The
API takes 200 ms to answer each request, as a real one does.

    .venv/bin/python bench/send_rate.py
"""

from __future__ import annotations

import asyncio
import bisect
import tempfile
import time
import uuid
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from bot import broadcast
from bot.client import MessagesClient
from bot.config import LogSettings, ProviderSettings
from bot.context import Reply
from bot.groups import Group
from bot.log import configure
from bot.outbox import OutboxWorker
from bot.ratelimit import SendRate
from bot.store import entries
from bot.store.sqlite import SqliteStore

BOT = "11234567890"
GROUP_SIZE = 5
API_LATENCY_SECONDS = 0.2


async def measure(
    api_url: str, pem: str, folder: Path, *, per_second: float | None, per_number: float | None,
    messages: int,
) -> list[float]:  # fmt: skip
    arrivals.clear()
    store = await SqliteStore.open(folder / f"{uuid.uuid4()}.db")
    settings = ProviderSettings(
        verify_signatures=False,  # the client alone: no webhooks here
        kind="vonage",
        api_url=api_url,
        application_id="bench",
        private_key=SecretStr(pem),
    )
    client = MessagesClient(settings, root=folder)
    for n in range(messages // GROUP_SIZE):
        group = Group(tuple(f"1202555{n:02d}{m:02d}" for m in range(GROUP_SIZE)))
        planned = broadcast.plan(Reply(f"update {n}"), group, bot_number=BOT)
        await store.enqueue(entries(f"b-{n}", group.key, planned), group.members, time.time())
    worker = OutboxWorker(
        store, client, rate=SendRate(per_second, per_number), sender=BOT,
        request_timeout_seconds=10,
    )  # fmt: skip
    done.clear()
    target[0] = messages
    worker.start()
    await done.wait()
    await worker.stop(5)
    await client.close()
    await store.close()
    return sorted(arrivals)


def busiest_second(times: list[float]) -> int:
    """The most requests in any half-open one-second window [t, t + 1)."""
    return max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))


arrivals: list[float] = []
target = [0]  # how many arrivals end the current run
done = asyncio.Event()


async def messages_api(request: web.Request) -> web.Response:
    arrivals.append(time.monotonic())
    if len(arrivals) >= target[0]:
        done.set()
    await request.read()
    await asyncio.sleep(API_LATENCY_SECONDS)  # a real API takes its time to answer
    return web.json_response({"message_uuid": str(uuid.uuid4())}, status=202)


async def main() -> None:
    configure(LogSettings(level="warning"))  # one line per send would bury the figures
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    app = web.Application()
    app.router.add_post("/v1/messages", messages_api)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}"
    runs = [
        ("no limit (baseline)", None, None, 300),
        ("account 30/s (default)", 30.0, None, 150),
        ("account 10/s", 10.0, None, 60),
        ("account 30/s, number 5/s", 30.0, 5.0, 30),
    ]
    print(f"{'configuration':<28}{'limit/s':>8}{'achieved/s':>12}{'busiest 1 s':>13}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for name, per_second, per_number, count in runs:
            times = await measure(
                url, pem, Path(folder), per_second=per_second, per_number=per_number,
                messages=count,
            )  # fmt: skip
            achieved = (len(times) - 1) / (times[-1] - times[0])
            limit = min(r for r in (per_second, per_number, float("inf")) if r is not None)
            ratio = f"{achieved / limit:.3f}" if limit != float("inf") else "-"
            shown = f"{limit:g}" if limit != float("inf") else "-"
            print(f"{name:<28}{shown:>8}{achieved:>12.1f}{busiest_second(times):>13}{ratio:>8}")
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
