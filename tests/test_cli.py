"""bot/cli.py: the `groupbot` command, run as a real subprocess (`python -m bot`).

Commands that talk to the fake Messages API run with asyncio subprocesses, so the fake, which
lives in the test's event loop, can answer while the command waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bot.config import parse_config
from bot.numbers import display
from tests.cli_support import (
    environment,
    free_port,
    post_signed,
    vonage,
    wait_healthy,
    write_config,
)
from tests.conftest import (
    BOT_NUMBER,
    ROOT,
    SIGNATURE_SECRET,
    eventually,
    inbound,
    merge,
    shipped_config,
    until,
)
from tests.fakes import FakeMessagesApi
from tests.postgres import TemporaryPostgres

MEMBERS = ["11234567891", "11234567892", "11234567893"]
COMMAND_SECONDS = 60.0


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


async def groupbot(*args: str | Path, cwd: Path) -> Result:
    """Run `python -m bot ARGS` to completion without blocking the event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *map(str, args),
        cwd=cwd,
        env=environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), COMMAND_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"groupbot {' '.join(map(str, args))} did not finish in {COMMAND_SECONDS} s")
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


# -- help, check, route --------------------------------------------------------------------


async def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = await groupbot("--help", cwd=tmp_path)

    assert result.code == 0
    for command in ("run", "check", "route", "send"):
        assert f"    {command} " in result.out


async def test_check_accepts_the_shipped_config(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    result = await groupbot("check", "--config", config, cwd=tmp_path)

    assert result.code == 0, result.err
    routes = len(shipped_config()["routes"])
    assert f"{config}: OK: {routes} routes" in result.out
    assert "provider simulator" in result.out
    assert result.err == ""  # no log lines beside the answer (the intents trained, say)
    assert not (tmp_path / "var" / "groupbot.db").exists()  # the store tried, not made


async def test_check_shows_the_database_url_without_its_password(
    tmp_path: Path, postgres: TemporaryPostgres
) -> None:
    # The test server trusts loopback: the password is only there to be hidden.
    url = postgres.create_database().replace("postgres@", "postgres:s3cret-pw@", 1)
    config = write_config(tmp_path, {"storage": {"url": url}})

    result = await groupbot("check", "--config", config, cwd=tmp_path)

    assert result.code == 0, result.err
    assert f"store {url.replace('s3cret-pw', '***')}" in result.out
    assert "s3cret-pw" not in result.out + result.err


async def test_check_accepts_the_shipped_config_file_itself(tmp_path: Path) -> None:
    result = await groupbot("check", "--config", ROOT / "config.yaml", cwd=tmp_path)

    assert result.code == 0, result.err
    assert f"OK: {len(shipped_config()['routes'])} routes" in result.out


async def test_check_reports_a_shared_keyword_and_a_bad_pattern_with_route_names(
    tmp_path: Path,
) -> None:
    routes = shipped_config()["routes"]
    ticket = [r["name"] for r in routes].index("ticket")
    routes[ticket] = {**routes[ticket], "pattern": r"^ticket\s*(?P<ticket_id>\d+"}
    routes.append(
        {
            "name": "eta-again",
            "keywords": ["ETA"],
            "handler": "handlers.field_service:status",
            "template": "status.txt.j2",
        }
    )
    config = write_config(tmp_path, {"routes": routes})

    result = await groupbot("check", "--config", config, cwd=tmp_path)

    assert result.code == 1
    assert "OK" not in result.out
    problems = [line for line in result.err.splitlines() if line.startswith("  - ")]
    assert len(problems) == 2, result.err
    assert any(
        f"routes[{ticket}] (ticket): pattern:" in p and "missing )" in p for p in problems
    ), result.err
    assert any(
        f"routes[{len(routes) - 1}] (eta-again): keyword 'ETA' is already used" in p
        and "by route 'status'" in p
        for p in problems
    ), result.err


async def test_check_reports_an_unknown_key_and_a_route_problem_at_once(tmp_path: Path) -> None:
    routes = shipped_config()["routes"]
    routes.append({"name": "hours-again", "keywords": ["hours"], "template": "hours.txt.j2"})
    routes[0] = {**routes[0], "keyword": ["typo"]}  # not a key: keywords
    config = write_config(tmp_path, {"routes": routes, "srever": {"port": 8080}})

    checked = await groupbot("check", "--config", config, cwd=tmp_path)
    ran = await groupbot("run", "--config", config, "--port", str(free_port()), cwd=tmp_path)

    problems = [line for line in checked.err.splitlines() if line.startswith("  - ")]
    assert checked.code == 1
    assert len(problems) == 3, checked.err
    assert "srever: unknown key; did you mean server?" in problems[0] + problems[1]
    assert any("routes[0]" in p and "keyword: unknown key" in p for p in problems), checked.err
    assert "keyword 'hours' is already used" in problems[2], checked.err
    # Other commands refuse on the unknown keys alone, as before.
    assert ran.code == 1
    assert "already used" not in ran.err
    assert "srever: unknown key" in ran.err


async def test_check_shows_a_warning_beside_ok(tmp_path: Path) -> None:
    routes = [
        *shipped_config()["routes"],
        {"name": "orders", "keywords": ["cancel"], "template": "hours.txt.j2"},
    ]
    config = write_config(tmp_path, {"routes": routes})

    result = await groupbot("check", "--config", config, cwd=tmp_path)

    assert result.code == 0, result.err
    assert f"{config}: OK: {len(routes)} routes" in result.out
    assert (
        f"warning: {config}: routes[{len(routes) - 1}] (orders): keyword 'cancel' is also the "
        "carrier keyword 'CANCEL' (compliance)"
    ) in result.out


async def test_check_reports_a_config_that_does_not_exist(tmp_path: Path) -> None:
    result = await groupbot("check", "--config", tmp_path / "absent.yaml", cwd=tmp_path)

    assert result.code == 1
    assert "absent.yaml: cannot read" in result.err


async def test_config_may_come_before_the_command(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    before = await groupbot("--config", config, "check", cwd=tmp_path)
    absent = await groupbot("--config", tmp_path / "absent.yaml", "check", cwd=tmp_path)
    # After the command, it wins over one given before.
    both = await groupbot(
        "--config", tmp_path / "no.yaml", "check", "--config", config, cwd=tmp_path
    )

    assert before.code == 0, before.err
    assert f"{config}: OK" in before.out
    assert absent.code == 1
    assert "absent.yaml: cannot read" in absent.err
    assert both.code == 0, both.err


async def test_route_names_the_status_route_and_its_keyword(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    result = await groupbot("route", "--config", config, "what's the ETA?", cwd=tmp_path)

    assert result.code == 0, result.err
    assert "result: route 'status' answers (keyword 'eta')" in result.out
    assert "handler: handlers.field_service:status, template: status.txt.j2" in result.out


async def test_route_says_the_bot_stays_silent_when_nothing_matches(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    result = await groupbot("route", "--config", config, "good morning everyone", cwd=tmp_path)

    assert result.code == 0, result.err
    assert "no keyword, pattern or intent route matches" in result.out
    assert "result: no route answers; the bot stays silent" in result.out
    # The likeliest intents, on one line: what it took the message for, and how sure.
    [scores] = [line for line in result.out.splitlines() if "intent scores" in line]
    assert re.fullmatch(r"intent scores, likeliest first: book \d\.\d\d", scores)


async def test_route_says_a_carrier_keyword_is_answered_before_any_route(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)

    result = await groupbot("route", "--config", config, "Stop", cwd=tmp_path)

    assert result.code == 0, result.err
    assert (
        "result: the carrier keyword STOP (compliance), answered before any route: the "
        "sender is opted out, and alone gets the confirmation"
    ) in result.out


# -- send ----------------------------------------------------------------------------------


MEMBER_LINE = re.compile(r"^  (\+[\d -]+?)\s{2,}(\w+)\s+(\S+)\s+\d+ attempts?\s*(.*)$")


def sent_lines(out: str) -> dict[str, list[str]]:
    """`  +1 123-456-7891  STATE  STATUS  N attempts  DETAIL` lines: [STATE, DETAIL] by digits."""
    lines: dict[str, list[str]] = {}
    for line in out.splitlines():
        if found := MEMBER_LINE.match(line):
            number, state, _, detail = found.groups()
            lines[re.sub(r"\D", "", number)] = [state, detail]
    return lines


async def test_send_delivers_one_message_per_member(
    tmp_path: Path, fake_api: FakeMessagesApi, private_pem: str
) -> None:
    config = write_config(tmp_path, vonage(fake_api, private_pem))
    to = [arg for member in MEMBERS for arg in ("--to", member)]

    result = await groupbot("send", "--config", config, *to, "Hello from Vonage", cwd=tmp_path)

    assert result.code == 0, result.err
    assert len(fake_api.attempts) == 3
    bodies = {str(a.body["to"]): a.body for a in fake_api.accepted}
    assert sorted(bodies) == MEMBERS
    for member, body in bodies.items():
        assert body["from"] == BOT_NUMBER
        assert body["text"] == "Hello from Vonage"
        assert body["mms"] == {"participants": [m for m in MEMBERS if m != member]}
    assert "(3 members)" in result.out
    uuids = {str(a.body["to"]): a.message_uuid for a in fake_api.accepted}
    assert sent_lines(result.out) == {m: ["sent", str(uuids[m])] for m in MEMBERS}


async def test_send_renders_a_template(
    tmp_path: Path, fake_api: FakeMessagesApi, private_pem: str
) -> None:
    config = write_config(tmp_path, vonage(fake_api, private_pem))
    to = [arg for member in MEMBERS for arg in ("--to", member)]

    result = await groupbot(
        "send", "--config", config, *to, "--template", "welcome.txt.j2", cwd=tmp_path
    )

    assert result.code == 0, result.err
    assert len(fake_api.accepted) == 3
    texts = {str(a.body["text"]) for a in fake_api.accepted}
    assert len(texts) == 1
    assert texts.pop().startswith("Hello from groupbot! This thread connects 3 people.")
    assert [line[0] for line in sent_lines(result.out).values()] == ["sent"] * 3


async def test_send_with_an_invalid_number_names_it_and_sends_nothing(
    tmp_path: Path, fake_api: FakeMessagesApi, private_pem: str
) -> None:
    config = write_config(tmp_path, vonage(fake_api, private_pem))

    result = await groupbot(
        "send",
        "--config",
        config,
        "--to",
        MEMBERS[0],
        "--to",
        "not-a-number",
        "--to",
        MEMBERS[2],
        "Hello",
        cwd=tmp_path,
    )

    assert result.code == 2
    assert "--to[1]" in result.err
    assert "not-a-number" in result.err
    assert fake_api.attempts == []


async def test_send_reports_a_refused_member_and_exits_1(
    tmp_path: Path, fake_api: FakeMessagesApi, private_pem: str
) -> None:
    fake_api.respond(402, {"title": "Low balance", "detail": "Top up your account."})
    config = write_config(tmp_path, vonage(fake_api, private_pem))
    to = [arg for member in MEMBERS for arg in ("--to", member)]

    result = await groupbot("send", "--config", config, *to, "Hello", cwd=tmp_path)

    assert result.code == 1
    states = sorted(line[0] for line in sent_lines(result.out).values())
    assert states == ["failed", "sent", "sent"]
    assert "Low balance: Top up your account." in result.out


async def test_send_on_postgresql_does_not_open_a_warm_pool(
    tmp_path: Path, fake_api: FakeMessagesApi, private_pem: str, postgres: TemporaryPostgres
) -> None:
    """A command opens one connection (more only if it needs them); only `groupbot run`
    opens its whole pool at start, each connection asking for the store's array types."""
    url = postgres.create_database()
    postgres.log_statements(url)
    logged = postgres.logged_from_here()
    config = write_config(tmp_path, {**vonage(fake_api, private_pem), "storage": {"url": url}})
    to = [arg for member in MEMBERS for arg in ("--to", member)]

    result = await groupbot("send", "--config", config, *to, "Hello", cwd=tmp_path)

    assert result.code == 0, result.err
    assert len(fake_api.accepted) == 3
    await until(lambda: "INSERT INTO outbound" in logged())  # the command's own statements
    assert "cardinality($1::float8[])" not in logged()  # and no warm pool's


async def test_send_says_who_was_left_out_and_why(
    tmp_path: Path, fake_api: FakeMessagesApi, private_pem: str
) -> None:
    config = write_config(tmp_path, vonage(fake_api, private_pem))
    first = await groupbot("send", "--config", config, "--to", MEMBERS[0], "Hi", cwd=tmp_path)
    assert first.code == 0, first.err  # the store exists now
    with sqlite3.connect(tmp_path / "var" / "groupbot.db") as db:
        db.execute(
            "INSERT INTO opt_outs (number, opted_out_at, source) VALUES (?, 0, 'keyword')",
            (MEMBERS[1],),
        )
    to = [arg for member in [*MEMBERS, BOT_NUMBER] for arg in ("--to", member)]

    result = await groupbot("send", "--config", config, *to, "Hello", cwd=tmp_path)

    assert result.code == 0, result.err
    assert set(sent_lines(result.out)) == {MEMBERS[0], MEMBERS[2]}
    assert f"  {display(MEMBERS[1]):<16} opted out (STOP): not sent" in result.out
    assert f"  {display(BOT_NUMBER):<16} the bot's own number: not a member" in result.out


# -- run -----------------------------------------------------------------------------------


@dataclass
class Server:
    process: asyncio.subprocess.Process
    url: str
    log: Path


@pytest.fixture
async def run_bot(
    tmp_path: Path, fake_api: FakeMessagesApi, private_pem: str
) -> AsyncIterator[Server]:
    """`groupbot run` on a free port, sending to the fake API; killed if a test leaves it."""
    async with running_bot(tmp_path, write_config(tmp_path, vonage(fake_api, private_pem))) as bot:
        yield bot


@contextlib.asynccontextmanager
async def running_bot(tmp_path: Path, config: Path) -> AsyncIterator[Server]:
    """`groupbot run --config config` on a free port; killed on the way out if still up."""
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as output:  # a file, not a pipe nobody reads, for the JSON logs
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            "--config",
            str(config),
            "--port",
            str(port),
            cwd=tmp_path,
            env=environment(),
            stdout=output,
            stderr=output,
        )
    try:
        yield Server(process, f"http://127.0.0.1:{port}", log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_run_answers_a_webhook_and_stops_on_sigterm(
    run_bot: Server, fake_api: FakeMessagesApi
) -> None:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await wait_healthy(run_bot.process, run_bot.url, run_bot.log)
        webhook = inbound(MEMBERS[0], "ticket 42", MEMBERS[1:])
        async with post_signed(session, run_bot.url + "/webhooks/inbound", webhook) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer == {"message_uuid": webhook["message_uuid"], "duplicate": False}
        accepted = await fake_api.wait_for_accepted(3)
        second = inbound(MEMBERS[1], "ticket 43", [MEMBERS[0], MEMBERS[2]])
        async with post_signed(session, run_bot.url + "/webhooks/inbound", second) as response:
            assert response.status == 200
        await fake_api.wait_for_accepted(6)

    assert sorted(str(a.body["to"]) for a in accepted[:3]) == MEMBERS
    for record in accepted[:3]:
        assert str(record.body["text"]).startswith("Ticket #42 is open.")
        assert record.body["mms"] == {
            "participants": [m for m in MEMBERS if m != record.body["to"]]
        }

    run_bot.process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(run_bot.process.wait(), 15)
    except TimeoutError:
        pytest.fail(f"groupbot run did not exit within 15 s of SIGTERM:\n{run_bot.log.read_text()}")
    assert code == 0, run_bot.log.read_text()
    text = run_bot.log.read_text()
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert {"bot_started", "bot_stopping"} <= {event["event"] for event in events}
    # Each message's lines carry the context bound for it; numbers stay masked.
    for name in ("inbound_stored", "inbound_processed"):
        uuids = [event.get("message_uuid") for event in events if event["event"] == name]
        assert uuids == [webhook["message_uuid"], second["message_uuid"]], name
    assert not any(member in text for member in MEMBERS)
    ready = re.search(
        r"^groupbot: (\d+) (routes?), webhooks at http://127\.0\.0\.1:\d+/$", text, re.M
    )
    assert ready is not None, text
    assert ready.group(2) == ("route" if ready.group(1) == "1" else "routes")


async def test_run_refuses_to_start_on_a_config_with_problems(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, {"routes": [{"name": "broken", "pattern": "(", "template": "missing.j2"}]}
    )

    result = await groupbot("run", "--config", config, "--port", str(free_port()), cwd=tmp_path)

    assert result.code == 1
    assert "routes[0] (broken): pattern: missing ), unterminated subpattern" in result.err
    assert "routes[0] (broken): template 'missing.j2' not found" in result.err


async def test_run_logs_json_with_context_and_masked_numbers(
    run_bot: Server, fake_api: FakeMessagesApi
) -> None:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await wait_healthy(run_bot.process, run_bot.url, run_bot.log)
        webhook = inbound(MEMBERS[0], "ticket 42", MEMBERS[1:])
        async with post_signed(session, run_bot.url + "/webhooks/inbound", webhook) as response:
            assert response.status == 200
        await fake_api.wait_for_accepted(3)
    run_bot.process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(run_bot.process.wait(), 15)

    text = run_bot.log.read_text()
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    by_name = {event["event"]: event for event in events}
    routed = by_name["route_matched"]
    assert (routed["message_uuid"], routed["route"]) == (webhook["message_uuid"], "ticket")
    assert by_name["inbound_processed"]["queued"] == 3
    assert by_name["bot_started"]["queued"] == {"inbox": 0, "outbox": 0}  # a new store
    assert by_name["bot_stopped"]["left"] == {"inbox": 0, "outbox": 0}  # all sent
    assert [e["to"] for e in events if e["event"] == "sent"].count("•••••••7891") == 1
    for number in [*MEMBERS, BOT_NUMBER]:
        assert number not in text  # masked everywhere, kept to the last four digits
    assert "Ticket #42" not in text  # message bodies stay out of info logs
    assert "ticket 42" not in text
    for secret in (SIGNATURE_SECRET, "PRIVATE KEY", "Bearer", "eyJ"):  # no secrets, no tokens
        assert secret not in text


async def test_run_logs_what_check_warns_of(tmp_path: Path) -> None:
    routes = [
        *shipped_config()["routes"],
        {"name": "orders", "keywords": ["cancel"], "template": "hours.txt.j2"},
    ]
    config = write_config(tmp_path, {"routes": routes})
    async with running_bot(tmp_path, config) as bot:
        await wait_healthy(bot.process, bot.url, bot.log)
        bot.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(bot.process.wait(), 15)

    lines = bot.log.read_text().splitlines()
    [warned] = [json.loads(line) for line in lines if '"config_warning"' in line]
    assert warned["level"] == "warning"
    assert "keyword 'cancel' is also the carrier keyword 'CANCEL'" in warned["warning"]


async def test_run_on_a_busy_port_says_so_and_exits_1(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        result = await groupbot("run", "--config", config, "--port", str(port), cwd=tmp_path)

    assert result.code == 1
    assert f"groupbot run: cannot listen on 127.0.0.1:{port}" in result.err
    assert "bot_started" not in result.err  # said before anything starts
    assert result.err.count("Address already in use") == 1  # said once, plainly
    assert "--port N" in result.err


async def test_run_refuses_a_port_out_of_range(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    result = await groupbot("run", "--config", config, "--port", "70000", cwd=tmp_path)

    assert result.code == 2
    assert "argument --port: expected a port number from 0 to 65535, got '70000'" in result.err
    assert "Traceback" not in result.err


async def test_status_shows_each_members_message_and_its_delivery(
    run_bot: Server, fake_api: FakeMessagesApi, tmp_path: Path
) -> None:
    webhook = inbound(MEMBERS[0], "ticket 42", MEMBERS[1:])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        await wait_healthy(run_bot.process, run_bot.url, run_bot.log)
        async with post_signed(session, run_bot.url + "/webhooks/inbound", webhook) as response:
            assert response.status == 200
        accepted = await fake_api.wait_for_accepted(3)
        delivered = next(a for a in accepted if a.body["to"] == MEMBERS[1])
        status = {
            "message_uuid": delivered.message_uuid,
            "to": MEMBERS[1],
            "from": BOT_NUMBER,
            "channel": "mms",
            "timestamp": "2025-02-03T12:14:25Z",
            "status": "delivered",
            "client_ref": delivered.body["client_ref"],
        }

        async def all_sent() -> bool:
            result = await groupbot(
                "status", webhook["message_uuid"], "--config", config, cwd=tmp_path
            )
            return [line[0] for line in sent_lines(result.out).values()] == ["sent"] * 3

        config = tmp_path / "config.yaml"
        await eventually(all_sent, within=10)
        async with post_signed(session, run_bot.url + "/webhooks/status", status) as response:
            assert (await response.json())["known"] is True

    result = await groupbot("status", webhook["message_uuid"], "--config", config, cwd=tmp_path)

    assert result.code == 0, result.err
    assert result.out.startswith(f"inbound {webhook['message_uuid']} (group g")
    assert "done, route ticket" in result.out
    [line] = [line for line in result.out.splitlines() if line.startswith("  +1 123-456-7892")]
    assert line.split()[2:5] == ["sent", "delivered", "1"]
    assert delivered.message_uuid is not None
    assert line.endswith(delivered.message_uuid)


async def test_status_of_an_unknown_id_exits_1(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    result = await groupbot("status", "no-such-id", "--config", config, cwd=tmp_path)

    assert result.code == 1
    assert "no inbound message or broadcast 'no-such-id'" in result.err


async def test_chat_lets_one_type_as_any_member_and_shows_what_each_receives(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "chat", "--config", str(config),
        "--member", MEMBERS[0], "--member", MEMBERS[1], "--member", MEMBERS[2],
        cwd=tmp_path, env=environment(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    script = f"ticket 42\n/as {MEMBERS[2]}\non call\nsee you later\n/quit\n".encode()

    out, err = await asyncio.wait_for(process.communicate(script), COMMAND_SECONDS)

    text = out.decode()
    assert process.returncode == 0, err.decode()
    assert "+1 123-456-7892 sees: +1 123-456-7891: ticket 42" in text
    assert "everyone gets: Ticket #42 is open." in text
    assert "+1 123-456-7893 gets: [vcard] On-call engineer" in text  # to the speaker alone
    assert "(the bot stays silent)" in text
    assert not (tmp_path / "var" / "groupbot.db").exists()  # a throwaway store, nothing sent


async def test_chat_shows_what_check_warns_of(tmp_path: Path) -> None:
    routes = [
        *shipped_config()["routes"],
        {"name": "orders", "keywords": ["cancel"], "template": "hours.txt.j2"},
    ]
    config = write_config(tmp_path, {"routes": routes})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "chat", "--config", str(config), "--member", MEMBERS[0],
        cwd=tmp_path, env=environment(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip

    out, err = await asyncio.wait_for(process.communicate(b"/quit\n"), COMMAND_SECONDS)

    assert process.returncode == 0, err.decode()
    assert "warning: " in out.decode()
    assert "keyword 'cancel' is also the carrier keyword 'CANCEL'" in out.decode()


def test_run_serves_on_uvloop_where_it_installs() -> None:
    from bot import cli

    loop = cli._event_loop()
    try:
        expected = "asyncio" if sys.platform == "win32" else "uvloop"  # see pyproject.toml
        assert type(loop).__module__.startswith(expected)
    finally:
        loop.close()


YOUNG_COLLECTIONS = 'python_gc_collections_total{generation="0"}'


def young_collections(metrics: str) -> float:
    [line] = [m for m in metrics.splitlines() if m.startswith(YOUNG_COLLECTIONS)]
    return float(line.rpartition(" ")[2])


async def test_run_collects_garbage_seldom_under_load(
    tmp_path: Path, fake_api: FakeMessagesApi, private_pem: str
) -> None:
    """Once started, `groupbot run` freezes what start-up built and collects the youngest
    generation seldom (cli.settle_gc): 150 messages, 32 at a time, run next to no collection
    (CPython's default threshold: about 30)."""
    count = 150
    unlimited = merge(vonage(fake_api, private_pem), {"provider": {"rate_limit_per_second": None}})
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        running_bot(tmp_path, write_config(tmp_path, unlimited)) as run_bot,
        aiohttp.ClientSession(timeout=timeout) as session,
    ):
        await wait_healthy(run_bot.process, run_bot.url, run_bot.log)
        async with session.get(run_bot.url + "/metrics") as response:
            before = young_collections(await response.text())
        webhooks = [
            inbound(f"1202555{3 * n:04d}", "ticket 42", [f"1202555{3 * n + k:04d}" for k in (1, 2)])
            for n in range(count)
        ]
        gate = asyncio.Semaphore(32)

        async def post(webhook: dict[str, object]) -> int:
            async with gate, post_signed(session, run_bot.url + "/webhooks/inbound", webhook) as r:
                return r.status

        assert set(await asyncio.gather(*map(post, webhooks))) == {200}
        await fake_api.wait_for_accepted(3 * count, within=30)
        async with session.get(run_bot.url + "/metrics") as response:
            after = young_collections(await response.text())
    assert after - before <= 3, f"{after - before:g} young collections for {count} messages"


def test_settle_gc_freezes_what_start_up_built_and_raises_the_young_threshold() -> None:
    script = (
        "import gc\n"
        "from bot.cli import GC_YOUNG_THRESHOLD, settle_gc\n"
        "defaults = gc.get_threshold()\n"
        "settle_gc()\n"
        "assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *defaults[1:]), gc.get_threshold()\n"
        "print(gc.get_freeze_count())\n"
    )
    done = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 10_000  # modules, classes and functions: all kept out of the walk


def test_run_warns_of_a_simulator_that_looks_like_production() -> None:
    from bot import cli

    simulator = parse_config(
        merge(shipped_config(), {"provider": {"kind": "simulator"}}), root=ROOT
    )
    vonage_set = {"VONAGE_APPLICATION_ID": "x", "VONAGE_SIGNATURE_SECRET": "y", "HOME": "/"}

    [vars_set] = cli._simulator_warnings(simulator, "127.0.0.1", vonage_set)
    [exposed] = cli._simulator_warnings(simulator, "192.0.2.10", {})

    assert vars_set.startswith(
        "provider.kind is simulator, though VONAGE_APPLICATION_ID, VONAGE_SIGNATURE_SECRET are "
        "set: nothing is sent to Vonage"
    )
    assert exposed.startswith("provider.kind is simulator and the bot listens on 192.0.2.10")
    assert cli._simulator_warnings(simulator, "localhost", {}) == []
    assert cli._simulator_warnings(simulator, "::1", {}) == []


async def test_a_store_that_cannot_be_opened_is_said_in_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = write_config(
        tmp_path, {"storage": {"url": f"postgresql://bot:hunter2@127.0.0.1:{port}/gb"}}
    )

    result = await groupbot("status", "--config", config, str(uuid.uuid4()), cwd=tmp_path)

    assert result.code == 1
    [line] = result.err.splitlines()  # not a driver's traceback
    assert line.startswith(
        f"groupbot status: cannot open the store postgresql://bot:***@127.0.0.1:{port}/gb: "
        "ConnectionRefusedError"
    )


async def test_check_tries_the_store_and_the_private_key_as_run_would(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = write_config(
        tmp_path,
        {
            "storage": {"url": f"postgresql://bot:hunter2@127.0.0.1:{port}/gb"},
            "provider": {
                "kind": "vonage",
                "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
                "private_key": "keys/none.key",
                "signature_secret": SIGNATURE_SECRET,
            },
        },
    )

    result = await groupbot("check", "--config", config, cwd=tmp_path)

    assert result.code == 1
    assert "OK" not in result.out
    assert f"provider.private_key: cannot read {tmp_path / 'keys' / 'none.key'}" in result.err
    assert (
        f"storage.url: cannot connect to postgresql://bot:***@127.0.0.1:{port}/gb: "
        "ConnectionRefusedError"
    ) in result.err
    assert "hunter2" not in result.err


async def test_check_names_a_store_path_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file where the store's folder should be")
    config = write_config(tmp_path, {"storage": {"url": f"sqlite:///{tmp_path}/var/bot.db"}})

    result = await groupbot("check", "--config", config, cwd=tmp_path)

    assert result.code == 1
    assert f"storage.url: {tmp_path / 'var'} is a file, not a folder for bot.db" in result.err


async def test_a_store_password_that_misleads_the_driver_is_said_not_quoted(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"postgresql://bot:pa#ss@127.0.0.1:{port}/gb"  # '#' unencoded: the driver misreads
    config = write_config(tmp_path, {"storage": {"url": url}})

    result = await groupbot("check", "--config", config, cwd=tmp_path)

    assert result.code == 1
    assert (
        f"storage.url: cannot connect to postgresql://bot:***@127.0.0.1:{port}/gb: its password "
        "holds # ? / or @ as they are: percent-encode them (%23 %3F %2F %40)"
    ) in result.err
    assert "pa#ss" not in result.err
    assert "'pa'" not in result.err  # the driver's own message quoted pieces of it
