"""End-to-end throughput: signed webhooks in, one message per member out, against a baseline.

Starts, each as its own process on loopback: a fake Messages API (this file with
--fake-api PORT; it answers 202 at once and notes when each message arrived), then in turn the
baseline (bench/baseline_bot.py: hand-written aiohttp, no framework, no store, no signature
check) and groupbot (`python -m bot run`, Vonage provider, signatures verified, SQLite store,
no rate limit, one template route answering "ping"). This process posts N signed webhooks
("ping <message_uuid>" from a 3-member group, a different group each) at concurrency C (or,
with --rate R, R a second on a fixed schedule) and waits until the fake API has seen 3 * N
messages or the deadline passes. It prints inbound webhooks per second (N over the time from
the first webhook sent to the last member message received), the webhook answer latency, the
webhook-to-last-member-message latency, the bot process's peak RSS, and its CPU time (user
and system, all threads) per webhook: on a shared, noisy machine the steadiest figure to
compare two versions by (with --postgres, that of the two bot processes: the server's own is
not counted). With two cores or more, the bot is pinned to core 0 and this process and the
fake API to core 1.

    .venv/bin/python bench/e2e.py [--n 3000] [--c 32 | --rate R] [--postgres] [--python PATH]

C in flight drives each bot as fast as it goes: its answer then takes C / its rate (Little's
law), so the latencies are those of a saturated bot. --rate R measures them at a load below
that, as Vonage would post a steady stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import math
import os
import re
import secrets
import socket
import sys
import tempfile
import time
import uuid
from asyncio.subprocess import Process
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import yaml
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.postgres import TemporaryPostgres

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
OPEN_LOOP_CONNECTIONS = 1024  # with --rate: webhooks in flight at most, as many as are due
BOT = "11234567890"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
START_SECONDS = 30.0  # most a process may take to answer its readiness check


# --- the fake Messages API (its own process) -------------------------------------------------

Record = tuple[str, str, list[str], float]  # message_uuid found in the text, to, participants, t


def fake_api_app() -> web.Application:
    records: list[Record] = []
    refused = [0]  # bodies whose participants are not the other two members

    async def messages(request: web.Request) -> web.Response:
        arrived = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process
        body = await request.json()
        to = str(body.get("to", ""))
        participants = [str(p) for p in (body.get("mms") or {}).get("participants", [])]
        if len(set(participants)) != 2 or to in participants or BOT in participants:
            refused[0] += 1
        found = UUID_RE.search(str(body.get("text", "")))
        records.append((found.group(0) if found else "", to, participants, arrived))
        return web.json_response({"message_uuid": str(uuid.uuid4())}, status=202)

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"count": len(records)})

    async def dump(request: web.Request) -> web.Response:
        return web.json_response({"records": records, "refused": refused[0]})

    async def reset(request: web.Request) -> web.Response:
        records.clear()
        refused[0] = 0
        gc.collect()  # what the last run left in cycles: this process never collects alone
        return web.json_response({"count": 0})

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/count", count)
    app.router.add_get("/records", dump)
    app.router.add_post("/reset", reset)
    return app


# --- the driver ---------------------------------------------------------------------------


@dataclass
class Result:
    system: str
    webhooks: int
    answered_ok: int
    delivered: int  # member messages of this run's webhooks that reached the fake API
    complete: int  # webhooks whose 3 member messages all arrived
    wrong_members: int
    inbound_per_second: float
    answer_ms: list[float]
    last_member_ms: list[float]
    peak_mb: float
    cpu_us: float  # the bot processes' CPU time (user + system) per webhook, after readiness


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def member(i: int) -> str:
    return f"1{202 + i // 10000}555{i % 10000:04d}"  # 1202555XXXX, then 1203555XXXX, ...


def group_of(n: int) -> list[str]:
    return [member(3 * n + k) for k in range(3)]


def webhooks(n: int, secret: str) -> list[tuple[str, bytes, dict[str, str]]]:
    """N signed webhooks: (message_uuid, body, headers), signed as Vonage signs them."""
    made = []
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for g in range(n):
        members = group_of(g)
        message_uuid = str(uuid.uuid4())
        body = json.dumps(
            {
                "channel": "mms",
                "message_uuid": message_uuid,
                "to": BOT,
                "from": members[0],
                "timestamp": stamp,
                "message_type": "text",
                "text": f"ping {message_uuid}",
                "mms": {"participants": members[1:]},
            }
        ).encode()
        claims = {
            "iat": int(time.time()),
            "jti": str(uuid.uuid4()),
            "iss": "Vonage",
            "payload_hash": hashlib.sha256(body).hexdigest(),
        }
        token = jwt.encode(claims, secret, algorithm="HS256")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        made.append((message_uuid, body, headers))
    return made


async def wait_ready(session: aiohttp.ClientSession, url: str, process: Process) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url}: not ready after {START_SECONDS:g} s")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and all its threads so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def stop(process: Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await asyncio.wait_for(process.wait(), 5)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Load:
    """How webhooks are posted: `concurrency` in flight (closed loop), or, with `rate`, that
    many a second whatever the answers (open loop)."""

    concurrency: int
    rate: float | None = None

    def posting_seconds(self, n: int) -> float:
        """How long posting N webhooks takes at the least: in open loop, their schedule."""
        return 0.0 if self.rate is None else (n - 1) / self.rate

    def __str__(self) -> str:
        if self.rate is None:
            return f"concurrency {self.concurrency}"
        return f"{self.rate:g} a second (open loop)"


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection in the driver while it drives: a full collection of its
    thousands of prepared webhooks stops it for milliseconds, late to post and to note
    answers, and that pause would be counted as the bot's latency."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def drive(
    urls: list[str], requests: list[tuple[str, bytes, dict[str, str]]], load: Load
) -> tuple[list[float], list[float], list[int]]:
    """Post every webhook, round-robin over `urls` (as a load balancer would): send times,
    answer times, statuses. Closed loop by default, `load.concurrency` at a time, each posted as
    one is answered; with `load.rate`, open loop: webhook i is due at start + i / rate whatever
    the answers, as Vonage posts them, and its send time is when it was due, so a driver
    held up by a slow bot counts the wait as the bot's (no coordinated omission)."""
    n, rate = len(requests), load.rate
    sent, answered, statuses = [0.0] * n, [0.0] * n, [0] * n
    connections = load.concurrency if rate is None else OPEN_LOOP_CONNECTIONS
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(i: int) -> None:
            _, body, headers = requests[i]
            try:
                async with session.post(urls[i % len(urls)], data=body, headers=headers) as answer:
                    await answer.read()
                    statuses[i] = answer.status
            except (aiohttp.ClientError, TimeoutError):
                statuses[i] = -1
            answered[i] = time.monotonic()

        if rate is None:
            pending = iter(range(n))

            async def worker() -> None:
                for i in pending:
                    sent[i] = time.monotonic()
                    await post(i)

            await asyncio.gather(*(worker() for _ in range(load.concurrency)))
        else:
            # One loop posts each webhook when it is due, so that a run of any N starts on
            # time (a task for each, made up front, would be late by the time it takes to
            # make them all).
            posting: list[asyncio.Task[None]] = []
            start = time.monotonic()
            for i in range(n):
                sent[i] = start + i / rate
                await asyncio.sleep(sent[i] - time.monotonic())
                posting.append(asyncio.create_task(post(i)))
            await asyncio.gather(*posting)
    return sent, answered, statuses


async def run_one(
    system: str,
    commands: list[tuple[list[str], int]],
    api_url: str,
    requests: list[tuple[str, bytes, dict[str, str]]],
    load: Load,
    deadline_seconds: float,
    log: Path,
) -> Result:
    """Start each (command, port) as a process, drive the webhooks over all of them, and
    measure; the peak memory reported is the largest process's."""
    n = len(requests)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as control:
        async with control.post(api_url + "/reset") as response:
            await response.read()
        processes: list[Process] = []
        try:
            with log.open("wb") as stderr:
                for command, _ in commands:
                    processes.append(
                        # From the project's root: `-m bot` is this tree's code, whichever
                        # Python (--python) runs it.
                        await asyncio.create_subprocess_exec(
                            *command, stdout=asyncio.subprocess.DEVNULL, stderr=stderr, cwd=ROOT
                        )
                    )
            for process, (_, port) in zip(processes, commands, strict=True):
                await wait_ready(control, f"http://127.0.0.1:{port}/readyz", process)
            cpu_at_start = sum(cpu_seconds(process.pid) for process in processes)
            deadline_seconds += load.posting_seconds(n)
            deadline = time.monotonic() + deadline_seconds
            urls = [f"http://127.0.0.1:{port}/webhooks/inbound" for _, port in commands]
            with gc_paused():
                sent, answered, statuses = await asyncio.wait_for(
                    drive(urls, requests, load), deadline_seconds
                )
            while time.monotonic() < deadline:
                async with control.get(api_url + "/count") as response:
                    if (await response.json())["count"] >= 3 * n:
                        break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # any extra message (there should be none) shows up too
            async with control.get(api_url + "/records") as response:
                dump: dict[str, Any] = await response.json()
            peak = max(peak_mb(process.pid) for process in processes)
            cpu = sum(cpu_seconds(process.pid) for process in processes) - cpu_at_start
        finally:
            for process in processes:
                await stop(process)
    index = {message_uuid: i for i, (message_uuid, _, _) in enumerate(requests)}
    arrivals: dict[int, list[float]] = {}
    wrong = 0
    for message_uuid, to, participants, arrived in dump["records"]:
        i = index.get(message_uuid)
        if i is None:
            wrong += 1
            continue
        members = set(group_of(i))
        if to not in members or set(participants) != members - {to}:
            wrong += 1
        arrivals.setdefault(i, []).append(arrived)
    complete = {i: max(times) for i, times in arrivals.items() if len(times) >= 3}
    delivered = sum(len(times) for times in arrivals.values())
    last = max((t for times in arrivals.values() for t in times), default=float("nan"))
    ok = [i for i in range(n) if statuses[i] == 200]
    return Result(
        system=system,
        webhooks=n,
        answered_ok=len(ok),
        delivered=delivered,
        complete=len(complete),
        wrong_members=wrong + int(dump["refused"]),
        inbound_per_second=len(complete) / (last - min(sent)) if complete else 0.0,
        answer_ms=[(answered[i] - sent[i]) * 1000 for i in ok],
        last_member_ms=[(t - sent[i]) * 1000 for i, t in complete.items()],
        peak_mb=peak,
        cpu_us=cpu / n * 1e6,
    )


def write_config(folder: Path, api_url: str, secret: str, storage: str | None = None) -> Path:
    if not (folder / "key.pem").exists():  # one key and template for every config
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (folder / "key.pem").write_bytes(pem)
        (folder / "pong.txt.j2").write_text("pong {{ text }}")
    config = {
        "bot": {"number": BOT},
        "provider": {
            "kind": "vonage",
            "api_url": api_url,
            "application_id": "bench",
            "private_key": str(folder / "key.pem"),
            "signature_secret": secret,
            "verify_signatures": True,
            "rate_limit_per_second": None,
        },
        "server": {"host": "127.0.0.1"},
        "storage": {"url": storage or f"sqlite:///{folder / 'bench.db'}"},
        "log": {"level": "warning", "format": "json"},
        "plugins": [],
        "templates": str(folder),
        "routes": [{"name": "ping", "keywords": ["ping"], "template": "pong.txt.j2"}],
    }
    path = folder / ("config-pg.yaml" if storage else "config.yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def show(results: list[Result], load: Load) -> int:
    """Print the table; return how many systems fell short (a webhook refused, a member
    message missing or wrong)."""
    print(
        f"{'system':<10}{'done':>12}{'inbound/s':>11}{'answer p50':>12}{'p99 ms':>8}"
        f"{'last member p50':>17}{'p99 ms':>8}{'peak MB':>9}{'CPU µs/msg':>12}"
    )
    for r in results:
        done = f"{r.complete}/{r.webhooks}"
        print(
            f"{r.system:<10}{done:>12}{r.inbound_per_second:>11.1f}"
            f"{percentile(r.answer_ms, 0.5):>12.1f}{percentile(r.answer_ms, 0.99):>8.1f}"
            f"{percentile(r.last_member_ms, 0.5):>17.1f}{percentile(r.last_member_ms, 0.99):>8.1f}"
            f"{r.peak_mb:>9.1f}{r.cpu_us:>12.0f}"
        )
    by_name = {r.system: r for r in results}
    base, ours = by_name.get("baseline"), by_name.get("groupbot")
    if base and ours and base.inbound_per_second and load.rate is None:  # open loop: both ~R
        ratio = ours.inbound_per_second / base.inbound_per_second
        print(f"throughput groupbot / baseline: {ratio:.3f}")
    short = 0
    for r in results:
        problems = []
        if r.answered_ok != r.webhooks:
            problems.append(f"{r.webhooks - r.answered_ok} webhooks not answered 200")
        if r.delivered != 3 * r.webhooks:
            problems.append(f"{r.delivered} member messages, expected {3 * r.webhooks}")
        if r.wrong_members:
            problems.append(f"{r.wrong_members} messages to the wrong members or unknown")
        if problems:
            print(f"{r.system}: " + "; ".join(problems))
            short += 1
    return short


async def main(n: int, load: Load, deadline: float, postgres: bool, python: str) -> int:
    """Run every system; return how many failed or fell short (0: all measured)."""
    cores = os.cpu_count() or 1
    pin_bot: list[str] = []
    pin_rest: list[str] = []
    if cores > 1:
        pin_bot, pin_rest = ["taskset", "-c", "0"], ["taskset", "-c", "1"]
        os.sched_setaffinity(0, {1})
    secret = secrets.token_hex(32)  # 64 characters
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    server = TemporaryPostgres().start(durable=True) if postgres else None
    with tempfile.TemporaryDirectory(prefix="groupbot-e2e-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, api_url, secret)
        api = await asyncio.create_subprocess_exec(
            *pin_rest, PYTHON, __file__, "--fake-api", str(api_port),
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        systems: list[tuple[str, list[tuple[list[str], int]]]] = []
        port = free_port()
        script = str(ROOT / "bench" / "baseline_bot.py")
        systems.append(("baseline", [([script, "--port", str(port), "--api-url", api_url], port)]))
        port = free_port()
        run = ["-m", "bot", "run", "--config", str(config), "--port", str(port)]
        systems.append(("groupbot", [(run, port)]))
        if server is not None:
            pg_config = write_config(folder, api_url, secret, storage=server.create_database())
            pair = [free_port(), free_port()]
            runs = [
                ["-m", "bot", "run", "--config", str(pg_config), "--port", str(p)] for p in pair
            ]
            systems.append(("pg x2", list(zip(runs, pair, strict=True))))
        results = []
        try:
            async with aiohttp.ClientSession() as control:
                await wait_ready(control, api_url + "/count", api)
            for system, processes in systems:
                log = folder / f"{system.replace(' ', '-')}.log"
                commands = [([*pin_bot, python, *args], p) for args, p in processes]
                try:
                    result = await run_one(
                        system, commands, api_url, webhooks(n, secret), load, deadline, log
                    )
                except (RuntimeError, TimeoutError, OSError) as exc:  # OSError: no such Python
                    tail = log.read_text(errors="replace")[-2000:]
                    print(f"{system}: failed: {exc!r}\n{tail}", file=sys.stderr)
                    continue
                results.append(result)
        finally:
            await stop(api)
            if server is not None:
                server.remove()
    print(f"N={n} webhooks, {load}, {cores} cores"
          + (" (bots on core 0, driver and fake API on core 1)" if cores > 1 else ""))  # fmt: skip
    return show(results, load) + len(systems) - len(results)


def at_least_one(text: str) -> int:
    """An option's whole number of 1 or more (argparse names the option when it is not)."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {number}")
    return number


def above_zero(text: str) -> float:
    """An option's finite number above 0."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (number > 0 and math.isfinite(number)):
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text}")
    return number


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=at_least_one, default=3000, help="webhooks to send (default 3000)"
    )
    load_options = parser.add_mutually_exclusive_group()
    load_options.add_argument(
        "--c", type=at_least_one, default=32, help="webhooks in flight (default 32)"
    )
    load_options.add_argument(
        "--rate", type=above_zero, metavar="R",
        help="open loop: R webhooks a second, on schedule, instead of C in flight",
    )  # fmt: skip
    parser.add_argument(
        "--deadline", type=above_zero, default=120.0, metavar="SECONDS",
        help="for each system (default 120), besides the time a --rate schedule takes",
    )  # fmt: skip
    parser.add_argument(
        "--postgres", action="store_true",
        help="also run two groupbot processes on one PostgreSQL (a throwaway server)",
    )  # fmt: skip
    parser.add_argument(
        "--python", default=PYTHON, metavar="PATH",
        help="the Python both bots run on, this tree's code from its root (default: the "
        "project's .venv, which holds the development tools too); a virtualenv with groupbot's "
        "runtime dependencies alone measures peak memory as deployed",
    )  # fmt: skip
    parser.add_argument("--fake-api", type=int, metavar="PORT", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.fake_api is not None:
        # The fake API collects only at /reset (above): a collection during a run, walking
        # every record it has kept, would note arrivals late and make the bots look slower.
        gc.disable()
        web.run_app(fake_api_app(), host="127.0.0.1", port=options.fake_api, print=None,
                    access_log=None)  # fmt: skip
    else:
        load = Load(options.c, options.rate)
        failed = asyncio.run(
            main(options.n, load, options.deadline, options.postgres, options.python)
        )
        sys.exit(1 if failed else 0)  # a system failed or fell short: nothing to compare
