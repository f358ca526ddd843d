"""Signed webhooks and hostile requests: every refusal answers clearly and leaves no trace."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest

from bot.exceptions import BadSignature, Unsigned
from bot.security import WebhookVerifier
from tests.conftest import DATA, SIGNATURE_SECRET, Harness, inbound, signed

StartBot = Callable[..., Awaitable[Harness]]
SEED = ["11234567891", "11234567892", "11234567893"]


def body_of(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def counts(bot: Harness) -> tuple[int, int, int]:
    """Rows in inbound, outbound and statuses: all zero means nothing was kept."""
    with sqlite3.connect(bot.bot.config.sqlite_path) as db:
        return tuple(
            db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in ("inbound", "outbound", "statuses")
        )


async def post(bot: Harness, path: str, data: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    response = await bot.client.post(path, data=data, headers=headers)
    return response.status, await response.json()


@pytest.mark.parametrize("path", ["/webhooks/inbound", "/webhooks/status"])
async def test_an_unsigned_webhook_is_503_so_vonage_retries_and_nothing_is_kept(
    start_bot: StartBot, path: str
) -> None:
    bot = await start_bot()
    data = body_of(inbound(SEED[0], "ticket 42", SEED[1:]))

    status, problem = await post(bot, path, data, {"Content-Type": "application/json"})

    assert (status, problem["title"]) == (503, "Unsigned webhook")
    assert counts(bot) == (0, 0, 0)
    assert bot.api.attempts == []


def forged(data: bytes, **changes: Any) -> dict[str, str]:
    """Headers whose token is wrong in one way: another secret, claims changed or removed."""
    secret = changes.pop("secret", SIGNATURE_SECRET)
    algorithm = changes.pop("algorithm", "HS256")
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(data).hexdigest(),
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value
    token = jwt.encode(claims, secret, algorithm=algorithm)
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"secret": "not-the-secret-at-all-0123456789ab"}, "signature does not match"),
        ({"payload_hash": hashlib.sha256(b"another body").hexdigest()}, "payload_hash"),
        ({"iat": int(time.time()) - 3600}, "over 300 s"),
        ({"iat": int(time.time()) + 3600}, "issued in the future"),
        ({"jti": None}, "Missing claim: 'jti'"),
        ({"payload_hash": None}, "Missing claim: 'payload_hash'"),
        ({"iat": None}, "Missing claim: 'iat'"),
        ({"algorithm": "HS512"}, "alg"),
    ],
)
async def test_a_wrong_signature_is_401_and_nothing_is_kept(
    start_bot: StartBot, changes: dict[str, Any], reason: str
) -> None:
    bot = await start_bot()
    data = body_of(inbound(SEED[0], "ticket 42", SEED[1:]))

    status, problem = await post(bot, "/webhooks/inbound", data, forged(data, **changes))

    assert (status, problem["title"]) == (401, "Invalid signature")
    assert reason.lower() in problem["detail"].lower()
    assert counts(bot) == (0, 0, 0)


async def test_a_tampered_body_is_refused(start_bot: StartBot) -> None:
    bot = await start_bot()
    data = body_of(inbound(SEED[0], "ticket 42", SEED[1:]))
    headers = signed(data)

    status, problem = await post(bot, "/webhooks/inbound", data.replace(b"42", b"99"), headers)

    assert status == 401
    assert problem["detail"] == "payload_hash does not match the body"
    assert counts(bot) == (0, 0, 0)


@pytest.mark.parametrize("path", ["/webhooks/inbound", "/webhooks/status"])
async def test_a_replayed_token_is_refused_even_for_a_new_body(
    start_bot: StartBot, path: str
) -> None:
    bot = await start_bot()
    if path == "/webhooks/inbound":
        data = body_of(inbound(SEED[0], "no route here", SEED[1:]))
    else:
        data = (DATA / "vonage" / "message-status-mms.submitted.example.json").read_bytes()
    headers = signed(data)

    first, _ = await post(bot, path, data, headers)
    again, problem = await post(bot, path, data, headers)

    assert (first, again) == (200, 401)
    assert problem["detail"].endswith("was used before")
    assert sum(counts(bot)) == 1


async def test_vonage_retrying_with_a_fresh_token_is_a_duplicate_not_a_replay(
    start_bot: StartBot,
) -> None:
    bot = await start_bot()
    data = body_of(inbound(SEED[0], "no route here", SEED[1:]))

    first = await post(bot, "/webhooks/inbound", data, signed(data))
    retry = await post(bot, "/webhooks/inbound", data, signed(data))

    assert (first[0], retry[0]) == (200, 200)
    assert (first[1]["duplicate"], retry[1]["duplicate"]) == (False, True)


async def test_the_docs_sample_claims_are_what_is_checked(start_bot: StartBot) -> None:
    bot = await start_bot()
    sample = json.loads((DATA / "vonage" / "signed-webhook-jwt.docs-sample.json").read_text())
    data = body_of(inbound(SEED[0], "no route here", SEED[1:]))
    # The docs' claims, with a fresh iat and this body's hash (the sample's body is unknown).
    claims = {
        **sample["payload"],
        "iat": int(time.time()),
        "payload_hash": hashlib.sha256(data).hexdigest(),
    }
    token = jwt.encode(claims, SIGNATURE_SECRET, algorithm=sample["header"]["alg"])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    assert (await post(bot, "/webhooks/inbound", data, headers))[0] == 200


async def test_verification_switched_off_accepts_unsigned_webhooks(start_bot: StartBot) -> None:
    bot = await start_bot({"provider": {"verify_signatures": False}})
    data = body_of(inbound(SEED[0], "no route here", SEED[1:]))

    status, _ = await post(bot, "/webhooks/inbound", data, {"Content-Type": "application/json"})

    assert status == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_a_wrong_content_type_is_415(start_bot: StartBot, content_type: str) -> None:
    bot = await start_bot()
    data = body_of(inbound(SEED[0], "ticket 42", SEED[1:]))
    headers = {**signed(data), "Content-Type": content_type}

    status, problem = await post(bot, "/webhooks/inbound", data, headers)

    assert status == 415
    assert problem["detail"] == f"expected Content-Type: application/json, got {content_type}"
    assert counts(bot) == (0, 0, 0)


async def test_an_oversized_body_is_413(start_bot: StartBot) -> None:
    bot = await start_bot({"server": {"max_body_bytes": 4096}})
    data = body_of(inbound(SEED[0], "x" * 5000, SEED[1:]))

    status, problem = await post(bot, "/webhooks/inbound", data, signed(data))

    assert status == 413
    assert problem["detail"] == "expected at most 4096 bytes"
    assert counts(bot) == (0, 0, 0)


async def test_a_group_over_the_size_limit_is_refused(start_bot: StartBot) -> None:
    bot = await start_bot({"bot": {"max_group_size": 3}})
    four = [*SEED, "11234567894"]

    response = await bot.post_inbound(inbound(four[0], "ticket 42", four[1:]))

    assert response.status == 400
    problem = await response.json()
    assert problem["field"] == "mms.participants"
    assert problem["detail"].endswith("expected a group of at most 3 members, got 4")
    assert counts(bot) == (0, 0, 0)


def test_the_verifier_tells_missing_from_wrong() -> None:
    verifier = WebhookVerifier("secret-0123456789-0123456789-0123")
    with pytest.raises(Unsigned):
        verifier.verify(b"{}", None)
    with pytest.raises(Unsigned):
        verifier.verify(b"{}", "Basic abc")
    with pytest.raises(BadSignature):
        verifier.verify(b"{}", "Bearer not.a.jwt")
    assert verifier.verify(b"{}", verifier.sign(b"{}")).jti


def test_a_payload_hash_with_non_ascii_characters_is_refused_not_a_crash() -> None:
    verifier = WebhookVerifier(SIGNATURE_SECRET)
    token = jwt.encode(
        {"iat": int(time.time()), "jti": "j", "payload_hash": "é"},
        SIGNATURE_SECRET,
        algorithm="HS256",
    )
    with pytest.raises(BadSignature, match="payload_hash does not match"):
        verifier.verify(b"{}", f"Bearer {token}")


def unsigned_token(header: object, claims: object) -> str:
    """A token of any shape, with a signature that cannot be right: what anyone can send."""

    def segment(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"Bearer {segment(header)}.{segment(claims)}.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "HS256", "crit": 5},
        {"alg": "HS256", "crit": None},
        {"alg": "HS256", "crit": [[1]]},
        ["alg"],
        "alg",
        {"alg": ["HS256"]},
        {"alg": None},
    ],
)
def test_a_token_of_any_shape_is_refused_not_a_crash(header: object) -> None:
    verifier = WebhookVerifier(SIGNATURE_SECRET)
    with pytest.raises(BadSignature):
        verifier.verify(b"{}", unsigned_token(header, {"iat": 1, "jti": "j"}))


def test_bytes_that_are_not_text_in_the_header_are_refused_not_a_crash() -> None:
    # aiohttp hands a header's stray bytes over as surrogates.
    verifier = WebhookVerifier(SIGNATURE_SECRET)
    with pytest.raises(BadSignature):
        verifier.verify(b"{}", "Bearer \udc80.e30.e30")


def test_a_header_parameter_vonage_might_add_is_let_through() -> None:
    verifier = WebhookVerifier(SIGNATURE_SECRET)
    claims = {
        "iat": int(time.time()),
        "jti": "j",
        "payload_hash": hashlib.sha256(b"{}").hexdigest(),
    }
    token = jwt.encode(claims, SIGNATURE_SECRET, algorithm="HS256", headers={"kid": "2026-11"})
    assert verifier.verify(b"{}", f"Bearer {token}").jti == "j"


@pytest.mark.parametrize("iat", ["-1e400", "1e400", "NaN"])
def test_an_iat_out_of_any_range_is_refused_not_a_crash(iat: str) -> None:
    verifier = WebhookVerifier(SIGNATURE_SECRET)
    digest = hashlib.sha256(b"{}").hexdigest()
    payload = f'{{"iat": {iat}, "jti": "j", "payload_hash": "{digest}"}}'.encode()
    token = jwt.api_jws.encode(payload, SIGNATURE_SECRET, algorithm="HS256")
    with pytest.raises(BadSignature):
        verifier.verify(b"{}", f"Bearer {token}")
