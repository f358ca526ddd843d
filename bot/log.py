"""structlog set-up: one event per stage, context bound once (message_uuid, group, route),
JSON when not on a terminal, phone numbers masked to their last four digits by default."""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from bot.config import LogSettings
from bot.numbers import mask

# A run of 7 to 15 digits standing alone: a phone number, whether it is a whole value or
# inside a sentence ("expected the bot's number 11234567890"); not part of a UUID or a word.
_NUMBER = re.compile(r"(?<![\w-])\+?\d{7,15}(?![\w-])")


def _masked(found: re.Match[str]) -> str:
    return mask(found.group())


def mask_numbers(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask every phone number in the event, however deep, to its last 4 digits."""
    for key, value in event.items():
        event[key] = _mask(value)
    return event


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return _NUMBER.sub(_masked, value)
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    return value


def log_warnings() -> None:
    """Python's warnings (a library's deprecation, PyJWT's short-key warning) as log lines of
    their own, instead of raw text among the JSON lines on stderr. For `groupbot run`."""
    warnings_log = structlog.get_logger("groupbot.warnings")

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        warnings_log.warning(
            "python_warning",
            category=category.__name__,
            text=str(message),
            at=f"{filename}:{lineno}",
        )

    warnings.showwarning = show


class _ToStructlog(logging.Handler):
    """Libraries' log records (asyncpg's, aiohttp's "Error handling request") as groupbot's
    own lines: JSON, numbers masked, their traceback in `exception`, rather than plain text
    among the JSON lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = structlog.get_logger(record.name)
            extra: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                extra["exc_info"] = record.exc_info
            level = record.levelname.lower()
            say = getattr(logger, level if level in _LEVELS else "warning")
            say(record.getMessage(), **extra)
        except Exception:  # a bad record or a broken stderr: never the caller's problem
            self.handleError(record)


_LEVELS = ("debug", "info", "warning", "error", "critical")
_HANDLER = _ToStructlog()


def _route_stdlib_logging(level: str) -> None:
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    root.setLevel(level.upper())
    # Each request's access line: groupbot's own lines already tell what a webhook became.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def configure(settings: LogSettings, *, final: bool = False) -> None:
    """Set up structlog from `settings`. `final`: this process configures logging once
    (`groupbot run`), so each logger may keep what it was bound to on first use instead of
    binding again at every call, even one its level drops (about 1 µs a call, and a bot makes
    several a message)."""
    json = settings.format == "json" or (settings.format == "auto" and not sys.stderr.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Tracebacks become text before masking, so numbers inside them are masked too.
        structlog.processors.format_exc_info,
    ]
    if settings.mask_numbers:
        processors.append(mask_numbers)
    factory: Any = structlog.PrintLoggerFactory(sys.stderr)
    if json and (stream := getattr(sys.stderr, "buffer", None)) is not None:
        # orjson and bytes straight to stderr, as structlog advises for speed: at the
        # default level a bot writes several lines a message (bench/RESULTS.md).
        processors.append(
            structlog.processors.JSONRenderer(
                serializer=orjson.dumps, option=orjson.OPT_NON_STR_KEYS
            )
        )
        factory = structlog.BytesLoggerFactory(stream)
    elif json:
        processors.append(structlog.processors.JSONRenderer(ensure_ascii=False))
    else:
        processors.append(structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[settings.level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=final,
    )
    _route_stdlib_logging(settings.level)
