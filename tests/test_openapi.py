"""The bot's own endpoints against their published OpenAPI description, with schemathesis
generating requests (valid and not) against a running `groupbot run`.

Webhook signatures are switched off for this bot, so that generated bodies reach the parser
and the store instead of stopping at the signature check (tests/test_fuzz.py covers that).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from tests.cli_support import environment, free_port, write_config

TOKEN = "schemathesis-token"


@pytest.fixture(scope="module")
def bot_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("openapi")
    config = write_config(
        folder,
        {
            "provider": {"kind": "simulator", "verify_signatures": False},
            "server": {"api_token": TOKEN},
            "log": {"level": "warning", "format": "json"},
        },
    )
    port = free_port()
    log = (folder / "run.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - our own command
        [sys.executable, "-m", "bot", "run", "--config", str(config), "--port", str(port)],
        cwd=folder,
        env=environment(),
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, process, folder / "run.log")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def wait_up(url: str, process: subprocess.Popen[bytes], log: Path, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while True:
        if process.poll() is not None:
            pytest.fail(f"groupbot run exited early:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"/healthz not 200 within {within} s:\n{log.read_text()}")
        time.sleep(0.05)


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_every_endpoint_keeps_to_its_description(
    bot_url: str, mode: schemathesis.GenerationMode
) -> None:
    # Each operation's generated cases (valid ones, then ones that break the schema), run with
    # hypothesis directly: schemathesis's pytest plugin does not load under this pytest.
    schema = schemathesis.openapi.from_url(bot_url + "/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the description itself must be valid
        operations.append(result.ok())
    assert {op.path for op in operations} >= {
        "/webhooks/inbound",
        "/api/messages",
        "/simulator/messages",
        "/simulator/groups",
        "/simulator/groups/{key}",
    }
    if mode is schemathesis.GenerationMode.NEGATIVE:  # a GET without input has no bad input
        operations = [op for op in operations if op.method.upper() == "POST"]
    statuses: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def keeps_to_it(case: schemathesis.Case[Any]) -> None:
            response = case.call_and_validate(
                base_url=bot_url,
                headers={"Authorization": f"Bearer {TOKEN}"},
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    content_type_conformance,
                    response_schema_conformance,
                ],
            )
            statuses.append(response.status_code)

        keeps_to_it()

    assert len(statuses) >= 5 * len(operations)  # it did call the bot, many times
    assert all(status < 500 for status in statuses)
    if mode is schemathesis.GenerationMode.NEGATIVE:
        assert 400 in statuses  # bodies that break the schema are refused, naming the field
