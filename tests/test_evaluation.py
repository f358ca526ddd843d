"""bot/evaluation.py and `groupbot intents eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.evaluation import Labelled, evaluate, read_labelled
from bot.exceptions import InvalidInput
from tests.cli_support import write_config
from tests.test_cli import groupbot
from tests.test_intents import INTENTS

DATA = [
    Labelled(text="can a technician come on monday", intent="book_visit"),
    Labelled(text="what time do you open", intent="opening_hours"),
    Labelled(text="schedule a repair please", intent="book_visit"),
    Labelled(text="thanks, see you later", intent=None),
]


def test_evaluate_reports_accuracy_recall_and_timing() -> None:
    report = evaluate(INTENTS, DATA, threshold=0.4)

    assert (report.in_scope_lines, report.oos_lines) == (3, 1)
    assert report.in_scope_accuracy == 100.0
    assert report.oos_recall == 100.0
    assert report.threshold == 0.4
    assert report.latency_ms_median > 0
    assert report.intents == 2
    assert "in-scope accuracy" in report.as_text()


def test_a_threshold_of_one_sends_everything_out_of_scope() -> None:
    report = evaluate(INTENTS, DATA, threshold=1.0)

    assert report.in_scope_accuracy == 0.0
    assert report.oos_recall == 100.0
    assert report.confusions[0][1] == "(out of scope)"
    # Each line answered otherwise, with its text: what the examples need to cover.
    assert report.mistakes == 3
    assert report.first_mistakes == [
        ("can a technician come on monday", "book_visit", "(out of scope)"),
        ("what time do you open", "opening_hours", "(out of scope)"),
        ("schedule a repair please", "book_visit", "(out of scope)"),
    ]
    assert "answered otherwise than labelled: 3\n" in report.as_text() + "\n"
    assert "  'what time do you open': opening_hours -> (out of scope)" in report.as_text()


def test_a_report_lists_the_first_mistakes_and_says_how_many_more() -> None:
    data = [Labelled(text=f"thanks {n}", intent="book_visit") for n in range(25)]

    report = evaluate(INTENTS, data, threshold=0.4)

    assert report.mistakes == 25
    assert len(report.first_mistakes) == 20
    assert "answered otherwise than labelled: 25 (the first 20)" in report.as_text()


@pytest.mark.parametrize(
    ("line", "field"),
    [('{"text": 3}', ":2: text"), ('["not", "an", "object"]', ":2")],  # a field; the line
)
def test_a_bad_line_is_named(tmp_path: Path, line: str, field: str) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "hi", "intent": null}\n' + line + "\n")

    with pytest.raises(InvalidInput) as raised:
        read_labelled(data)

    assert raised.value.field == f"{data}{field}"


def test_a_label_that_is_not_an_intent_is_named(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "hi", "intent": null}\n{"text": "book it", "intent": "bok"}\n')

    with pytest.raises(InvalidInput) as raised:
        read_labelled(data, known=INTENTS)

    assert raised.value.field == f"{data}:2: intent"
    assert "'bok' is not one of the intents evaluated (book_visit, opening_hours)" in str(
        raised.value
    )


def test_every_bad_line_is_named_at_once(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    good = '{"text": "hi", "intent": null}'
    data.write_text("\n".join([good, '["a list"]', good, '{"text": "x", "intent": "bok"}']))

    with pytest.raises(InvalidInput) as raised:
        read_labelled(data, known=INTENTS)

    assert raised.value.field == str(data)
    assert raised.value.message.splitlines() == [
        "2 lines are not usable:",
        f"  {data}:2: expected a JSON object",
        f"  {data}:4: intent: 'bok' is not one of the intents evaluated "
        "(book_visit, opening_hours); null means out of scope",
    ]


def test_past_twenty_bad_lines_the_rest_are_counted(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(["[]"] * 25))

    with pytest.raises(InvalidInput) as raised:
        read_labelled(data)

    lines = raised.value.message.splitlines()
    assert lines[0] == "25 lines are not usable:"
    assert len(lines) == 1 + 20 + 1
    assert lines[-1] == "  ... and 5 more lines"


async def test_a_missing_data_file_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    result = await groupbot(
        "intents", "eval", "--config", config, "--data", tmp_path / "nope.jsonl", cwd=tmp_path
    )

    assert result.code == 2, result.err
    assert "nope.jsonl: cannot read: No such file or directory" in result.err
    assert "Traceback" not in result.err


async def test_the_command_prints_one_json_object(tmp_path: Path) -> None:
    intents = tmp_path / "intents.yaml"
    intents.write_text(
        "intents:\n"
        + "".join(
            f"  {name}:\n    examples:\n" + "".join(f"      - {e!r}\n" for e in examples)
            for name, examples in INTENTS.items()
        )
        + "  yes:\n    examples: ['yes please', 'sure thing', 'absolutely']\n"
    )
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(line.model_dump()) + "\n" for line in DATA))
    config = write_config(tmp_path)

    result = await groupbot(
        "intents", "eval", "--config", config, "--intents", intents, "--data", data, "--json",
        cwd=tmp_path,
    )  # fmt: skip

    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["intents"] == 3  # `yes` stays an intent named yes, not a boolean
    assert {"in_scope_accuracy", "oos_recall", "threshold", "train_seconds"} <= set(report)
    assert report["in_scope_accuracy"] == 100.0
    assert report["latency_ms_median"] > 0


def test_the_config_s_routes_are_judged_as_the_router_judges_them() -> None:
    routed_only_booking = evaluate(INTENTS, DATA, threshold=0.4, per_intent={"book_visit": None})
    strict_booking = evaluate(
        INTENTS, DATA, threshold=0.4, per_intent={"book_visit": 1.0, "opening_hours": None}
    )

    # opening_hours has no route: its line is out of scope at run time, so it counts as wrong.
    assert routed_only_booking.in_scope_accuracy == round(100 * 2 / 3, 2)
    # book_visit's route asks for full confidence: its two lines fall out of scope.
    assert strict_booking.in_scope_accuracy == round(100 * 1 / 3, 2)
