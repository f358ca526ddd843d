"""bot/log.py: phone numbers never reach the logs whole."""

from __future__ import annotations

import io
import json
import logging
import sys
import warnings

import pytest
import structlog

import bot.log
from bot.config import LogSettings
from bot.log import configure, log_warnings, mask_numbers


def test_numbers_are_masked_as_values_inside_sentences_and_in_lists() -> None:
    event = {
        "event": "inbound_invalid",
        "to": "11234567890",
        "reason": "expected the bot's number 11234567890, got +447700900001",
        "members": ["11234567891", "11234567892"],
        "message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789fa",
        "attempts": 3,
    }

    masked = mask_numbers(None, "info", event)

    assert masked == {
        "event": "inbound_invalid",
        "to": "•••••••7890",
        "reason": "expected the bot's number •••••••7890, got •••••••••0001",
        "members": ["•••••••7891", "•••••••7892"],
        "message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789fa",
        "attempts": 3,
    }


def test_short_digit_runs_and_identifiers_are_left_alone() -> None:
    event = {"event": "x", "detail": "HTTP 429 after 120 s", "group": "g0389026ad0fb3351"}

    assert mask_numbers(None, "info", dict(event)) == event


def test_numbers_in_nested_values_are_masked() -> None:
    event = {"event": "x", "detail": {"to": "14155550123", "tries": [{"n": "+14155550123"}]}}

    masked = mask_numbers(None, "info", event)

    assert masked["detail"] == {"to": "•••••••0123", "tries": [{"n": "••••••••0123"}]}


def test_numbers_in_a_traceback_are_masked_in_json_logs(capsys: pytest.CaptureFixture[str]) -> None:
    configure(LogSettings(format="json"))
    log = structlog.get_logger("test")
    try:
        raise ValueError("no route for 14155550123")
    except ValueError:
        log.exception("handler_failed")
    finally:
        structlog.reset_defaults()  # the configuration is global: leave none behind

    line = capsys.readouterr().err
    assert "ValueError: no route for •••••••0123" in line
    assert "14155550123" not in line


def test_json_lines_keep_non_ascii_and_any_key(capsys: pytest.CaptureFixture[str]) -> None:
    configure(LogSettings(format="json"))  # bytes straight to stderr's buffer (orjson)
    try:
        structlog.get_logger("test").warning("odd", text="ça va •", counts={1: "one"})
    finally:
        structlog.reset_defaults()

    line = capsys.readouterr().err
    assert json.loads(line)["text"] == "ça va •"
    assert "ça va •" in line  # written as is, not \\u-escaped
    assert json.loads(line)["counts"] == {"1": "one"}


def test_json_lines_go_to_a_stderr_without_a_byte_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()  # an embedding application's stand-in for stderr
    monkeypatch.setattr(sys, "stderr", stream)
    configure(LogSettings(format="json"))
    try:
        structlog.get_logger("test").warning("seen", to="14155550123")
    finally:
        structlog.reset_defaults()

    assert json.loads(stream.getvalue()) | {"timestamp": "-"} == {
        "to": "•••••••0123",
        "event": "seen",
        "level": "warning",
        "timestamp": "-",
    }


def test_python_warnings_become_log_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # put back afterwards
    log_warnings()

    with structlog.testing.capture_logs() as logs:
        warnings.showwarning(UserWarning("key is short"), UserWarning, "/srv/x.py", 7)

    assert logs == [
        {
            "event": "python_warning",
            "log_level": "warning",
            "category": "UserWarning",
            "text": "key is short",
            "at": "/srv/x.py:7",
        }
    ]


def test_a_librarys_log_records_become_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure(LogSettings(format="json", level="info"))
    try:
        try:
            raise ConnectionRefusedError("connect call failed for 14155550123")
        except ConnectionRefusedError:
            logging.getLogger("asyncpg.pool").warning(
                "Failed to restore %s", "a connection", exc_info=True
            )
        logging.getLogger("aiohttp.access").info("GET / 200")  # each request: not logged
    finally:  # the configuration is global: leave none behind
        structlog.reset_defaults()
        logging.getLogger().removeHandler(bot.log._HANDLER)
    lines = capsys.readouterr().err.splitlines()

    [line] = lines  # one line, the traceback inside it
    event = json.loads(line)
    assert (event["event"], event["logger"], event["level"]) == (
        "Failed to restore a connection", "asyncpg.pool", "warning"
    )  # fmt: skip
    assert "ConnectionRefusedError" in event["exception"]
    assert "14155550123" not in line  # masked like groupbot's own


def test_a_bad_library_record_does_not_raise_in_its_caller(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure(LogSettings(format="json", level="info"))
    bad = logging.LogRecord("somelib", logging.WARNING, __file__, 1, "%d items", ("x",), None)
    try:
        bot.log._HANDLER.handle(bad)  # ours alone: pytest's own handler raises on such records
    finally:
        structlog.reset_defaults()
        logging.getLogger().removeHandler(bot.log._HANDLER)
    assert "Logging error" in capsys.readouterr().err  # said, as logging's own handlers say it
