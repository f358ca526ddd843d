"""Small pieces every endpoint shares: typed app keys and problem-document answers."""

from __future__ import annotations

from aiohttp import web

from bot.exceptions import InvalidInput
from bot.runtime import Runtime

RUNTIME = web.AppKey("runtime", Runtime)

PROBLEM_TYPE = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: object) -> web.Response:
    """An RFC 7807 problem document, the format the Messages API itself answers with."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return web.json_response(body, status=status, content_type=PROBLEM_TYPE)


def invalid(exc: InvalidInput, title: str = "Invalid request body") -> web.Response:
    """400 naming the field: `{"field": "mms.participants[1]", "detail": "..."}`."""
    return problem(400, title, str(exc), field=exc.field)
