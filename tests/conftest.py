"""Shared fixtures: RSA keys, the fake Messages API, and a bot running on loopback.

`start_bot(...)` starts the real app (aiohttp test server on 127.0.0.1) from the shipped
config.yaml, pointed at the fake API with JWT auth and a SQLite file in tmp_path.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.app import create_app
from bot.config import Config, parse_config
from bot.core import Bot, build_bot
from bot.http import RUNTIME
from bot.runtime import Runtime
from tests.fakes import FakeMessagesApi
from tests.postgres import TemporaryPostgres

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
BOT_NUMBER = "11234567890"
APPLICATION_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
SIGNATURE_SECRET = "test-signature-secret-" + "0123456789abcdef" * 3  # 70 bytes


def signed(body: bytes, *, secret: str = SIGNATURE_SECRET, **claims: Any) -> dict[str, str]:
    """Headers of a webhook signed as Vonage signs one (HS256, payload_hash of the bytes)."""
    payload = {
        "iat": int(time.time()),
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(body).hexdigest(),
        "api_key": "a1b2c3d",
        "application_id": APPLICATION_ID,
        **claims,
    }
    token = jwt.encode(payload, secret, algorithm="HS256")
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def private_pem(rsa_key: rsa.RSAPrivateKey) -> str:
    return rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
async def fake_api(
    aiohttp_server: Callable[..., Awaitable[TestServer]], rsa_key: rsa.RSAPrivateKey
) -> FakeMessagesApi:
    api = FakeMessagesApi(public_key=rsa_key.public_key(), application_id=APPLICATION_ID)
    server = await aiohttp_server(api.app())
    api.url = str(server.make_url("")).rstrip("/")
    return api


def shipped_config() -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert isinstance(raw, dict)
    return raw


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `overrides` into a copy of `base` (mappings merge, everything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def make_config(
    tmp_path: Path, fake_api: FakeMessagesApi, private_pem: str
) -> Callable[..., Config]:
    """The shipped config, sending to the fake API with JWT auth, storing in tmp_path."""

    def make(overrides: dict[str, Any] | None = None) -> Config:
        base = merge(
            shipped_config(),
            {
                "provider": {
                    "kind": "vonage",
                    "api_url": fake_api.url,
                    "application_id": APPLICATION_ID,
                    "private_key": private_pem,
                    "signature_secret": SIGNATURE_SECRET,
                },
                "storage": {"url": f"sqlite:///{tmp_path / 'groupbot.db'}"},
                "server": {"api_token": "test-token"},
            },
        )
        return parse_config(merge(base, overrides or {}), root=ROOT)

    return make


@dataclass
class Harness:
    """A running bot, its HTTP client and the fake API it sends to."""

    client: TestClient[Any, Any]
    bot: Bot
    api: FakeMessagesApi

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.client.app[RUNTIME]
        return runtime

    async def post_inbound(self, body: dict[str, Any] | bytes) -> ClientResponse:
        """Post a webhook signed as Vonage signs it."""
        return await self.post_signed("/webhooks/inbound", body)

    async def post_status(self, body: dict[str, Any] | bytes) -> ClientResponse:
        return await self.post_signed("/webhooks/status", body)

    async def post_signed(self, path: str, body: dict[str, Any] | bytes) -> ClientResponse:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(path, data=data, headers=signed(data))


@pytest.fixture
async def start_bot(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    fake_api: FakeMessagesApi,
    make_config: Callable[..., Config],
) -> Callable[..., Awaitable[Harness]]:
    async def start(overrides: dict[str, Any] | None = None) -> Harness:
        bot = build_bot(make_config(overrides))
        client = await aiohttp_client(create_app(bot))
        return Harness(client, bot, fake_api)

    return start


def inbound(
    sender: str,
    text: str | None = "hello",
    participants: list[str] | None = None,
    *,
    message_uuid: str | None = None,
    to: str = BOT_NUMBER,
    **fields: Any,
) -> dict[str, Any]:
    """An inbound MMS webhook body as Vonage sends it."""
    body: dict[str, Any] = {
        "channel": "mms",
        "message_uuid": message_uuid or str(uuid.uuid4()),
        "to": to,
        "from": sender,
        "timestamp": "2025-10-03T12:15:25Z",
        "origin": {"network_code": "12345"},
        "message_type": "text",
    }
    if text is not None:
        body["text"] = text
    if participants is not None:
        body["mms"] = {"participants": participants}
    body.update(fields)
    return body


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 5.0, every: float = 0.02
) -> None:
    """Poll `check` until it holds; fail with a clear message when the deadline passes."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(every)


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """`eventually` for a condition that needs no awaiting."""

    async def check() -> bool:
        return condition()

    await eventually(check, within)


@pytest.fixture(scope="session")
def postgres() -> Iterator[TemporaryPostgres]:
    """One throwaway PostgreSQL server for the whole run; each test takes a new database."""
    server = TemporaryPostgres().start()
    yield server
    server.remove()
