"""Routing: which route answers a message, and why. Pure matching, no side effects.

Precedence is the order of `routes:` in config.yaml among keyword and pattern routes; intent
routes are consulted only when no keyword or pattern matched; the fallback comes last.
Keyword lookup costs the same with one route or ten thousand: phrases are indexed by their
first word, so a message is scanned once, word by word, whatever the number of routes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

MatchKind = Literal["keyword", "pattern", "intent", "expect", "fallback"]
_WORD = re.compile(r"\w+")


def words(text: str) -> tuple[str, ...]:
    """Case- and punctuation-insensitive words: "ETA?!  Status" -> ('eta', 'status')."""
    return tuple(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


@dataclass(frozen=True)
class Route:
    """A configured route; `index` is its position in `routes:` (lower wins)."""

    name: str
    index: int
    handler: str | None = None
    template: str | None = None
    keywords: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    intent: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class Match:
    """The decision: which route, how it matched, and the values handlers and templates see."""

    route: Route
    kind: MatchKind
    values: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "keyword":
            return f"keyword {self.values['keyword']!r}"
        if self.kind == "pattern":
            assert self.route.pattern is not None
            groups = {k: v for k, v in self.values.items() if v is not None}
            return f"pattern {self.route.pattern.pattern!r} {groups}"
        if self.kind == "intent":
            return f"intent {self.values['intent']!r} at {self.values['confidence']:.2f}"
        if self.kind == "expect":
            return "expected: the route asked for the group's next message"
        return "fallback: nothing else matched"


class IntentClassifier(Protocol):
    def scores(self, text: str) -> Sequence[tuple[str, float]]:
        """(intent, confidence) pairs, best first."""
        ...


@dataclass(frozen=True)
class Explanation:
    """What `groupbot route` prints: every candidate considered, and the winner."""

    text: str
    candidates: tuple[Match, ...]
    intent_scores: tuple[tuple[str, float], ...]
    winner: Match | None


class Router:
    def __init__(
        self,
        routes: Sequence[Route],
        *,
        fallback: Route | None = None,
        classifier: IntentClassifier | None = None,
        threshold: float = 0.5,
    ) -> None:
        self.routes = tuple(routes)
        self.fallback = fallback
        self.classifier = classifier
        self.threshold = threshold
        self._phrases: dict[str, list[tuple[tuple[str, ...], str, Route]]] = {}
        for route in self.routes:
            for keyword in route.keywords:
                phrase = words(keyword)
                self._phrases.setdefault(phrase[0], []).append((phrase, keyword, route))
        self._patterns = tuple(r for r in self.routes if r.pattern is not None)
        self._intents = {r.intent: r for r in self.routes if r.intent is not None}

    def match(self, text: str) -> Match | None:
        """The route that answers `text`, or None for silence."""
        best = min(self._keyword_matches(text), key=lambda m: m.route.index, default=None)
        limit = best.route.index if best else len(self.routes)
        for route in self._patterns:
            if route.index >= limit:
                break
            found = self._pattern_match(route, text)
            if found:
                return found
        if best:
            return best
        return self._intent_match(self._intent_scores(text)) or self._fallback_match()

    def explain(self, text: str) -> Explanation:
        """Every keyword and pattern candidate, the intent scores, and the winner."""
        candidates = list(self._keyword_matches(text))
        candidates += [m for r in self._patterns if (m := self._pattern_match(r, text))]
        candidates.sort(key=lambda m: m.route.index)
        scores = self._intent_scores(text)
        intent = self._intent_match(scores)
        if intent:
            candidates.append(intent)
        winner = candidates[0] if candidates else self._fallback_match()
        return Explanation(text, tuple(candidates), tuple(scores), winner)

    def _keyword_matches(self, text: str) -> Iterator[Match]:
        tokens = words(text)
        for start, token in enumerate(tokens):
            for phrase, keyword, route in self._phrases.get(token, ()):
                if tokens[start : start + len(phrase)] == phrase:
                    yield Match(route, "keyword", {"keyword": keyword})

    @staticmethod
    def _pattern_match(route: Route, text: str) -> Match | None:
        assert route.pattern is not None
        found = route.pattern.search(text)
        return Match(route, "pattern", found.groupdict()) if found else None

    def _intent_scores(self, text: str) -> list[tuple[str, float]]:
        if self.classifier is None or not self._intents:
            return []
        return list(self.classifier.scores(text))

    def _intent_match(self, scores: Sequence[tuple[str, float]]) -> Match | None:
        # Only the likeliest intent counts: a message that most likely means an intent no
        # route serves is out of scope, not a weaker match for another route.
        if not scores:
            return None
        intent, confidence = scores[0]
        route = self._intents.get(intent)
        if route is None:
            return None
        threshold = route.threshold if route.threshold is not None else self.threshold
        if confidence < threshold:
            return None
        return Match(route, "intent", {"intent": intent, "confidence": confidence})

    def route(self, name: str) -> Route | None:
        return next((route for route in self.routes if route.name == name), None)

    def _fallback_match(self) -> Match | None:
        return Match(self.fallback, "fallback") if self.fallback else None
