"""bot.routing: whole-word keywords, patterns, intents, fallback, and config order."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from bot.routing import Match, Route, Router, words


def kw(name: str, index: int, *keywords: str) -> Route:
    return Route(name=name, index=index, template=f"{name}.j2", keywords=keywords)


def pat(name: str, index: int, pattern: str) -> Route:
    return Route(
        name=name, index=index, template=f"{name}.j2", pattern=re.compile(pattern, re.IGNORECASE)
    )


def intent(name: str, index: int, intent_name: str, threshold: float | None = None) -> Route:
    return Route(name=name, index=index, handler=name, intent=intent_name, threshold=threshold)


class StubClassifier:
    """Answers fixed scores, best first, and remembers what it was asked."""

    def __init__(self, scores: Sequence[tuple[str, float]]) -> None:
        self._scores = list(scores)
        self.asked: list[str] = []

    def scores(self, text: str) -> Sequence[tuple[str, float]]:
        self.asked.append(text)
        return self._scores


def winner(router: Router, text: str) -> str | None:
    found = router.match(text)
    return found.route.name if found else None


# words()


def test_words_ignore_case_and_punctuation() -> None:
    assert words("ETA?!  Status") == ("eta", "status")
    assert words("Where ARE you??") == ("where", "are", "you")
    assert words("On-Call") == ("on", "call")


def test_words_of_punctuation_only_is_empty() -> None:
    assert words("?!... --") == ()


def test_words_fold_unicode_width_and_case() -> None:
    assert words("\uff33\uff34\uff21\uff34\uff35\uff33") == ("status",)  # full-width
    assert words("STRASSE Straße") == ("strasse", "strasse")


# Keywords


@pytest.mark.parametrize(
    "text", ["status", "STATUS", "Status?", "what's the status", "status: please", "(status)"]
)
def test_keyword_matches_as_a_whole_word_in_any_case(text: str) -> None:
    router = Router([kw("status", 0, "status")])
    found = router.match(text)
    assert found is not None
    assert found.route.name == "status"
    assert found.kind == "keyword"
    assert found.values == {"keyword": "status"}


@pytest.mark.parametrize("text", ["statuses", "mystatus", "status2", "stat us", "sta-tus"])
def test_keyword_does_not_match_part_of_a_word(text: str) -> None:
    assert Router([kw("status", 0, "status")]).match(text) is None


@pytest.mark.parametrize(
    "text", ["Where ARE you??", "where are you", "Hey, where are you now?", "where-are-you"]
)
def test_phrase_matches_its_words_in_sequence(text: str) -> None:
    found = Router([kw("status", 0, "where are you")]).match(text)
    assert found is not None
    assert found.values["keyword"] == "where are you"


@pytest.mark.parametrize(
    "text",
    ["where you are", "where are", "are you there", "where are your keys", "nowhere are you"],
)
def test_phrase_does_not_match_other_word_sequences(text: str) -> None:
    assert Router([kw("status", 0, "where are you")]).match(text) is None


def test_phrase_matches_after_a_false_start() -> None:
    found = Router([kw("status", 0, "where are you")]).match("where where are you")
    assert found is not None


def test_phrase_with_an_apostrophe_matches() -> None:
    assert winner(Router([kw("arrived", 0, "i'm here")]), "OK I'M HERE!") == "arrived"


def test_keyword_is_reported_as_configured() -> None:
    found = Router([kw("on-call", 0, "On-Call")]).match("who is on call today")
    assert found is not None
    assert found.values == {"keyword": "On-Call"}


def test_first_route_in_config_order_wins_among_keywords() -> None:
    router = Router([kw("first", 0, "eta"), kw("second", 1, "status")])
    assert winner(router, "status and eta please") == "first"
    assert winner(router, "status") == "second"


# Patterns


def test_pattern_named_groups_appear_in_the_match_values() -> None:
    router = Router([pat("ticket", 0, r"^ticket\s*#?(?P<ticket_id>\d+)(?:\s+(?P<note>.+))?")])
    found = router.match("Ticket #4321 broken again")
    assert found is not None
    assert found.kind == "pattern"
    assert found.values == {"ticket_id": "4321", "note": "broken again"}


def test_pattern_optional_group_that_did_not_match_is_none() -> None:
    found = Router([pat("t", 0, r"^ticket (?P<id>\d+)(?: (?P<note>.+))?")]).match("ticket 7")
    assert found is not None
    assert found.values == {"id": "7", "note": None}
    assert found.describe() == "pattern '^ticket (?P<id>\\\\d+)(?: (?P<note>.+))?' {'id': '7'}"


def test_pattern_that_does_not_match_gives_nothing() -> None:
    assert Router([pat("ticket", 0, r"^ticket\s+(?P<id>\d+)")]).match("my ticket 12") is None


def test_pattern_listed_before_a_keyword_route_wins() -> None:
    router = Router([pat("update", 0, r"^update:\s*(?P<update>.+)"), kw("status", 1, "status")])
    found = router.match("update: status is green")
    assert found is not None
    assert found.route.name == "update"
    assert found.values == {"update": "status is green"}


def test_keyword_listed_before_a_pattern_route_wins() -> None:
    router = Router([kw("status", 0, "status"), pat("update", 1, r"^update:\s*(?P<update>.+)")])
    found = router.match("update: status is green")
    assert found is not None
    assert found.route.name == "status"
    assert found.kind == "keyword"


def test_later_pattern_is_used_when_the_earlier_keyword_does_not_match() -> None:
    router = Router([kw("status", 0, "status"), pat("update", 1, r"^update:\s*(?P<update>.+)")])
    assert winner(router, "update: all green") == "update"


def test_first_pattern_in_config_order_wins_among_patterns() -> None:
    router = Router([pat("specific", 0, r"^ticket 1$"), pat("general", 1, r"^ticket \d+$")])
    assert winner(router, "ticket 1") == "specific"
    assert winner(router, "ticket 2") == "general"


# Fallback


def test_fallback_is_used_when_nothing_matches() -> None:
    fallback = Route("fallback", 2, template="fallback.j2")
    router = Router([kw("status", 0, "status"), pat("t", 1, r"^ticket")], fallback=fallback)
    found = router.match("hello there")
    assert found is not None
    assert found.kind == "fallback"
    assert found.route is fallback
    assert found.values == {}


def test_fallback_is_not_used_when_a_route_matches() -> None:
    fallback = Route("fallback", 1, template="fallback.j2")
    router = Router([kw("status", 0, "status")], fallback=fallback)
    assert winner(router, "status?") == "status"


def test_nothing_matches_and_no_fallback_gives_none() -> None:
    router = Router([kw("status", 0, "status"), pat("t", 1, r"^ticket")])
    assert router.match("hello there") is None
    assert router.match("") is None


def test_router_without_routes_gives_none() -> None:
    assert Router([]).match("anything") is None


# explain()


def test_explain_lists_every_candidate_in_precedence_order_and_the_winner() -> None:
    router = Router(
        [
            kw("eta", 0, "eta"),
            pat("ticket", 1, r"ticket\s+(?P<id>\d+)"),
            kw("status", 2, "status", "where are you"),
            kw("unrelated", 3, "hours"),
        ]
    )
    explanation = router.explain("status of ticket 12? where are you, eta?")
    assert [(c.route.name, c.kind) for c in explanation.candidates] == [
        ("eta", "keyword"),
        ("ticket", "pattern"),
        ("status", "keyword"),
        ("status", "keyword"),
    ]
    assert explanation.winner is not None
    assert explanation.winner.route.name == "eta"
    assert explanation.text == "status of ticket 12? where are you, eta?"


def test_explain_winner_is_what_match_chooses() -> None:
    router = Router(
        [pat("update", 0, r"^update:(?P<u>.+)"), kw("status", 1, "status"), kw("eta", 2, "eta")]
    )
    for text in ["update: status", "eta status", "eta", "nothing here"]:
        explanation = router.explain(text)
        assert explanation.winner == router.match(text)


def test_explain_with_no_candidate_names_the_fallback_as_winner() -> None:
    fallback = Route("fallback", 1, template="fallback.j2")
    explanation = Router([kw("status", 0, "status")], fallback=fallback).explain("hi")
    assert explanation.candidates == ()
    assert explanation.winner is not None
    assert explanation.winner.kind == "fallback"


def test_explain_with_nothing_at_all_has_no_winner() -> None:
    explanation = Router([kw("status", 0, "status")]).explain("hi")
    assert explanation.candidates == ()
    assert explanation.winner is None


def test_describe_says_how_a_route_matched() -> None:
    router = Router([kw("status", 0, "status")], fallback=Route("fallback", 1, template="f"))
    keyword = router.match("status")
    fallback = router.match("hi")
    assert keyword is not None
    assert fallback is not None
    assert keyword.describe() == "keyword 'status'"
    assert fallback.describe() == "fallback: nothing else matched"


# Intents


def test_intent_at_or_above_the_global_threshold_matches() -> None:
    router = Router(
        [intent("book", 0, "book_visit")],
        classifier=StubClassifier([("book_visit", 0.5), ("other", 0.1)]),
        threshold=0.5,
    )
    found = router.match("can the technician come tomorrow")
    assert found is not None
    assert found.kind == "intent"
    assert found.route.name == "book"
    assert found.values == {"intent": "book_visit", "confidence": 0.5}
    assert found.describe() == "intent 'book_visit' at 0.50"


def test_intent_below_the_global_threshold_does_not_match() -> None:
    router = Router(
        [intent("book", 0, "book_visit")],
        classifier=StubClassifier([("book_visit", 0.49)]),
        threshold=0.5,
    )
    assert router.match("maybe tomorrow") is None


def test_per_route_threshold_above_the_global_one_refuses_a_weak_intent() -> None:
    router = Router(
        [intent("cancel", 0, "cancel", threshold=0.9)],
        classifier=StubClassifier([("cancel", 0.8)]),
        threshold=0.5,
    )
    assert router.match("cancel it?") is None


def test_per_route_threshold_below_the_global_one_accepts_a_weak_intent() -> None:
    router = Router(
        [intent("thanks", 0, "thanks", threshold=0.3)],
        classifier=StubClassifier([("thanks", 0.35)]),
        threshold=0.5,
    )
    assert winner(router, "cheers") == "thanks"


def test_intent_below_threshold_falls_back() -> None:
    fallback = Route("fallback", 1, template="fallback.j2")
    router = Router(
        [intent("book", 0, "book_visit")],
        fallback=fallback,
        classifier=StubClassifier([("book_visit", 0.2)]),
    )
    found = router.match("hmm")
    assert found is not None
    assert found.kind == "fallback"


def test_a_message_whose_likeliest_intent_has_no_route_is_out_of_scope() -> None:
    # Most likely small talk: not a weaker booking request.
    router = Router(
        [intent("book", 0, "book_visit")],
        classifier=StubClassifier([("smalltalk", 0.99), ("book_visit", 0.7)]),
    )
    assert router.match("book it") is None


def test_keyword_route_wins_over_an_intent_even_listed_after_it() -> None:
    router = Router(
        [intent("book", 0, "book_visit"), kw("status", 1, "status")],
        classifier=StubClassifier([("book_visit", 0.99)]),
    )
    found = router.match("status of my visit")
    assert found is not None
    assert found.route.name == "status"
    assert found.kind == "keyword"


def test_pattern_route_wins_over_an_intent_even_listed_after_it() -> None:
    router = Router(
        [intent("book", 0, "book_visit"), pat("ticket", 1, r"ticket (?P<id>\d+)")],
        classifier=StubClassifier([("book_visit", 0.99)]),
    )
    assert winner(router, "book ticket 9") == "ticket"


def test_explain_reports_intent_scores_and_lists_the_intent_after_keywords() -> None:
    scores = [("book_visit", 0.9), ("cancel", 0.05)]
    router = Router(
        [intent("book", 0, "book_visit"), kw("status", 1, "status")],
        classifier=StubClassifier(scores),
    )
    explanation = router.explain("status of my booking")
    assert explanation.intent_scores == tuple(scores)
    assert [(c.route.name, c.kind) for c in explanation.candidates] == [
        ("status", "keyword"),
        ("book", "intent"),
    ]
    assert explanation.winner is not None
    assert explanation.winner.route.name == "status"


def test_classifier_is_not_consulted_without_intent_routes() -> None:
    classifier = StubClassifier([("book_visit", 0.99)])
    router = Router([kw("status", 0, "status")], classifier=classifier)
    assert router.match("book a visit") is None
    assert classifier.asked == []


def test_match_values_are_what_a_handler_sees() -> None:
    found: Match | None = Router([kw("eta", 0, "eta")]).match("ETA?")
    assert found is not None
    assert dict(found.values) == {"keyword": "eta"}
