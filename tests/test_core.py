"""bot.core.build_bot: the shipped config assembles; every route problem is named at once."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config, parse_config
from bot.context import TEMPLATE_VARIABLES, Context
from bot.core import Bot, build_bot, intent_examples
from bot.exceptions import ConfigError
from bot.groups import Group
from bot.models import parse_inbound
from bot.plugins import load_plugins
from tests.conftest import BOT_NUMBER, ROOT, inbound, shipped_config

SOURCE = "config.yaml"


@pytest.fixture(autouse=True)
def _default_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    # The shipped config reads ${GROUPBOT_PROVIDER:-simulator}: keep it on the simulator.
    monkeypatch.delenv("GROUPBOT_PROVIDER", raising=False)


def config_with(extra_routes: list[dict[str, Any]] | None = None, **overrides: Any) -> Config:
    raw = shipped_config()
    raw["routes"] = [*raw["routes"], *(extra_routes or [])]
    raw.update(overrides)
    return parse_config(raw, root=ROOT)


def problems_of(config: Config) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_bot(config)
    return caught.value.problems


SHIPPED_ROUTES = len(shipped_config()["routes"])


def where(offset: int, name: str) -> str:
    """How a problem names the route appended at `offset` after the shipped ones."""
    return f"{SOURCE}: routes[{SHIPPED_ROUTES + offset}] ({name}): "


@pytest.fixture
def bot() -> Bot:
    return build_bot(parse_config(shipped_config(), root=ROOT))


# Templates read only what they are given


def test_a_template_reading_a_name_it_is_not_given_is_named(tmp_path: Path) -> None:
    (tmp_path / "quote.txt.j2").write_text(
        "{{ sender | phone }} asked about {{ jobb }} for {{ match.job | default('-') }}"
        "{% set n = members | length %}{% for i in range(n) %}.{% endfor %}"
        "{{ state.get('seen') }} {{ text }} {{ route }} {{ bot_number }}"
    )
    (tmp_path / "ok.txt.j2").write_text("{{ sender }}: {{ text }}")
    (tmp_path / "stop.txt.j2").write_text("{{ business }}: bye {{ sender }}, {{ text }}")
    (tmp_path / "error.txt.j2").write_text("Sorry {{ sender | phone }}, {{ reason }}")
    raw = {
        "bot": {"number": "11234567890"},
        "templates": str(tmp_path),
        "handlers": {"error_template": "error.txt.j2"},
        "routes": [
            {"name": "quote", "keywords": ["quote"], "template": "quote.txt.j2"},
            {"name": "ok", "keywords": ["ok"], "template": "ok.txt.j2"},
        ],
        "compliance": {"stop_template": "stop.txt.j2"},
    }

    problems = problems_of(parse_config(raw, root=tmp_path, source=SOURCE))

    assert problems == [
        f"{SOURCE}: routes[0] (quote): template 'quote.txt.j2' uses jobb, which it is not "
        "given (it sees bot_number, match, members, route, sender, state, text)",
        f"{SOURCE}: handlers.error_template: template 'error.txt.j2' uses reason, which it is "
        "not given (it sees bot_number, match, members, route, sender, state, text)",
        f"{SOURCE}: compliance.stop_template: template 'stop.txt.j2' uses text, which it is "
        "not given (it sees business, sender)",
    ]


def test_a_template_reading_a_match_key_its_route_does_not_give_is_named(tmp_path: Path) -> None:
    (tmp_path / "ticket.txt.j2").write_text(
        "Ticket {{ match.ticketid }} ({{ match['ticket_id'] }}, {{ match.get('x') }})"
    )
    # Reads that allow for a missing key, wherever the template allows for it: not named.
    (tmp_path / "order.txt.j2").write_text(
        "{% if match.note is defined %}{{ match.note }}{% endif %}"
        "{{ match.size if match.size is defined else '' }}"
        "{% if 'gift' in match %}{{ match.gift }}{% endif %}"
        "{{ match.color | upper | default('') }}"
    )
    (tmp_path / "games.txt.j2").write_text("{% for match in games %}{{ match.home }}{% endfor %}")
    (tmp_path / "said.txt.j2").write_text(
        "{{ match.keyword }} / {{ match.confidence }}{% if match.expected %}!{% endif %}"
    )
    raw = {
        "bot": {"number": "11234567890"},
        "templates": str(tmp_path),
        "handlers": {"error_template": None},
        "routes": [
            {
                "name": "ticket",
                "pattern": r"^ticket (?P<ticket_id>\d+)",
                "template": "ticket.txt.j2",
            },
            {"name": "said", "keywords": ["said"], "template": "said.txt.j2"},
            {"name": "order", "pattern": r"^order (?P<id>\d+)", "template": "order.txt.j2"},
        ],
    }

    problems = problems_of(parse_config(raw, root=tmp_path, source=SOURCE))

    assert problems == [
        f"{SOURCE}: routes[0] (ticket): template 'ticket.txt.j2' reads match.ticketid, which "
        "this route does not give (it gives ticket_id, from its pattern's named groups); did "
        "you mean match.ticket_id?",
        # `expected` is given only when ctx.expect led to the route: read bare, it fails.
        f"{SOURCE}: routes[1] (said): template 'said.txt.j2' reads match.confidence, which "
        "this route does not give (it gives keyword, from a keyword match)",
        f"{SOURCE}: routes[1] (said): template 'said.txt.j2' reads match.expected, which "
        "this route does not give (it gives keyword, from a keyword match)",
    ]
    games = {"name": "games", "keywords": ["games"], "template": "games.txt.j2"}
    with pytest.raises(ConfigError) as caught:  # only for its `games`: its `match` is its own
        build_bot(parse_config({**raw, "routes": [games]}, root=tmp_path, source=SOURCE))
    assert caught.value.problems == [
        f"{SOURCE}: routes[0] (games): template 'games.txt.j2' uses games, which it is not "
        "given (it sees bot_number, match, members, route, sender, state, text)"
    ]


def test_the_names_a_check_trusts_are_the_names_a_render_gives(bot: Bot) -> None:
    message = parse_inbound(json.dumps(inbound("11234567891", "hi", ["11234567892"])).encode())
    group = Group.of([message.sender, *message.participants], bot_number=BOT_NUMBER)
    context = Context(message, group, "r", {}, {}, BOT_NUMBER, templates=bot.templates)

    assert set(context.variables()) == TEMPLATE_VARIABLES


# The shipped config


def test_shipped_config_builds_a_bot(bot: Bot) -> None:
    assert [r.name for r in bot.router.routes] == [r["name"] for r in shipped_config()["routes"]]
    assert bot.config.bot.number == "11234567890"
    assert bot.router.fallback is None


def test_shipped_config_resolves_every_handler(bot: Bot) -> None:
    with_handler = {i for i, r in enumerate(shipped_config()["routes"]) if "handler" in r}
    assert set(bot.dispatcher.handlers) == with_handler
    assert bot.registry.resolve("handlers.support:case_status") is bot.registry.resolve(
        "case_status"
    )


@pytest.mark.parametrize(
    ("text", "route", "values"),
    [
        ("Ticket #42 please", "ticket", {"ticket_id": "42"}),
        ("TICKET 7", "ticket", {"ticket_id": "7"}),
        ("Can I speak to a specialist?", "escalate", {"keyword": "speak to a specialist"}),
        ("Where ARE you??", "status", {"keyword": "where are you"}),
        ("update: pipes replaced", "update", {"update": "pipes replaced"}),
        ("who is On-Call?", "on-call", {"keyword": "on call"}),
        ("I'm here", "arrived", {"keyword": "i'm here"}),
    ],
)
def test_shipped_routes_answer_their_messages(
    bot: Bot, text: str, route: str, values: dict[str, str]
) -> None:
    found = bot.router.match(text)
    assert found is not None
    assert found.route.name == route
    assert dict(found.values) == values


@pytest.mark.parametrize("text", ["hello", "statuses", "thanks!"])
def test_shipped_config_is_silent_on_other_messages(bot: Bot, text: str) -> None:
    assert bot.router.match(text) is None


def test_shipped_templates_render_for_a_template_only_route(bot: Bot) -> None:
    text = bot.templates.render("ticket.txt.j2", {"match": {"ticket_id": "42"}, "members": [1, 2]})
    assert text.startswith("Ticket #42 is open.")


# One problem at a time


def test_keyword_used_by_two_routes_is_named() -> None:
    problems = problems_of(
        config_with([{"name": "also-eta", "keywords": ["eta"], "template": "hours.txt.j2"}])
    )
    assert problems == [f"{where(0, 'also-eta')}keyword 'eta' is already used by route 'status'"]


def test_keyword_differing_only_in_case_and_punctuation_is_named() -> None:
    problems = problems_of(
        config_with([{"name": "pager", "keywords": ["On-Call"], "template": "hours.txt.j2"}])
    )
    assert problems == [
        f"{where(0, 'pager')}keyword 'On-Call' is already used as 'on call' "
        "(case and punctuation are ignored) by route 'on-call'"
    ]


def test_keyword_without_letters_or_digits_is_named() -> None:
    problems = problems_of(
        config_with([{"name": "bang", "keywords": ["!!!"], "template": "hours.txt.j2"}])
    )
    assert problems == [f"{where(0, 'bang')}keyword '!!!' has no letters or digits to match"]


def test_pattern_that_does_not_compile_is_named() -> None:
    problems = problems_of(
        config_with([{"name": "broken", "pattern": "^ticket (?P<id", "template": "hours.txt.j2"}])
    )
    assert len(problems) == 1
    assert problems[0].startswith(f"{where(0, 'broken')}pattern: ")


def test_handler_that_does_not_exist_is_named() -> None:
    problems = problems_of(config_with([{"name": "ghost", "keywords": ["boo"], "handler": "boo"}]))
    assert len(problems) == 1
    assert problems[0].startswith(f"{where(0, 'ghost')}handler 'boo' is not registered")
    assert "escalate" in problems[0]  # the registered names are listed


def test_handler_of_a_module_not_in_plugins_is_named() -> None:
    problems = problems_of(
        config_with(
            [{"name": "bill", "keywords": ["invoice"], "handler": "handlers.billing:invoice"}]
        )
    )
    assert problems == [
        f"{where(0, 'bill')}handler 'handlers.billing:invoice': "
        "module 'handlers.billing' is not listed in plugins"
    ]


def test_handler_function_missing_from_a_listed_plugin_is_named() -> None:
    problems = problems_of(
        config_with([{"name": "gone", "keywords": ["gone"], "handler": "handlers.team:nothing"}])
    )
    assert problems == [
        f"{where(0, 'gone')}handler 'handlers.team:nothing': "
        "handlers.team has no @handler function 'nothing'"
    ]


def test_template_that_does_not_exist_is_named() -> None:
    problems = problems_of(
        config_with([{"name": "faq", "keywords": ["faq"], "template": "faq.txt.j2"}])
    )
    assert len(problems) == 1
    assert problems[0].startswith(f"{where(0, 'faq')}template 'faq.txt.j2' not found")


def test_duplicate_route_name_is_named() -> None:
    problems = problems_of(
        config_with([{"name": "status", "keywords": ["progress"], "template": "hours.txt.j2"}])
    )
    first = next(i for i, r in enumerate(shipped_config()["routes"]) if r["name"] == "status")
    assert problems == [f"{where(0, 'status')}name is already used by routes[{first}]"]


def test_an_intent_route_builds_a_router_with_a_classifier() -> None:
    config = config_with(
        [{"name": "visit", "intent": "book_visit", "handler": "escalate", "threshold": 0.2}],
        intents={"book_visit": {"examples": ["book a visit for friday", "can the tech come"]}},
    )
    bot = build_bot(config)
    assert bot.router.classifier is not None
    match = bot.router.match("could you book a visit for friday")
    assert match is not None
    assert (match.route.name, match.kind) == ("visit", "intent")


def test_intent_route_with_an_undefined_intent_says_so() -> None:
    problems = problems_of(
        config_with([{"name": "visit", "intent": "book_visit", "handler": "escalate"}])
    )
    assert problems == [
        f"{where(0, 'visit')}intent 'book_visit' has no examples "
        "(under intents: in the config, or @handler(..., examples=[...]))"
    ]


def test_one_intent_in_two_routes_is_a_conflict() -> None:
    intents = {"book_visit": {"examples": ["book a visit"]}}
    routes = [
        {"name": "visit", "intent": "book_visit", "handler": "escalate"},
        {"name": "visit-again", "intent": "book_visit", "template": "hours.txt.j2"},
    ]
    problems = problems_of(config_with(routes, intents=intents))
    assert problems == [
        f"{where(1, 'visit-again')}intent 'book_visit' is already used by route 'visit'"
    ]


def gripe_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A plugin module with a handler `gripe` that declares examples; its name."""
    module = f"gbtest_gripe_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{module}.py").write_text(
        "from bot import handler\n\n"
        "@handler('gripe', examples=['i want a refund', 'this is unacceptable'])\n"
        "async def gripe(ctx):\n"
        "    return 'Sorry to hear that.'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return module


def test_a_handlers_examples_join_the_intent_of_the_route_that_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not an intent named like the handler that no route answers, which would take messages.
    module = gripe_plugin(tmp_path, monkeypatch)
    config = config_with(
        [{"name": "complaint", "intent": "complaint", "handler": "gripe"}],
        plugins=[*shipped_config()["plugins"], module],
    )
    examples = intent_examples(config, load_plugins(config.plugins, root=config.root)[0])
    assert examples["complaint"] == ["i want a refund", "this is unacceptable"]
    assert "gripe" not in examples
    bot = build_bot(config)
    found = bot.router.match("i want a refund, this is unacceptable")
    assert found is not None
    assert (found.route.name, found.kind) == ("complaint", "intent")


def test_a_handlers_examples_that_no_intent_route_uses_are_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not an intent of their own, which the classifier would learn and no route answer.
    module = gripe_plugin(tmp_path, monkeypatch)
    config = config_with(
        [{"name": "complaint", "keywords": ["complaint"], "handler": "gripe"}],
        plugins=[*shipped_config()["plugins"], module],
    )
    examples = intent_examples(config, load_plugins(config.plugins, root=config.root)[0])
    assert "gripe" not in examples
    assert build_bot(config).router.classifier is not None  # the shipped intent route's


def test_a_handlers_examples_for_two_intents_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = gripe_plugin(tmp_path, monkeypatch)
    intents = {**shipped_config()["intents"], "refund": {"examples": ["money back please"]}}
    config = config_with(
        [
            {"name": "complaint", "intent": "complaint", "handler": "gripe"},
            {"name": "refund", "intent": "refund", "handler": "gripe"},
        ],
        plugins=[*shipped_config()["plugins"], module],
        intents=intents,
    )
    assert problems_of(config) == [
        f"{SOURCE}: @handler('gripe', examples=...): the handler answers the intents "
        "complaint, refund, and its examples cannot teach them all apart (give each intent "
        "its own examples under intents:)"
    ]


def test_an_intent_no_route_answers_is_named() -> None:
    intents = {**shipped_config()["intents"], "refund": {"examples": ["i want my money back"]}}
    assert problems_of(config_with(intents=intents)) == [
        f"{SOURCE}: intents.refund: no route answers it, so a message classified as it would "
        "get no answer (add a route with 'intent: refund', or remove it)"
    ]


def test_fallback_with_a_missing_template_is_named() -> None:
    problems = problems_of(config_with(fallback={"template": "sorry.txt.j2"}))
    assert len(problems) == 1
    assert problems[0].startswith(f"{SOURCE}: fallback: template 'sorry.txt.j2' not found")


def test_fallback_with_an_existing_template_is_used() -> None:
    bot = build_bot(config_with(fallback={"template": "welcome.txt.j2"}))
    found = bot.router.match("hello")
    assert found is not None
    assert found.kind == "fallback"
    assert found.route.template == "welcome.txt.j2"


def test_missing_templates_folder_is_named(tmp_path: Path) -> None:
    problems = problems_of(config_with(templates=str(tmp_path / "none")))
    assert f"{SOURCE}: templates: folder {tmp_path / 'none'} does not exist" in problems


def test_template_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", folder)
    (folder / "latin1.txt.j2").write_bytes("Café opens at 9".encode("latin-1"))
    config = config_with(
        [{"name": "cafe", "keywords": ["cafe"], "template": "latin1.txt.j2"}],
        templates=str(folder),
    )
    problems = problems_of(config)
    assert len(problems) == 1
    assert problems[0].startswith(f"{where(0, 'cafe')}template 'latin1.txt.j2'")


@pytest.mark.parametrize(
    ("route", "fallback", "text", "expected"),
    [
        (
            {"name": "fallback", "keywords": ["assist"], "template": "hours.txt.j2"},
            {"handler": "escalate"},
            "assist",
            "We answer Monday to Friday",  # the route's own template, not escalate
        ),
        (
            {"name": "fallback", "keywords": ["assist"], "handler": "escalate"},
            {"template": "welcome.txt.j2"},
            "good morning",
            "Hello from groupbot!",  # the fallback's template, not the route's handler
        ),
    ],
)
async def test_route_named_fallback_is_not_confused_with_the_fallback(
    route: dict[str, Any], fallback: dict[str, Any], text: str, expected: str
) -> None:
    config = config_with([route], fallback=fallback)
    refused: list[str] = []
    try:
        bot = build_bot(config)
    except ConfigError as exc:
        refused = exc.problems
    if refused:  # refusing the name as reserved is a correct answer too
        assert any(p.startswith(where(0, "fallback")) for p in refused)
        return
    message = parse_inbound(json.dumps(inbound("11234567891", text, ["11234567892"])).encode())
    group = Group.of([message.sender, *message.participants], bot_number=BOT_NUMBER)
    outcome = await bot.dispatcher.dispatch(message, group, {}, now=0)
    assert outcome.error is None
    assert [(m.text or "")[: len(expected)] for m in outcome.messages] == [expected] * 2
    assert outcome.state is None  # escalate, which records an escalation, did not run


def test_plugin_that_cannot_be_imported_is_named() -> None:
    raw_plugins = [*shipped_config()["plugins"], "handlers.not_there"]
    problems = problems_of(config_with(plugins=raw_plugins))
    assert any(
        p.startswith(
            f"{SOURCE}: plugins[{len(raw_plugins) - 1}]: cannot import 'handlers.not_there'"
        )
        for p in problems
    )


# Everything at once


def shipped_index(name: str) -> int:
    return [r["name"] for r in shipped_config()["routes"]].index(name)


def test_every_problem_is_reported_at_once() -> None:
    bad_routes: list[dict[str, Any]] = [
        {"name": "dup-kw", "keywords": ["escalate"], "template": "hours.txt.j2"},
        {"name": "dup-phrase", "keywords": ["On-Call"], "template": "hours.txt.j2"},
        {"name": "bad-pattern", "pattern": "([unclosed", "template": "hours.txt.j2"},
        {"name": "ghost", "keywords": ["ghost"], "handler": "no_such_handler"},
        {"name": "foreign", "keywords": ["foreign"], "handler": "handlers.billing:invoice"},
        {"name": "no-template", "keywords": ["faq"], "template": "faq.txt.j2"},
        {"name": "ticket", "keywords": ["tickets"], "template": "hours.txt.j2"},
        {"name": "visit", "intent": "book_visit", "handler": "escalate"},
    ]
    problems = problems_of(config_with(bad_routes))
    expected_starts = [
        f"{where(0, 'dup-kw')}keyword 'escalate' is already used by route 'escalate'",
        f"{where(1, 'dup-phrase')}keyword 'On-Call' is already used as 'on call'",
        f"{where(2, 'bad-pattern')}pattern: ",
        f"{where(3, 'ghost')}handler 'no_such_handler' is not registered",
        f"{where(4, 'foreign')}handler 'handlers.billing:invoice': module 'handlers.billing'",
        f"{where(5, 'no-template')}template 'faq.txt.j2' not found",
        f"{where(6, 'ticket')}name is already used by routes[{shipped_index('ticket')}]",
        f"{where(7, 'visit')}intent 'book_visit' has no examples",
    ]
    assert len(problems) == len(expected_starts)
    for problem, start in zip(problems, expected_starts, strict=True):
        assert problem.startswith(start)


def test_problems_of_one_route_are_all_reported() -> None:
    problems = problems_of(
        config_with(
            [
                {
                    "name": "status",
                    "pattern": "(",
                    "handler": "nobody",
                    "template": "missing.txt.j2",
                }
            ]
        )
    )
    prefix = where(0, "status")
    assert len(problems) == 4
    assert all(p.startswith(prefix) for p in problems)
    assert [p.removeprefix(prefix).split(" ")[0] for p in problems] == [
        "name",
        "pattern:",
        "handler",
        "template",
    ]


def test_config_error_str_lists_the_problems_one_a_line() -> None:
    config = config_with(
        [
            {"name": "a", "keywords": ["eta"], "template": "hours.txt.j2"},
            {"name": "b", "keywords": ["x"], "template": "nope.j2"},
        ]
    )
    with pytest.raises(ConfigError) as caught:
        build_bot(config)
    assert str(caught.value).splitlines() == caught.value.problems
    assert len(caught.value.problems) == 2


def test_a_short_api_token_is_a_warning() -> None:
    assert build_bot(config_with(server={"api_token": "short"})).warnings == (
        f"{SOURCE}: server.api_token: 5 characters, few enough to guess; use 16 or more "
        "(openssl rand -hex 24)",
    )
    assert build_bot(config_with(server={"api_token": "x" * 16})).warnings == ()


def test_a_short_signature_secret_is_a_warning_at_start() -> None:
    # Said when the bot starts, not by PyJWT at the first webhook.
    warned = build_bot(config_with(provider={"signature_secret": "s" * 20})).warnings
    assert warned == (
        f"{SOURCE}: provider.signature_secret: 20 bytes; Vonage recommends 32 or more for an "
        "HS256 key (its dashboard's settings)",
    )
