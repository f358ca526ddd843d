"""Property-based fuzzing of the webhook endpoints with signatures on: generated bodies,
headers and JWTs never crash the bot, never get an unexpected 5xx, and never send anything."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SIGNATURE_SECRET, Harness, inbound, signed

StartBot = Callable[..., Awaitable[Harness]]
EXPECTED = {200, 400, 401, 413, 415, 503}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
VALID = inbound("11234567891", "ticket 42", ["11234567892", "11234567893"])
# Valid bodies with one field replaced by anything, or one field removed.
mutated = st.one_of(
    st.builds(lambda k, v: {**VALID, k: v}, st.sampled_from(sorted(VALID)), json_values),
    st.builds(lambda k: {x: y for x, y in VALID.items() if x != k}, st.sampled_from(sorted(VALID))),
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated.map(lambda v: json.dumps(v).encode()),
)
claims = st.fixed_dictionaries(
    {},
    optional={
        "iat": st.one_of(st.integers(), st.text(max_size=5), st.just(int(time.time()))),
        "jti": st.one_of(st.text(max_size=20), st.integers()),
        "payload_hash": st.text(max_size=64),
        "iss": st.text(max_size=10),
    },
)
# Printable ASCII: a client refuses control characters in headers before anything is sent.
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
authorizations = st.one_of(
    st.none(),
    header_text,
    header_text.map(lambda t: f"Bearer {t}"),
    st.builds(
        lambda c, secret, alg: "Bearer " + jwt.encode(c, secret, algorithm=alg),
        claims,
        st.sampled_from([SIGNATURE_SECRET, "another-secret-" + "x" * 60]),
        st.sampled_from(["HS256", "HS384"]),
    ),
)
content_types = st.sampled_from(["application/json", "text/plain", "", "application/xml"])


def kept(bot: Harness) -> int:
    with sqlite3.connect(bot.bot.config.sqlite_path) as db:
        return sum(
            db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in ("inbound", "outbound", "statuses")
        )


@pytest.fixture
async def quiet_bot(start_bot: StartBot) -> Harness:
    """A bot with no routes: even a valid message gets no answer, so any send is a bug."""
    return await start_bot({"routes": [], "plugins": []})


@pytest.mark.parametrize("path", ["/webhooks/inbound", "/webhooks/status"])
@FUZZ
@given(body=bodies, authorization=authorizations, content_type=content_types)
async def test_untrusted_requests_are_refused_without_a_trace(
    quiet_bot: Harness, path: str, body: bytes, authorization: str | None, content_type: str
) -> None:
    headers = {"Content-Type": content_type}
    if authorization is not None:
        headers["Authorization"] = authorization

    response = await quiet_bot.client.post(path, data=body, headers=headers)

    assert response.status in EXPECTED - {200}
    problem: dict[str, Any] = await response.json()
    if response.status == 503:
        assert problem["title"] == "Unsigned webhook"
    assert kept(quiet_bot) == 0
    assert quiet_bot.api.attempts == []


@pytest.mark.parametrize("path", ["/webhooks/inbound", "/webhooks/status"])
@FUZZ
@given(body=bodies)
async def test_signed_bodies_of_any_shape_never_crash_or_send(
    quiet_bot: Harness, path: str, body: bytes
) -> None:
    response = await quiet_bot.client.post(path, data=body, headers=signed(body))

    assert response.status in {200, 400}
    answer: dict[str, Any] = await response.json()
    if response.status == 400:
        assert answer["field"]  # names what was wrong
    assert quiet_bot.api.attempts == []


def test_a_token_for_another_body_never_verifies() -> None:
    # The property the fuzzing relies on, stated directly: payload_hash binds token to body.
    body, other = b'{"a": 1}', b'{"a": 2}'
    token = jwt.encode(
        {"iat": int(time.time()), "jti": "x", "payload_hash": hashlib.sha256(body).hexdigest()},
        SIGNATURE_SECRET,
        algorithm="HS256",
    )
    claims = jwt.decode(token, SIGNATURE_SECRET, algorithms=["HS256"])
    assert claims["payload_hash"] != hashlib.sha256(other).hexdigest()
