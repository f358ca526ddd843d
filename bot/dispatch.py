"""From one inbound message to the messages that answer it.

route -> handler(ctx) -> template -> broadcast plan. Plain async Python, no I/O of its own:
the inbox worker loads the group's state before and stores the outcome after, atomically.
A handler or template that fails is logged with its route and the message's id; the group
gets the error template if one is configured, else nothing; the bot goes on with the next.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from bot import broadcast
from bot.compliance import ALREADY_SUBSCRIBED, DEFAULT_TEXTS, Action, Keywords
from bot.config import ComplianceSettings
from bot.context import Context, Reply
from bot.exceptions import HandlerError, TemplateError
from bot.groups import Group
from bot.models import InboundMessage, OutboundMessage
from bot.plugins import Handler
from bot.routing import Match, Route, Router
from bot.templates import Templates

log = structlog.get_logger("groupbot.dispatch")


@dataclass(frozen=True)
class Outcome:
    """What processing one message decided; `error` is set when a handler or template failed."""

    match: Match | None
    messages: list[OutboundMessage] = field(default_factory=list)
    state: str | None = None  # the group's new state as JSON, when the handler changed it
    error: str | None = None
    consent: tuple[str, bool] | None = None  # a number that opted out (False) or back in
    keyword: str | None = None  # the compliance keyword answered, instead of a route

    @property
    def route(self) -> str | None:
        if self.keyword is not None:
            return self.keyword
        return self.match.route.name if self.match else None


class _HandlerTimeout(Exception):
    """The handler ran past its time (not a TimeoutError the handler raised itself)."""


class Dispatcher:
    def __init__(
        self,
        router: Router,
        handlers: Mapping[int, Handler],
        templates: Templates,
        *,
        bot_number: str,
        timeout_seconds: float,
        error_template: str | None = None,
        compliance: ComplianceSettings | None = None,
    ) -> None:
        self.compliance = compliance or ComplianceSettings()
        self.route_names = frozenset(r.name for r in router.routes)
        self.keywords = Keywords.of(self.compliance)
        self.router = router
        self.error_template = error_template
        self.handlers = handlers  # by route index, resolved and checked at start-up
        self.templates = templates
        self.bot_number = bot_number
        self.timeout_seconds = timeout_seconds

    async def dispatch(
        self,
        message: InboundMessage,
        group: Group,
        state: dict[str, Any],
        *,
        now: float,
        opted_out: frozenset[str] = frozenset(),
    ) -> Outcome:
        action = self.keywords.action(message.body_text)
        if action is not None:
            return self._keyword(action, message, group, opted_out)
        before = json.dumps(state, sort_keys=True)
        state = dict(state)
        expected = _pop_expectation(state, now)
        kept = json.dumps(state, sort_keys=True)  # what is saved if nothing else changes it
        match = self.router.match(message.body_text)
        if expected is not None and (match is None or match.kind in ("intent", "fallback")):
            route = self.router.route(expected)
            match = Match(route, "expect", {"expected": True}) if route is not None else match
        if match is None:
            log.debug("route_none")  # people talking among themselves: the usual case
            return Outcome(None, state=kept if kept != before else None)
        route = match.route
        structlog.contextvars.bind_contextvars(route=route.name)
        log.info("route_matched", kind=match.kind)
        ctx = Context(
            message=message,
            group=group,
            route=route.name,
            match=match.values,
            state=state,
            bot_number=self.bot_number,
            templates=self.templates,
            routes=self.route_names,
        )
        try:
            reply = await self._answer(route, ctx)
        except _HandlerTimeout:
            log.error("handler_timeout", timeout_seconds=self.timeout_seconds)
            return self._failed(
                match, ctx, kept, f"handler timed out after {self.timeout_seconds:g} s"
            )
        except TemplateError as exc:
            log.error("template_failed", error=str(exc))
            return self._failed(match, ctx, kept, str(exc))
        except Exception as exc:
            log.exception("handler_failed")
            return self._failed(match, ctx, kept, f"{type(exc).__name__}: {exc}")
        if not isinstance(ctx.state, dict):
            log.error("state_invalid", error=f"ctx.state became {type(ctx.state).__name__}")
            return self._failed(match, ctx, kept, "ctx.state: expected a dict of JSON values")
        if ctx.expecting is not None:
            expected_route, within = ctx.expecting
            ctx.state[EXPECT_KEY] = {"route": expected_route, "until": now + within}
        if (problem := _not_json(ctx.state, "ctx.state")) is not None:
            log.error("state_invalid", error=problem)
            return self._failed(match, ctx, kept, problem)
        after = json.dumps(ctx.state, sort_keys=True)
        new_state = after if after != before else None
        if reply is None:
            log.info("reply_none")
            return Outcome(match, state=new_state)
        messages = self._plan(reply, group, message.sender, opted_out)
        return Outcome(match, messages, state=new_state)

    def _plan(
        self, reply: Reply, group: Group, sender: str, opted_out: frozenset[str]
    ) -> list[OutboundMessage]:
        return broadcast.plan(
            reply,
            group,
            bot_number=self.bot_number,
            sender=sender,
            skip=opted_out,
            keep_skipped_in_participants=self.compliance.keep_opted_out_in_participants,
        )

    def limit_notice(self) -> str:
        business = self.compliance.business_name
        return (
            f"{business} has reached today's message limit for this group; answers resume tomorrow."
        )

    def _keyword(
        self, action: Action, message: InboundMessage, group: Group, opted_out: frozenset[str]
    ) -> Outcome:
        """STOP, START or HELP: answered to the sender alone, before and instead of routing."""
        settings = self.compliance
        template = {
            "stop": settings.stop_template,
            "start": settings.start_template,
            "help": settings.help_template,
        }[action]
        variables = {"business": settings.business_name, "sender": message.sender}
        default = DEFAULT_TEXTS[action]
        if action == "start" and message.sender not in opted_out:
            default = ALREADY_SUBSCRIBED
        try:
            text = (
                self.templates.render(template, variables)
                if template
                else default.format(business=settings.business_name)
            )
        except TemplateError as exc:  # the opt-out itself must happen whatever the template
            log.error("template_failed", error=str(exc))
            text = default.format(business=settings.business_name)
        log.info("compliance_keyword", action=action)
        reply = Reply(text, to_sender_only=True)
        messages = broadcast.plan(reply, group, bot_number=self.bot_number, sender=message.sender)
        consent = {"stop": False, "start": True, "help": None}[action]
        return Outcome(
            None,
            messages,
            consent=(message.sender, consent) if consent is not None else None,
            keyword=action,
        )

    def _failed(self, match: Match, ctx: Context, kept: str, error: str) -> Outcome:
        # The state stays as it was before the handler ran, except that the expectation this
        # message answered is used up, even though the handler failed.
        return replace(self._failure(match, ctx, error), state=kept)

    def _failure(self, match: Match, ctx: Context, error: str) -> Outcome:
        """The outcome of a failed handler: the error template to the group, if there is one.

        The group's state is left as it was; the template sees the usual variables, never
        the error itself (that is for the logs, not for customers).
        """
        if self.error_template is None:
            return Outcome(match, error=error)
        try:
            reply = _text(ctx.render(self.error_template))
        except TemplateError as exc:
            log.error("error_template_failed", error=str(exc))
            return Outcome(match, error=error)
        messages = (
            broadcast.plan(reply, ctx.group, bot_number=self.bot_number, sender=ctx.sender)
            if reply
            else []
        )
        return Outcome(match, messages, error=error)

    async def _answer(self, route: Route, ctx: Context) -> Reply | None:
        function = self.handlers.get(route.index)
        if function is None:
            assert route.template is not None  # checked at start-up
            return _text(ctx.render(route.template))
        try:
            async with asyncio.timeout(self.timeout_seconds) as limit:
                result = await function(ctx)
        except TimeoutError:
            if limit.expired():
                raise _HandlerTimeout from None
            raise
        if result is None or isinstance(result, Reply):
            return result
        if isinstance(result, str):
            return _text(result)
        if isinstance(result, Mapping):
            if route.template is None:
                raise HandlerError(
                    f"handler of route {route.name!r} returned a mapping, "
                    "but the route names no template to render it with"
                )
            return _text(ctx.render(route.template, **result))
        raise HandlerError(
            f"handler of route {route.name!r} returned {type(result).__name__}; "
            "expected Reply, str, a mapping (with a template) or None"
        )


# Where ctx.expect() keeps the group's expectation, in the group's state (saved with it).
EXPECT_KEY = "__groupbot_expect__"


def _pop_expectation(state: dict[str, Any], now: float) -> str | None:
    """The route the group's next message is expected at (if still in time), removed from the
    state either way: an expectation answers one message at most."""
    expectation = state.pop(EXPECT_KEY, None)
    if isinstance(expectation, dict) and float(expectation.get("until", 0)) >= now:
        return str(expectation.get("route"))
    return None


def _text(text: str) -> Reply | None:
    # An empty answer (a template whose conditions all fell through) means silence.
    return Reply(text) if text.strip() else None


def _not_json(value: object, path: str, within: frozenset[int] = frozenset()) -> str | None:
    """Where `value` is not JSON (text keys; str, numbers, bools, None, lists, dicts), and
    why; None when it is. json.dumps would turn a number key into text unasked, and name
    neither the key nor the value it refuses."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path}: {value} is not a JSON number"
    if isinstance(value, str | bool | int | float) or value is None:
        return None
    if not isinstance(value, dict | list | tuple):
        return (
            f"{path}: {type(value).__name__} is not a JSON value "
            "(str, int, float, bool, None, list or dict)"
        )
    if id(value) in within:
        return f"{path}: contains itself"
    within |= {id(value)}
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(value, dict) and not isinstance(key, str):
            return f"{path}: key {key!r} is {type(key).__name__}; keys must be str"
        if (problem := _not_json(item, f"{path}[{key!r}]", within)) is not None:
            return problem
    return None
