"""`groupbot intents eval`: how well the intents' examples teach the classifier.

Trains on the examples, classifies every line of a JSONL file (`{"text": ..., "intent": NAME or
null}`, null meaning out of scope) and reports in-scope accuracy (right intent, confident
enough), out-of-scope recall (no intent confident enough), the worst intents, the most common
confusions, and the time one classification takes.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.exceptions import InvalidInput
from bot.intents import IntentClassifier
from bot.models import invalid_input
from bot.wording import counted

OUT_OF_SCOPE = "(out of scope)"
MISTAKES_SHOWN = 20  # lines listed with their text: enough to see what the examples miss
BAD_LINES_SHOWN = 20  # of a data file's unusable lines, those named in the error


class Labelled(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    intent: str | None


@dataclass(frozen=True)
class Report:
    in_scope_accuracy: float  # percent
    oos_recall: float  # percent; 0 when the data has no out-of-scope line
    threshold: float
    train_seconds: float
    latency_ms_median: float
    intents: int
    examples: int
    in_scope_lines: int
    oos_lines: int
    worst_intents: list[tuple[str, float, int]]  # (intent, accuracy %, lines)
    confusions: list[tuple[str, str, int]]  # (expected, predicted, count)
    mistakes: int  # lines answered otherwise than labelled
    first_mistakes: list[tuple[str, str, str]]  # (text, expected, predicted): what to fix

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def as_text(self) -> str:
        lines = [
            f"trained on {counted(self.examples, 'example')} of "
            f"{counted(self.intents, 'intent')} in {self.train_seconds:.2f} s",
            f"in-scope accuracy   {self.in_scope_accuracy:6.2f} %  "
            f"({counted(self.in_scope_lines, 'line')})",
            f"out-of-scope recall {self.oos_recall:6.2f} %  ({counted(self.oos_lines, 'line')})",
            f"threshold           {self.threshold:6.2f}",
            f"latency (median)    {self.latency_ms_median:6.3f} ms per message",
            "worst intents:",
            *(f"  {name:<28} {acc:6.2f} % of {n}" for name, acc, n in self.worst_intents),
            "most confused (expected -> predicted):",
            *(f"  {a} -> {b}: {n}" for a, b, n in self.confusions),
        ]
        if self.mistakes:
            shown = len(self.first_mistakes)
            more = f" (the first {shown})" if shown < self.mistakes else ""
            lines.append(f"answered otherwise than labelled: {self.mistakes}{more}")
            lines += [f"  {text!r}: {a} -> {b}" for text, a, b in self.first_mistakes]
        return "\n".join(lines)


def read_labelled(path: Path, known: Collection[str] | None = None) -> list[Labelled]:
    """The lines of a JSONL file; InvalidInput naming the line for a bad one, or for a line
    labelled with an intent not in `known` (a typo would otherwise read as a miss)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(str(path), f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(str(path), f"cannot read: not UTF-8 text ({exc.reason})") from None
    lines: list[Labelled] = []
    problems: list[InvalidInput] = []  # every bad line is said at once, not one per run
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            labelled = Labelled.model_validate_json(line)
        except ValidationError as exc:
            problem = invalid_input(exc)
            whole = problem.field == "(body)"  # the line itself, not one of its fields
            field = f"{path}:{number}" if whole else f"{path}:{number}: {problem.field}"
            problems.append(InvalidInput(field, problem.message))
            continue
        if known is not None and labelled.intent is not None and labelled.intent not in known:
            problems.append(
                InvalidInput(
                    f"{path}:{number}: intent",
                    f"{labelled.intent!r} is not one of the intents evaluated "
                    f"({', '.join(sorted(known))}); null means out of scope",
                )
            )
            continue
        lines.append(labelled)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        shown = [f"\n  {problem}" for problem in problems[:BAD_LINES_SHOWN]]
        more = len(problems) - len(shown)
        raise InvalidInput(
            str(path),
            f"{len(problems)} lines are not usable:{''.join(shown)}"
            + (f"\n  ... and {counted(more, 'more line')}" if more else ""),
        )
    if not lines:
        raise InvalidInput(str(path), "expected JSON lines with text and intent, found none")
    return lines


def evaluate(
    intents: Mapping[str, Sequence[str]],
    data: Sequence[Labelled],
    *,
    threshold: float,
    per_intent: Mapping[str, float | None] | None = None,
) -> Report:
    """Classify as the router would. With `per_intent` (the intent routes of a config: intent
    -> its route's own threshold, or None for the global one), an intent without a route is
    out of scope, as it is at run time; without it, every intent counts."""
    started = time.perf_counter()
    classifier = IntentClassifier.train(intents)
    train_seconds = time.perf_counter() - started
    predicted: list[str | None] = []
    timings: list[float] = []
    for line in data:
        started = time.perf_counter()
        scores = classifier.scores(line.text)
        timings.append((time.perf_counter() - started) * 1000)
        predicted.append(_decide(scores, threshold, per_intent))
    in_scope = [
        (line.intent, guess) for line, guess in zip(data, predicted, strict=True) if line.intent
    ]
    oos = [guess for line, guess in zip(data, predicted, strict=True) if line.intent is None]
    hits: dict[str, list[bool]] = {}
    for expected, guess in in_scope:
        hits.setdefault(str(expected), []).append(guess == expected)
    worst = sorted(
        ((name, 100 * sum(right) / len(right), len(right)) for name, right in hits.items()),
        key=lambda row: (row[1], row[0]),
    )[:5]
    mistakes = [
        (line.text, line.intent or OUT_OF_SCOPE, guess or OUT_OF_SCOPE)
        for line, guess in zip(data, predicted, strict=True)
        if guess != line.intent
    ]
    confusions = Counter(
        (expected, guess) for _, expected, guess in mistakes if expected != OUT_OF_SCOPE
    )
    return Report(
        in_scope_accuracy=_percent(sum(g == e for e, g in in_scope), len(in_scope)),
        oos_recall=_percent(sum(g is None for g in oos), len(oos)),
        threshold=threshold,
        train_seconds=round(train_seconds, 3),
        latency_ms_median=round(statistics.median(timings), 3),
        intents=len(intents),
        examples=sum(len(v) for v in intents.values()),
        in_scope_lines=len(in_scope),
        oos_lines=len(oos),
        worst_intents=worst,
        confusions=[(a, b, n) for (a, b), n in confusions.most_common(5)],
        mistakes=len(mistakes),
        first_mistakes=mistakes[:MISTAKES_SHOWN],
    )


def _decide(
    scores: Sequence[tuple[str, float]],
    threshold: float,
    per_intent: Mapping[str, float | None] | None,
) -> str | None:
    if not scores:
        return None
    intent, confidence = scores[0]
    if per_intent is not None:
        if intent not in per_intent:
            return None  # no route serves it: out of scope at run time
        own = per_intent[intent]
        threshold = own if own is not None else threshold
    return intent if confidence >= threshold else None


def _percent(part: int, whole: int) -> float:
    return round(100 * part / whole, 2) if whole else 0.0
