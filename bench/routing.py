"""Routing benchmark: what one `Router.match()` costs as the number of routes grows.

Run with `python bench/routing.py` (inside the project's venv). Not a test: it prints
figures, it asserts nothing about speed.

Routers measured, each over the same fixed corpus of realistic group messages:

- 1, 100 and 10,000 keyword routes, two keywords each (a word and a two-word phrase);
  route 0 has real keywords ("status", "where are you"), the others generated pseudo-words;
- 1,000 pattern routes (`^WORD\\s*#?(?P<id>\\d+)`, like the shipped `ticket` route).

The corpus mixes messages that match route 0, messages that carry a keyword of a random
generated route (so they match only in routers large enough to hold it), messages that
match the first pattern route, and messages that match nothing.

Each router is timed over the whole corpus with `time.perf_counter`, several times, with
the garbage collector paused; the best run is reported as microseconds per message.
"""

from __future__ import annotations

import gc
import platform
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.routing import Route, Router, words

SEED = 20251003
CORPUS_SIZE = 2_000
KEYWORD_ROUTE_COUNTS = (1, 100, 10_000)
PATTERN_ROUTE_COUNT = 1_000
REPEATS = 7

CONSONANTS = "bdfgklmnprstvwxz"
VOWELS = "aeiou"

# Pieces of the messages a support agent, a field technician, their clients and a small team
# write to each other.
OPENERS = (
    "Hi all",
    "Morning",
    "Hey",
    "Quick question",
    "Thanks",
    "OK",
    "Sorry for the delay",
    "Good news",
    "Heads up",
    "FYI",
    "",
)
BODIES = (
    "the water heater is still leaking under the sink",
    "can someone confirm the appointment for tomorrow morning",
    "I sent the photos of the damage yesterday",
    "the invoice number is on the top right corner",
    "we need the replacement part before Friday",
    "my daughter will be home to let you in",
    "the gate code is 4512, please ring twice",
    "the new schedule is in the shared folder",
    "I moved the meeting to 3pm, same room",
    "customer says the noise started after the last visit",
    "parking is available behind the building",
    "the router keeps dropping the connection every hour",
    "please bring the ladder, the unit is on the roof",
    "I'll call the supplier and get back to you",
    "the dog is friendly but stays in the yard",
    "payment went through this morning",
    "the technician left a note on the door",
    "can we do the review after lunch instead",
    "I'm stuck in traffic on the highway",
    "the warranty covers labour but not the part",
)
CLOSERS = (
    "Thanks!",
    "Cheers",
    "👍",
    "Let me know.",
    "Talk soon",
    "??",
    "...",
    "",
    "",
)
ROUTE0_KEYWORDS = ("status", "where are you")
ROUTE0_MESSAGES = (
    "What's the status on this?",
    "Where ARE you?? We've been waiting since 9",
    "any status update from the supplier",
    "hey where are you, the client is asking",
)
TICKET_MESSAGES = (
    "ticket #4521 is still open",
    "Ticket 88 closed, thanks everyone",
    "ticket 1200 needs a second visit",
)


@dataclass(frozen=True)
class Result:
    label: str
    routes: int
    matched: float
    micros: float


def pseudo_words(count: int, rng: random.Random, avoid: set[str]) -> list[str]:
    """`count` distinct made-up words (e.g. 'kavoru'), none of them in `avoid`."""
    found: dict[str, None] = {}
    while len(found) < count:
        syllables = rng.randint(3, 4)
        word = "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(syllables))
        if word not in avoid:
            found[word] = None
    return list(found)


def keyword_routes(generated: Sequence[str], count: int) -> list[Route]:
    """Route 0 with real keywords, then routes of a word and a two-word phrase each."""
    routes = [Route("route0", 0, template="t.j2", keywords=ROUTE0_KEYWORDS)]
    for index in range(1, count):
        word, first, second = generated[3 * index : 3 * index + 3]
        routes.append(
            Route(f"route{index}", index, template="t.j2", keywords=(word, f"{first} {second}"))
        )
    return routes


def pattern_routes(generated: Sequence[str], count: int) -> list[Route]:
    """Route 0 like the shipped `ticket` route, then one generated word per route."""
    heads = ["ticket", *generated[: count - 1]]
    return [
        Route(
            f"pattern{index}",
            index,
            template="t.j2",
            pattern=re.compile(rf"^{head}\s*#?(?P<id>\d+)", re.IGNORECASE),
        )
        for index, head in enumerate(heads)
    ]


def chatter(rng: random.Random) -> str:
    parts = [rng.choice(OPENERS), rng.choice(BODIES)]
    if rng.random() < 0.3:
        parts.append(rng.choice(BODIES))
    parts.append(rng.choice(CLOSERS))
    return " ".join(p for p in parts if p)


def corpus(rng: random.Random, generated: Sequence[str], routes: int) -> list[str]:
    """CORPUS_SIZE messages: about 20% route 0, 20% a generated keyword, 10% a ticket."""
    messages: list[str] = []
    for _ in range(CORPUS_SIZE):
        roll = rng.random()
        if roll < 0.2:
            messages.append(rng.choice(ROUTE0_MESSAGES))
        elif roll < 0.4:
            index = rng.randrange(1, routes)
            word, first, second = generated[3 * index : 3 * index + 3]
            keyword = word if rng.random() < 0.5 else f"{first.upper()} {second}"
            messages.append(f"{chatter(rng)} {keyword}?")
        elif roll < 0.5:
            messages.append(rng.choice(TICKET_MESSAGES))
        else:
            messages.append(chatter(rng))
    return messages


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` runs of `run`, with the garbage collector paused."""
    best = float("inf")
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
    finally:
        if enabled:
            gc.enable()
    return best


def measure(label: str, router: Router, messages: Sequence[str]) -> Result:
    match = router.match

    def run() -> int:
        hits = 0
        for text in messages:
            if match(text) is not None:
                hits += 1
        return hits

    matched = run() / len(messages)  # also warms up caches before timing
    seconds = best_seconds(run, REPEATS)
    return Result(label, len(router.routes), matched, seconds / len(messages) * 1e6)


def main() -> None:
    rng = random.Random(SEED)
    vocabulary = {
        word
        for text in (*OPENERS, *BODIES, *CLOSERS, *ROUTE0_MESSAGES, *TICKET_MESSAGES)
        for word in words(text)
    }
    largest = max(KEYWORD_ROUTE_COUNTS)
    generated = pseudo_words(3 * largest, rng, vocabulary)
    messages = corpus(rng, generated, largest)

    routers = [
        (f"{n:,} keyword route{'s' if n > 1 else ''}", Router(keyword_routes(generated, n)))
        for n in KEYWORD_ROUTE_COUNTS
    ]
    routers.append(
        (
            f"{PATTERN_ROUTE_COUNT:,} pattern routes",
            Router(pattern_routes(generated, PATTERN_ROUTE_COUNT)),
        )
    )
    results = [measure(label, router, messages) for label, router in routers]

    average_words = sum(len(words(m)) for m in messages) / len(messages)
    print(
        f"Router.match() over {len(messages):,} messages ({average_words:.1f} words on average), "
        f"best of {REPEATS} runs, Python {platform.python_version()}"
    )
    print(f"{'router':<24}{'matched':>9}{'µs/message':>13}{'vs 1 route':>12}")
    baseline = results[0].micros
    for result in results:
        print(
            f"{result.label:<24}{result.matched:>9.1%}{result.micros:>13.2f}"
            f"{result.micros / baseline:>11.2f}x"
        )


if __name__ == "__main__":
    main()
