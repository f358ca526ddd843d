"""A bot assembled from its config: routes checked, plugins loaded, templates found.

`build_bot` reports every problem at once (a keyword used by two routes, a pattern that does
not compile, a missing handler or template), each with the route's name, so that
`groupbot check` and start-up say everything that is wrong in one go.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.client import credential_problems
from bot.compliance import TEMPLATE_VARIABLES as COMPLIANCE_VARIABLES
from bot.config import Config, RouteSettings
from bot.context import TEMPLATE_VARIABLES
from bot.dispatch import Dispatcher
from bot.exceptions import ConfigError
from bot.plugins import Handler, Registry, load_plugins
from bot.routing import Route, Router, words
from bot.templates import Templates

MIN_TOKEN_LENGTH = 16  # for the admin API's bearer token: under it, a warning
MIN_SECRET_BYTES = 32  # for the webhook signature secret, as Vonage recommends


@dataclass(frozen=True)
class Bot:
    config: Config
    registry: Registry
    templates: Templates
    router: Router
    dispatcher: Dispatcher
    # What may not do what its writer meant, though it works (`check` shows them, `run` logs them).
    warnings: tuple[str, ...] = ()


def build_bot(config: Config) -> Bot:
    """Check and assemble everything the config declares; raise ConfigError listing problems."""
    source = config.source
    registry, plugin_problems = load_plugins(config.plugins, root=config.root)
    problems = [f"{source}: {p}" for p in plugin_problems]
    templates = Templates(config.templates_dir)
    if not config.templates_dir.is_dir():
        problems.append(f"{source}: templates: folder {config.templates_dir} does not exist")

    intents = intent_examples(config, registry)
    intent_routes: dict[str, str] = {}
    routes: list[Route] = []
    handlers: dict[int, Handler] = {}  # by route index: a route may be named "fallback"
    names: dict[str, int] = {}
    keywords: dict[tuple[str, ...], tuple[str, str, int]] = {}  # -> route, as written, index
    for index, settings in enumerate(config.routes):
        where = f"{source}: routes[{index}] ({settings.name})"
        said = problems.append
        if settings.name in names:
            said(f"{where}: name is already used by routes[{names[settings.name]}]")
        names.setdefault(settings.name, index)
        for keyword in settings.keywords or ():
            phrase = words(keyword)
            if not phrase:
                said(f"{where}: keyword {keyword!r} has no letters or digits to match")
            elif phrase in keywords:
                owner, first, _ = keywords[phrase]
                same = (
                    "" if first == keyword else f" as {first!r} (case and punctuation are ignored)"
                )
                said(f"{where}: keyword {keyword!r} is already used{same} by route {owner!r}")
            else:
                keywords[phrase] = (settings.name, keyword, index)
        pattern = _compile(settings, where, problems)
        if settings.intent is not None and settings.intent in intent_routes:
            owner = intent_routes[settings.intent]
            said(f"{where}: intent {settings.intent!r} is already used by route {owner!r}")
        if settings.intent is not None:
            intent_routes.setdefault(settings.intent, settings.name)
        if settings.intent is not None and settings.intent not in intents:
            said(
                f"{where}: intent {settings.intent!r} has no examples "
                "(under intents: in the config, or @handler(..., examples=[...]))"
            )
        _check_answer(settings.handler, settings.template, where, registry, templates, problems)
        if settings.template is not None and settings.handler is None:
            _check_match_keys(settings, pattern, where, templates, problems)
        function = registry.resolve(settings.handler) if settings.handler else None
        if function is not None:
            handlers[index] = function
        routes.append(
            Route(
                name=settings.name,
                index=index,
                handler=settings.handler,
                template=settings.template,
                keywords=tuple(settings.keywords or ()),
                pattern=pattern,
                intent=settings.intent,
                threshold=settings.threshold,
            )
        )

    # With a classifier (some route has an intent), it learns every intent, and would take
    # messages for one that no route answers. (Without, the examples are not used at all.)
    if intent_routes:
        for intent in sorted(intents.keys() - intent_routes.keys()):
            problems.append(
                f"{source}: intents.{intent}: no route answers it, so a message classified as "
                f"it would get no answer (add a route with 'intent: {intent}', or remove it)"
            )
    for name, answered in _intents_of_handlers(config, registry).items():
        if len(answered) > 1 and name in registry.examples:
            problems.append(
                f"{source}: @handler({name!r}, examples=...): the handler answers the intents "
                f"{', '.join(answered)}, and its examples cannot teach them all apart "
                "(give each intent its own examples under intents:)"
            )

    fallback: Route | None = None
    if config.fallback is not None:
        where = f"{source}: fallback"
        _check_answer(
            config.fallback.handler, config.fallback.template, where, registry, templates, problems
        )
        fallback = Route("fallback", len(routes), config.fallback.handler, config.fallback.template)
        function = registry.resolve(config.fallback.handler) if config.fallback.handler else None
        if function is not None:
            handlers[fallback.index] = function

    error_template = config.handlers.error_template
    if error_template is not None:  # rendered with the message's own variables (ctx.render)
        where = f"{source}: handlers.error_template"
        _check_template(error_template, TEMPLATE_VARIABLES, where, templates, problems)
    compliance = config.compliance
    for key in ("stop_template", "start_template", "help_template"):
        if (name := getattr(compliance, key)) is not None:
            where = f"{source}: compliance.{key}"
            _check_template(name, COMPLIANCE_VARIABLES, where, templates, problems)
    warnings: list[str] = []
    secret = config.provider.signature_secret.get_secret_value()
    if config.provider.verify_signatures and secret and len(secret.encode()) < MIN_SECRET_BYTES:
        warnings.append(
            f"{source}: provider.signature_secret: {len(secret.encode())} bytes; Vonage "
            f"recommends {MIN_SECRET_BYTES} or more for an HS256 key (its dashboard's settings)"
        )
    token = config.server.api_token.get_secret_value()
    if token and len(token) < MIN_TOKEN_LENGTH:
        warnings.append(
            f"{source}: server.api_token: {len(token)} characters, few enough to guess; "
            f"use {MIN_TOKEN_LENGTH} or more (openssl rand -hex 24)"
        )
    for keyword in compliance.stop_words + compliance.start_words + compliance.help_words:
        if words(keyword) in keywords:
            # Not an error: the route still answers the word within a longer message.
            owner, written, at = keywords[words(keyword)]
            warnings.append(
                f"{source}: routes[{at}] ({owner}): keyword {written!r} is also the carrier "
                f"keyword {keyword!r} (compliance): a message that is only that word is "
                "answered as such before any route; this one answers it only within a longer "
                "message"
            )

    if config.provider.kind == "vonage":  # the key read now, not at the first send
        problems.extend(f"{source}: {p}" for p in credential_problems(config.provider, config.root))

    if problems:
        raise ConfigError(problems)
    classifier = None
    if any(route.intent for route in routes):
        # Imported here: numpy, the tokenizer and the word-piece table cost about 36 MB.
        from bot.intents import load_or_train

        classifier = load_or_train(intents, config.root / "var" / "cache").classifier
    router = Router(
        routes, fallback=fallback, classifier=classifier, threshold=config.intent_threshold
    )
    dispatcher = Dispatcher(
        router,
        handlers,
        templates,
        bot_number=config.bot.number,
        timeout_seconds=config.handlers.timeout_seconds,
        error_template=error_template,
        compliance=config.compliance,
    )
    return Bot(config, registry, templates, router, dispatcher, tuple(warnings))


def intent_examples(config: Config, registry: Registry) -> dict[str, list[str]]:
    """Each intent's examples: from config.yaml, plus those a handler declares. A handler's
    go to the intent of each intent route that uses it; those of a handler no intent route
    uses, to the intent named like the handler if a route answers that, else nowhere."""
    intents = {name: list(settings.examples) for name, settings in config.intents.items()}

    def add(intent: str, examples: Sequence[str]) -> None:
        intents.setdefault(intent, []).extend(e for e in examples if e not in intents[intent])

    answered = {route.intent for route in config.routes if route.intent is not None}
    used = _intents_of_handlers(config, registry)
    for name, examples in registry.examples.items():
        for intent in used.get(name) or ([name] if name in answered else []):
            add(intent, examples)
    return intents


def _intents_of_handlers(config: Config, registry: Registry) -> dict[str, list[str]]:
    """The intents of the intent routes each handler (by registered name) answers, in order."""
    used: dict[str, list[str]] = {}
    for route in config.routes:
        if route.intent is None or route.handler is None:
            continue
        name = registry.registered_name(route.handler)
        if name is not None and route.intent not in used.setdefault(name, []):
            used[name].append(route.intent)
    return used


def _compile(settings: RouteSettings, where: str, problems: list[str]) -> re.Pattern[str] | None:
    if settings.pattern is None:
        return None
    try:
        # Case-insensitive like keywords; `(?-i:...)` opts a part out.
        return re.compile(settings.pattern, re.IGNORECASE)
    except re.error as exc:
        problems.append(f"{where}: pattern: {exc}")
        return None


def _check_answer(
    handler: str | None,
    template: str | None,
    where: str,
    registry: Registry,
    templates: Templates,
    problems: list[str],
) -> None:
    if handler is not None and registry.resolve(handler) is None:
        problems.append(f"{where}: {registry.describe_missing(handler)}")
    if template is not None:
        # Without a handler, a template sees what every template sees, and nothing more.
        given = TEMPLATE_VARIABLES if handler is None else None
        _check_template(template, given, where, templates, problems)


# Read of `match` whatever the route: the dict's own methods (`match.get("day")`).
_MATCH_ALWAYS = frozenset({"get", "items", "keys", "values"})


def _check_match_keys(
    settings: RouteSettings,
    pattern: re.Pattern[str] | None,
    where: str,
    templates: Templates,
    problems: list[str],
) -> None:
    """That a template-only route's template reads of `match` only what the route gives:
    a misspelt group name is caught now, not at the first message."""
    assert settings.template is not None
    if templates.problem(settings.template) is not None:
        return  # said already
    if pattern is not None:
        given, by = set(pattern.groupindex), "its pattern's named groups"
    elif settings.keywords:
        given, by = {"keyword"}, "a keyword match"
    elif settings.intent is not None:
        given, by = {"intent", "confidence"}, "an intent match"
    else:
        return
    for key in sorted(templates.keys_read(settings.template, "match") - given - _MATCH_ALWAYS):
        nearest = difflib.get_close_matches(key, sorted(given), n=1)
        hint = f"; did you mean match.{nearest[0]}?" if nearest else ""
        problems.append(
            f"{where}: template {settings.template!r} reads match.{key}, which this route "
            f"does not give (it gives {', '.join(sorted(given)) or 'nothing'}, from {by}){hint}"
        )


def _check_template(
    template: str,
    given: frozenset[str] | None,
    where: str,
    templates: Templates,
    problems: list[str],
) -> None:
    """That `template` loads; and, when all it is `given` is known, that it reads nothing
    else (a misspelt name is caught now, not at the first message)."""
    if problem := templates.problem(template):
        problems.append(f"{where}: {problem}")
    elif given is not None and (unknown := sorted(templates.names_used(template) - given)):
        problems.append(
            f"{where}: template {template!r} uses {', '.join(unknown)}, which it is not given "
            f"(it sees {', '.join(sorted(given))})"
        )
