"""One send to the Messages API: groupbot's transport against aiohttp's client.

Run with `python bench/client.py [--n 20000]` (inside the project's venv). Not a test: it
prints figures. A fake Messages API (an aiohttp server answering 202 with a message_uuid)
runs in a process of its own, on the other core when the machine has more than one; this
process posts N message bodies with a JWT-sized Authorization header, 64 at a time (the
outbox's places), through each client in turn, on the standard asyncio loop (as
`bench/baseline_bot.py` runs) and on uvloop (as `groupbot run` does), with the garbage
collector settled as `groupbot run` has it.

- aiohttp: one `ClientSession`, `session.post(url, data=body, headers=headers)`, the answer
  read whole and its JSON parsed: what the baseline bot does for each member.
- groupbot: `bot.transport.Origin.post` with the request head encoded once, the answer's
  JSON parsed: what `MessagesClient.send` does.

For each: requests a second and this process's CPU time a request (user and system), and
the ratio of the CPU times. It exits 1 if any request was not answered 202.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import aiohttp
import uvloop
from aiohttp import web

from bot.cli import settle_gc
from bot.transport import Origin

IN_FLIGHT = 64
WARM_UP = 500
BODY = json.dumps(
    {
        "to": "14155550101",
        "from": "11234567890",
        "channel": "mms",
        "message_type": "text",
        "text": "pong hello",
        "mms": {"participants": ["14155550102", "14155550103"]},
    }
).encode()
HEADERS = {
    "Authorization": "Bearer " + "x" * 400,  # an RS256 application JWT's length
    "Accept": "application/json",
    "Content-Type": "application/json",
}


def fake_api(port: int) -> None:
    async def messages(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"message_uuid": str(uuid.uuid4())}, status=202)

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def measure(n: int, post: Callable[[], Awaitable[int]]) -> tuple[float, float, int]:
    """Requests a second, CPU µs a request, and how many were not answered 202."""
    refused = 0
    places = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        nonlocal refused
        async with places:
            if await post() != 202:
                refused += 1

    await asyncio.gather(*(one() for _ in range(WARM_UP)))
    refused = 0
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return n / seconds, cpu / n * 1e6, refused


async def with_aiohttp(url: str, n: int) -> tuple[float, float, int]:
    async with aiohttp.ClientSession() as session:

        async def post() -> int:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                json.loads(await response.read())
                return response.status

        return await measure(n, post)


async def with_transport(url: str, n: int) -> tuple[float, float, int]:
    origin = Origin(url, timeout_seconds=10)
    head = origin.head("/v1/messages", HEADERS)

    async def post() -> int:
        answer = await origin.post(head, BODY)
        json.loads(answer.body)
        return answer.status

    try:
        return await measure(n, post)
    finally:
        await origin.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(port: int, api: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and api.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # the fake API's process is starting
    raise RuntimeError("the fake Messages API did not start")


def main(n: int) -> int:
    port = free_port()
    two_cores = (os.cpu_count() or 1) > 1
    pin = ["taskset", "-c", "1"] if two_cores else []
    api = subprocess.Popen([*pin, sys.executable, __file__, "--fake-api", str(port)])  # noqa: S603
    try:
        wait_ready(port, api)
        if two_cores:
            os.sched_setaffinity(0, {0})
        settle_gc()  # as `groupbot run` has it, for both clients
        url = f"http://127.0.0.1:{port}/v1/messages"
        rows = []
        for loop_name, run in (("asyncio", asyncio.run), ("uvloop", uvloop.run)):
            for client, measured in (("aiohttp", with_aiohttp), ("groupbot", with_transport)):
                rows.append((loop_name, client, *run(measured(url, n))))
    finally:
        api.terminate()
        api.wait(10)
    print(f"N={n} requests, {IN_FLIGHT} in flight, the fake API in another process")
    print(f"{'loop':<9}{'client':<10}{'requests/s':>12}{'CPU µs':>9}")
    for loop_name, client, per_second, cpu_us, _ in rows:
        print(f"{loop_name:<9}{client:<10}{per_second:>12.0f}{cpu_us:>9.1f}")
    for loop_name in ("asyncio", "uvloop"):
        base, ours = (row[3] for row in rows if row[0] == loop_name)
        print(f"CPU a request, groupbot / aiohttp, {loop_name}: {ours / base:.2f}")
    problems = [f"{r[0]} {r[1]}: {r[4]} requests not answered 202" for r in rows if r[4]]
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="requests measured per client")
    parser.add_argument("--fake-api", type=int, metavar="PORT", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.fake_api is not None:
        fake_api(options.fake_api)
    else:
        sys.exit(main(max(1, options.n)))
