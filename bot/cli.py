"""The `groupbot` command: run, check, route, send, status, chat, new handler, intents eval."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import socket
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import structlog
import yaml
from pydantic import ValidationError

from bot import listen
from bot.compliance import Action
from bot.compose import compose
from bot.config import (
    DEFAULT_CONFIG,
    Config,
    IntentSettings,
    default_path,
    load_config,
    load_yaml,
)
from bot.core import Bot, build_bot, intent_examples
from bot.exceptions import ConfigError, InvalidInput, StoreUnavailable
from bot.groups import Group
from bot.log import configure, log_warnings
from bot.models import invalid_input, normalize_all
from bot.numbers import display
from bot.plugins import load_plugins
from bot.routing import Explanation
from bot.runtime import running
from bot.store import OutboxRecord, open_store, store_problem
from bot.wording import counted

log = structlog.get_logger("groupbot")

# CPython collects its youngest generation of container objects once allocations outrun
# deallocations by this much (its default is 700). A busy bot has thousands of short-lived
# ones in flight (requests, futures, models), nearly all freed by reference counting; at 700
# it ran a collection about every 6 messages, which with the older generations' took about
# a tenth of its CPU time (bench/RESULTS.md).
GC_YOUNG_THRESHOLD = 10_000


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _command(parser, args)
    except KeyboardInterrupt:
        return 130  # Ctrl-C: the usual exit status, no traceback


def _command_here(name: str) -> str:
    """How to run `name` from this environment, as the user would type it: its name alone
    when that is what the shell finds, else its path (`.venv/bin/pytest`)."""
    beside = Path(sys.executable).parent / name
    if shutil.which(name) == str(beside):
        return name
    with contextlib.suppress(ValueError):
        return str(beside.relative_to(Path.cwd()))
    return str(beside)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return port


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        args.config = args.config or default_path()
        config = load_config(args.config)
        # A command's own output is what it prints (the chat's, the conversation): at the
        # default level, only warnings and errors beside it. `run` logs as configured, and
        # so does every command at another level (debug to see more, error to see less).
        quiet = args.command != "run" and config.log.level == "info"
        settings = config.log.model_copy(update={"level": "warning"}) if quiet else config.log
        configure(settings, final=args.command == "run")
        if args.command == "run":
            log_warnings()
        if args.command == "intents":
            return _intents_eval(config, args)
        if args.command == "chat":
            from bot.chat import chat_in_terminal

            return asyncio.run(chat_in_terminal(args.config, args.member))
        if args.command == "new":
            from bot.scaffold import new_handler

            written = new_handler(config, args.config, args.name)
            for path in written.paths:
                print(f"wrote {path}")
            given = "" if args.config == Path(DEFAULT_CONFIG) else f" --config {args.config}"
            print(
                f"try it: {_command_here('groupbot')} route{given} '{written.keyword}'; "
                f"test it: {_command_here('pytest')} tests/test_{args.name}.py"
            )
            return 0
        if args.command == "run":
            return _run(config, host=args.host, port=args.port)
        if args.command == "check":
            return _check(config)
        bot = build_bot(config)
        if args.command == "route":
            print(format_explanation(bot, bot.router.explain(args.text)))
            return 0
        if args.command == "send":
            return asyncio.run(_send(bot, args))
        if args.command == "status":
            return asyncio.run(_status(bot, args.id))
        if args.command == "usage":
            return asyncio.run(_usage(bot, args.since))
    except ConfigError as exc:
        problems = exc.problems
        if args.command == "check" and isinstance(exc.without_unknown_keys, Config):
            problems = problems + _building_problems(exc.without_unknown_keys)  # all at once
        print(f"groupbot {args.command}: the configuration has problems:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except InvalidInput as exc:
        print(f"groupbot {args.command}: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"groupbot {args.command}: {exc}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command!r}")
    return 2  # pragma: no cover - parser.error exits


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groupbot", description="A chatbot for US group MMS conversations (Vonage)."
    )
    config_help = "config file (default: $GROUPBOT_CONFIG, else ./config.yaml)"
    # Before the command or after it: `groupbot --config x.yaml check` as `check --config`.
    parser.add_argument("--config", type=Path, default=None, help=config_help)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str,
        help: str,
        under: argparse._SubParsersAction[argparse.ArgumentParser] = commands,
    ) -> argparse.ArgumentParser:
        sub = under.add_parser(name, help=help, description=help)
        # SUPPRESS: when not given here, the one given before the command (if any) stays.
        sub.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
        return sub

    run = command("run", "start the bot: webhooks, workers, and the web chat in simulator mode")
    run.add_argument("--host", help="address to listen on (default: server.host)")
    run.add_argument("--port", type=_port, help="port to listen on (default: server.port)")
    command("check", "check config.yaml: routes, plugins, handlers, templates")
    route = command("route", "show which route would answer a message, and why")
    route.add_argument("text", help="the message text")
    send = command("send", "start a group conversation: one message per member")
    send.add_argument(
        "--to",
        action="append",
        required=True,
        metavar="NUMBER",
        help="a member's number (repeat for each member)",
    )
    send.add_argument("text", nargs="?", help="the text to send")
    send.add_argument("--template", help="render this template instead of sending TEXT")
    send.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template variable (repeatable)",
    )
    send.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for every member's message to be sent (default 60)",
    )
    intents = commands.add_parser("intents", help="measure the intents' examples")
    intents_commands = intents.add_subparsers(dest="intents_command", required=True)
    evaluate = command(
        "eval", "train on the intents, classify labelled lines, report accuracy", intents_commands
    )
    evaluate.add_argument(
        "--data",
        type=Path,
        required=True,
        metavar="FILE.jsonl",
        help='lines of {"text": ..., "intent": NAME or null}',
    )
    evaluate.add_argument(
        "--intents",
        type=Path,
        metavar="FILE.yaml",
        help="take the intents from this file instead of the config",
    )
    evaluate.add_argument(
        "--threshold",
        type=float,
        help="confidence below which a message is out of scope "
        "(default: the config's intent_threshold)",
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    chat = command("chat", "talk to the bot as the members of a group, in this terminal")
    chat.add_argument(
        "--member",
        action="append",
        required=True,
        metavar="NUMBER",
        help="a member's number (repeat for each member; the first speaks first)",
    )
    new = commands.add_parser("new", help="start a handler from working code")
    new_commands = new.add_subparsers(dest="new_command", required=True)
    new_handler_command = command(
        "handler", "write a handler, its template, its route and a passing test", new_commands
    )
    new_handler_command.add_argument("name", help="the handler's name (lower case)")
    usage = command("usage", "messages sent and their price, per group and day")
    usage.add_argument(
        "--since",
        type=_day,
        metavar="YYYY-MM-DD",
        help="from this day on (UTC; default: the first of this month)",
    )
    status = command("status", "show where each member's message of a conversation stands")
    status.add_argument("id", help="an inbound message_uuid, or a broadcast id from send")
    return parser


def _run(config: Config, *, host: str | None, port: int | None) -> int:
    from aiohttp import web

    from bot.app import create_app

    host = host or config.server.host
    port = port if port is not None else config.server.port
    try:
        # The port first: a busy one is said at once, before anything starts (or is logged
        # as started) only to stop again.
        sockets = listen.bind(host, port)
    except OSError as exc:
        hint = (
            "check --host (or server.host in the config)"
            if isinstance(exc, socket.gaierror)
            else "choose another with --port N (make run PORT=N, or server.port in the config)"
        )
        print(
            f"groupbot run: cannot listen on {host}:{port}: {exc.strerror or exc}; {hint}",
            file=sys.stderr,
        )
        return 1
    with contextlib.ExitStack() as bound:
        for listening in sockets:
            bound.enter_context(listening)
        bot = build_bot(config)
        for warning in [*bot.warnings, *_simulator_warnings(config, host, os.environ)]:
            log.warning("config_warning", warning=warning)
        where = listen.url(host, sockets[0])
        mode = "web chat at " if config.provider.kind == "simulator" else "webhooks at "

        def ready(_: str) -> None:  # called by aiohttp once it serves
            routes = counted(len(bot.router.routes), "route")
            print(f"groupbot: {routes}, {mode}{where}", file=sys.stderr, flush=True)

        app = create_app(bot)
        app.on_startup.append(_settle_gc)  # after the bot's own start-up (its cleanup context)
        web.run_app(app, sock=sockets, print=ready, shutdown_timeout=15, loop=_event_loop())
    return 0


def _simulator_warnings(config: Config, host: str, environ: Mapping[str, str]) -> list[str]:
    """What makes a bot on the simulator look like one in production, or open to anyone."""
    if config.provider.kind != "simulator":
        return []
    said = []
    if vonage := sorted(name for name in environ if name.startswith("VONAGE_")):
        said.append(
            f"provider.kind is simulator, though {', '.join(vonage)} "
            f"{'is' if len(vonage) == 1 else 'are'} set: nothing is sent to Vonage, answers go "
            "to simulated phones (set provider.kind: vonage; the shipped config reads "
            "GROUPBOT_PROVIDER)"
        )
    if not listen.is_loopback(host):
        said.append(
            f"provider.kind is simulator and the bot listens on {host}: the web chat and "
            "/simulator/*, which show members' numbers and messages and take messages from "
            "anyone, are open to whoever reaches it"
        )
    return said


async def _settle_gc(_: object) -> None:
    settle_gc()


def settle_gc() -> None:
    """Garbage collection for a long-running bot, once it has started: what start-up built
    (modules, routes, templates, models) lives as long as the process, so full collections
    stop walking it (`gc.freeze`: about 30 ms each down to about 4), and the youngest
    generation is collected less often (GC_YOUNG_THRESHOLD)."""
    gc.collect()  # nothing that is already garbage is kept for good
    # What start-up built and is dropped later (a pooled connection replaced, say) is never
    # collected if it is in a cycle: a leak of that once, against every full collection
    # walking all of it for as long as the process runs.
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it installs (not on Windows): the same asyncio, its loop and transports
    written in C over libuv, which serve a busy bot about 15 % more messages per second."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _building_problems(config: Config) -> list[str]:
    """What building the bot finds wrong with `config` (routes, plugins, templates)."""
    try:
        build_bot(config)
    except ConfigError as exc:
        return exc.problems
    return []


def _check(config: Config) -> int:
    """Everything `run` would refuse, at once: the config built, and the store reached."""
    try:
        bot, problems = build_bot(config), []
    except ConfigError as exc:
        bot, problems = None, exc.problems
    if problem := asyncio.run(store_problem(config.storage.url, root=config.root)):
        problems.append(f"{config.source}: {problem}")
    if bot is None or problems:
        raise ConfigError(problems)
    print(
        f"{config.source}: OK: {counted(len(bot.router.routes), 'route')}, "
        f"{counted(len(bot.registry.by_name), 'handler')} from "
        f"{counted(len(config.plugins), 'plugin')}, "
        f"provider {config.provider.kind}, store {config.storage.shown_url}"
    )
    for warning in bot.warnings:
        print(f"warning: {warning}")
    return 0


KEYWORD_OUTCOMES: dict[Action, str] = {
    "stop": "the sender is opted out, and alone gets the confirmation",
    "start": "the sender is opted back in, and alone gets the confirmation",
    "help": "the sender alone gets who is writing and how to stop",
}


def format_explanation(bot: Bot, explanation: Explanation) -> str:
    lines = [f"message: {explanation.text!r}"]
    if explanation.candidates:
        lines.append("candidates, in order of precedence:")
        for match in explanation.candidates:
            mark = "  <- answers" if match == explanation.winner else ""
            lines.append(
                f"  routes[{match.route.index}] {match.route.name}: {match.describe()}{mark}"
            )
    else:
        lines.append("no keyword, pattern or intent route matches")
    if scores := explanation.intent_scores[:3]:
        shown = ", ".join(f"{intent} {score:.2f}" for intent, score in scores)
        lines.append(f"intent scores, likeliest first: {shown}")
    winner = explanation.winner
    if (action := bot.dispatcher.keywords.action(explanation.text)) is not None:
        lines.append(
            f"result: the carrier keyword {action.upper()} (compliance), answered before any "
            f"route: {KEYWORD_OUTCOMES[action]}"
        )
    elif winner is None:
        lines.append("result: no route answers; the bot stays silent")
    else:
        route = winner.route
        lines.append(
            f"result: route {route.name!r} answers ({winner.describe()}); "
            f"handler: {route.handler or '-'}, template: {route.template or '-'}"
        )
    return "\n".join(lines)


async def _send(bot: Bot, args: argparse.Namespace) -> int:
    config = bot.config
    numbers = normalize_all(args.to, "--to")
    group = Group.for_broadcast(
        numbers,
        bot_number=config.bot.number,
        max_size=config.bot.max_group_size,
        field="--to",
    )
    variables = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvalidInput("--var", f"expected NAME=VALUE, got {item!r}")
        variables[name] = value
    reply = compose(
        bot.templates,
        bot_number=config.bot.number,
        members=group.members,
        text=args.text,
        template=args.template,
        variables=variables,
    )
    # Only this broadcast is sent from here; a bot running on the same store keeps the rest.
    async with running(bot, workers=False) as runtime:
        broadcast_id = await runtime.send(reply, group)
        records = await runtime.deliver(broadcast_id, within_seconds=args.wait)
    count = counted(len(records), "member")
    print(f"broadcast {broadcast_id} to group {group.key} ({count})")
    for record in records:
        print("  " + format_record(record))
    queued = {record.recipient for record in records}
    for member in group.members:
        if member not in queued:  # the broadcast skips only those who sent STOP: said so
            print(f"  {display(member):<16} opted out (STOP): not sent")
    if config.bot.number in numbers:
        print(f"  {display(config.bot.number):<16} the bot's own number: not a member")
    if pending := [record for record in records if record.state in ("pending", "sending")]:
        print(
            f"{counted(len(pending), 'message')} not sent within --wait {args.wait:g} s; "
            "still queued, a running bot sends them (groupbot status ID follows them)"
        )
    return 0 if all(record.state == "sent" for record in records) else 1


async def _status(bot: Bot, message_id: str) -> int:
    store = await open_store(
        bot.config.storage.url, root=bot.config.root, pool_size=bot.config.storage.pool_size
    )
    try:
        inbound = await store.inbound(message_id)
        records = await store.broadcast(message_id)
    finally:
        await store.close()
    if inbound is None and not records:
        print(f"groupbot status: no inbound message or broadcast {message_id!r}", file=sys.stderr)
        return 1
    if inbound is not None:
        route = f", route {inbound.route}" if inbound.route else ", no route matched"
        print(f"inbound {message_id} (group {inbound.group_key}): {inbound.state}{route}")
        if inbound.error:
            print(f"  error: {inbound.error}")
    else:
        print(f"broadcast {message_id}")
    for record in records:
        print("  " + format_record(record))
    return 0


def format_record(record: OutboxRecord) -> str:
    """One member's line: number, queue state, delivery status, and the id or the reason."""
    status = record.status or "-"
    detail = record.error if record.state == "failed" else record.message_uuid or ""
    if record.status_error:
        detail = f"{detail} ({record.status_error})"
    attempts = counted(record.attempts, "attempt")
    line = f"{display(record.recipient):<16} {record.state:<8} {status:<14} {attempts:<11}"
    return f"{line} {detail}".rstrip()


def _intents_eval(config: Config, args: argparse.Namespace) -> int:
    per_intent: dict[str, float | None] | None = None
    if args.intents is not None:
        intents = read_intents(args.intents)
    else:
        # The config's intents, judged as its routes judge them (their own thresholds).
        registry, problems = load_plugins(config.plugins, root=config.root)
        if problems:
            raise ConfigError(problems)
        intents = intent_examples(config, registry)
        per_intent = {r.intent: r.threshold for r in config.routes if r.intent is not None}
    if not intents:
        raise InvalidInput("intents", "no intents to evaluate: none in the config or the file")
    threshold = args.threshold if args.threshold is not None else config.intent_threshold
    from bot.evaluation import evaluate, read_labelled  # scikit-learn: only when evaluating

    data = read_labelled(args.data, known=intents)
    report = evaluate(intents, data, threshold=threshold, per_intent=per_intent)
    print(report.as_json() if args.json else report.as_text())
    return 0


def read_intents(path: Path) -> dict[str, list[str]]:
    """An `intents:` section from a YAML file of its own (like the config's)."""
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput("--intents", f"cannot read {path}: {exc}") from None
    section = raw.get("intents") if isinstance(raw, dict) else None
    if not isinstance(section, dict):
        raise InvalidInput("--intents", f"expected an intents: mapping in {path}")
    try:
        parsed = {name: IntentSettings.model_validate(value) for name, value in section.items()}
    except ValidationError as exc:
        problem = invalid_input(exc)
        raise InvalidInput(f"--intents: {path}: {problem.field}", problem.message) from None
    return {name: list(settings.examples) for name, settings in parsed.items()}


def _day(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day as YYYY-MM-DD, got {text!r}") from None


async def _usage(bot: Bot, since: datetime | None) -> int:
    if since is None:  # this month so far: what a bill would show
        since = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    print(f"since {since:%Y-%m-%d} (UTC)")
    store = await open_store(
        bot.config.storage.url, root=bot.config.root, pool_size=bot.config.storage.pool_size
    )
    try:
        rows = await store.usage(since.timestamp())
    finally:
        await store.close()
    print(f"{'day':<12}{'group':<20}{'messages':>9}  spend")
    total = 0
    spend: dict[str, Decimal] = {}
    for row in rows:
        print(f"{row.day:<12}{row.group_key:<20}{row.messages:>9}  {_money(row.spend)}")
        total += row.messages
        for currency, amount in row.spend.items():
            spend[currency] = spend.get(currency, Decimal(0)) + amount
    print(f"{'total':<32}{total:>9}  {_money(spend)}")
    if total and not spend:
        print("(spend comes from the price in Vonage's status callbacks: none has come yet)")
    return 0


def _money(spend: dict[str, Decimal]) -> str:
    if not spend:
        return "-"
    return ", ".join(f"{amount} {currency}" for currency, amount in sorted(spend.items()))
