"""bot/client.py: the Messages API client against the scripted fake API on loopback."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import structlog
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bot.client import JWT_REUSE_SECONDS, MessagesClient
from bot.config import ProviderSettings
from bot.exceptions import ConfigError, PermanentApiError, TransientApiError
from bot.models import OutboundMessage
from tests.conftest import APPLICATION_ID, DATA, ROOT
from tests.fakes import FakeMessagesApi

MakeClient = Callable[..., MessagesClient]


def fixture(name: str) -> dict[str, Any]:
    """An official Vonage fixture from tests/data/vonage."""
    loaded = json.loads((DATA / "vonage" / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def docs_message(index: int = 0) -> OutboundMessage:
    """One member's message of the docs' group-of-three example."""
    bodies = json.loads((DATA / "vonage" / "outbound-mms-group.docs-example.json").read_text())
    return OutboundMessage.model_validate(bodies[index])


def closed_port() -> int:
    """A loopback port nothing listens on: bound, read, then closed again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def make_client(private_pem: str) -> AsyncIterator[MakeClient]:
    """Build MessagesClients (JWT auth unless told otherwise); close them all afterwards."""
    clients: list[MessagesClient] = []

    def make(api_url: str, *, root: Path = ROOT, **settings: Any) -> MessagesClient:
        values: dict[str, Any] = {
            "kind": "vonage",
            "api_url": api_url,
            "application_id": APPLICATION_ID,
            "private_key": private_pem,
            "verify_signatures": False,  # the client alone: no webhooks here
        }
        values.update(settings)
        client = MessagesClient(ProviderSettings(**values), root=root)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


# -- the request ---------------------------------------------------------------------------


async def test_request_body_is_the_messages_to_api_body(
    fake_api: FakeMessagesApi, make_client: MakeClient
) -> None:
    message = docs_message(1)
    client = make_client(fake_api.url)

    await client.send(message)

    assert len(fake_api.attempts) == 1
    assert fake_api.attempts[0].body == message.to_api()
    assert fake_api.attempts[0].body == {
        "message_type": "text",
        "text": "Hello from Vonage",
        "from": "11234567890",
        "to": "11234567892",
        "mms": {"participants": ["11234567891", "11234567893"]},
        "channel": "mms",
    }


async def test_media_message_body_carries_the_media_and_no_empty_fields(
    fake_api: FakeMessagesApi, make_client: MakeClient
) -> None:
    message = OutboundMessage.model_validate(
        {
            "to": "11234567891",
            "from": "11234567890",
            "message_type": "image",
            "image": {"url": "https://example.com/van.jpg", "caption": "Our van"},
        }
    )
    client = make_client(fake_api.url)

    await client.send(message)

    assert fake_api.attempts[0].body == {
        "to": "11234567891",
        "from": "11234567890",
        "channel": "mms",
        "message_type": "image",
        "image": {"url": "https://example.com/van.jpg", "caption": "Our van"},
    }


async def test_returns_the_message_uuid_the_api_answered(
    fake_api: FakeMessagesApi, make_client: MakeClient
) -> None:
    client = make_client(fake_api.url)

    message_uuid = await client.send(docs_message())

    assert len(fake_api.accepted) == 1
    assert fake_api.accepted[0].message_uuid is not None
    assert message_uuid == fake_api.accepted[0].message_uuid


async def test_returns_the_uuid_of_the_official_202_answer(
    fake_api: FakeMessagesApi, make_client: MakeClient
) -> None:
    fake_api.respond(202, fixture("messages_tests_data_send_message_with_failover.json"))
    client = make_client(fake_api.url)

    assert await client.send(docs_message()) == "d8f86df1-dec6-442f-870a-2241be27d721"


# -- JWT and Basic auth --------------------------------------------------------------------


async def test_jwt_is_rs256_signed_with_the_application_claims(
    fake_api: FakeMessagesApi, make_client: MakeClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    client = make_client(fake_api.url)
    before = time.time()

    await client.send(docs_message())

    attempt = fake_api.attempts[0]
    assert attempt.status == 202  # the fake verified it too
    scheme, _, token = attempt.authorization.partition(" ")
    assert scheme == "Bearer"
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(
        token,
        rsa_key.public_key(),
        algorithms=["RS256"],
        options={"require": ["application_id", "iat", "exp", "jti"]},
    )
    assert claims["application_id"] == APPLICATION_ID
    assert before - 2 <= claims["iat"] <= time.time() + 1
    assert claims["iat"] < claims["exp"] <= claims["iat"] + 300
    assert claims["exp"] > time.time()


async def test_a_token_serves_a_few_seconds_of_requests_then_is_renewed(
    fake_api: FakeMessagesApi, make_client: MakeClient
) -> None:
    client = make_client(fake_api.url)

    for index in range(3):
        await client.send(docs_message(index))
    now = time.time()
    first = client.authorization(now)
    later = client.authorization(now + JWT_REUSE_SECONDS + 1)

    assert [a.status for a in fake_api.attempts] == [202, 202, 202]
    jtis = {a.claims["jti"] for a in fake_api.attempts if a.claims is not None}
    assert len(jtis) == 1  # one signature for the three
    assert later != first
    claims = jwt.decode(later.partition(" ")[2], options={"verify_signature": False})
    assert claims["iat"] == int(now + JWT_REUSE_SECONDS + 1)
    assert claims["jti"] not in jtis


async def test_jwt_signed_with_another_key_is_refused_as_permanent(
    fake_api: FakeMessagesApi, make_client: MakeClient
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    client = make_client(fake_api.url, private_key=other_pem)

    with pytest.raises(PermanentApiError) as raised:
        await client.send(docs_message())

    assert raised.value.status == 401
    assert raised.value.title == "Unauthorized"
    assert fake_api.accepted == []


async def test_basic_auth_sends_key_and_secret(
    aiohttp_server: Callable[..., Awaitable[TestServer]], make_client: MakeClient
) -> None:
    api = FakeMessagesApi(basic=("key", "secret"))
    server = await aiohttp_server(api.app())
    client = make_client(
        str(server.make_url("")).rstrip("/"),
        application_id="",
        private_key="",
        api_key="key",
        api_secret="secret",
    )

    message_uuid = await client.send(docs_message())

    assert [a.status for a in api.attempts] == [202]
    assert api.attempts[0].authorization == "Basic a2V5OnNlY3JldA=="
    assert message_uuid == api.accepted[0].message_uuid


async def test_basic_auth_with_a_wrong_secret_is_refused_as_permanent(
    aiohttp_server: Callable[..., Awaitable[TestServer]], make_client: MakeClient
) -> None:
    api = FakeMessagesApi(basic=("key", "secret"))
    server = await aiohttp_server(api.app())
    client = make_client(
        str(server.make_url("")).rstrip("/"),
        application_id="",
        private_key="",
        api_key="key",
        api_secret="wrong",
    )

    with pytest.raises(PermanentApiError) as raised:
        await client.send(docs_message())

    assert raised.value.status == 401
    assert api.accepted == []


# -- problem documents ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (401, "http_client_tests_data_401.json"),
        (402, "messages_tests_data_low_balance_error.json"),
        (403, "http_client_tests_data_403.json"),
        (404, "messages_tests_data_not_found.json"),
        (422, "messages_tests_data_invalid_error.json"),
    ],
)
async def test_4xx_problem_document_raises_permanent_error_with_title_and_detail(
    fake_api: FakeMessagesApi, make_client: MakeClient, status: int, name: str
) -> None:
    problem = fixture(name)
    fake_api.respond(status, problem)
    client = make_client(fake_api.url)

    with pytest.raises(PermanentApiError) as raised:
        await client.send(docs_message())

    error = raised.value
    assert not isinstance(error, TransientApiError)
    assert error.status == status
    assert error.title == problem["title"]
    assert error.detail == problem["detail"]
    assert problem["title"] in str(error)
    assert problem["detail"] in str(error)
    assert error.retry_after is None


async def test_429_is_transient_and_carries_retry_after(
    fake_api: FakeMessagesApi, make_client: MakeClient
) -> None:
    problem = fixture("response-429.sdk-fixture.json")
    fake_api.respond(429, problem, headers={"Retry-After": "3"})
    client = make_client(fake_api.url)

    with pytest.raises(TransientApiError) as raised:
        await client.send(docs_message())

    error = raised.value
    assert error.status == 429
    assert error.retry_after == 3.0
    assert error.title == "Rate Limit Hit"
    assert error.detail == "Please wait, then retry your request"


async def test_429_without_retry_after_has_none(
    fake_api: FakeMessagesApi, make_client: MakeClient
) -> None:
    fake_api.respond(429, fixture("http_client_tests_data_429.json"))
    client = make_client(fake_api.url)

    with pytest.raises(TransientApiError) as raised:
        await client.send(docs_message())

    assert raised.value.status == 429
    assert raised.value.retry_after is None


async def test_500_is_transient(fake_api: FakeMessagesApi, make_client: MakeClient) -> None:
    fake_api.respond(500, fixture("http_client_tests_data_500.json"))
    client = make_client(fake_api.url)

    with pytest.raises(TransientApiError) as raised:
        await client.send(docs_message())

    assert raised.value.status == 500
    assert raised.value.title == "Internal Server Error"
    assert raised.value.detail is None
    assert "Internal Server Error" in str(raised.value)


async def test_503_without_a_problem_document_is_transient(
    fake_api: FakeMessagesApi, make_client: MakeClient
) -> None:
    fake_api.respond(503, {"unexpected": "shape"})
    client = make_client(fake_api.url)

    with pytest.raises(TransientApiError) as raised:
        await client.send(docs_message())

    assert raised.value.status == 503
    assert raised.value.title is None


async def test_no_answer_within_the_timeout_is_transient(
    fake_api: FakeMessagesApi, make_client: MakeClient
) -> None:
    fake_api.respond(202, delay=1)
    client = make_client(fake_api.url, timeout_seconds=0.2)
    started = time.monotonic()

    with pytest.raises(TransientApiError) as raised:
        await client.send(docs_message())

    assert time.monotonic() - started < 0.9
    assert raised.value.status is None
    assert "0.2" in str(raised.value)


async def test_connection_refused_is_transient(make_client: MakeClient) -> None:
    client = make_client(f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(TransientApiError) as raised:
        await client.send(docs_message())

    assert raised.value.status is None
    assert "connection failed: cannot connect to 127.0.0.1:" in str(raised.value)


async def test_a_connection_closed_before_the_answer_is_transient_and_says_it_may_have_arrived(
    make_client: MakeClient,
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    client = make_client(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")

    with pytest.raises(TransientApiError) as raised:
        await client.send(docs_message())
    server.close()

    assert raised.value.status is None
    assert "closed the connection before it answered" in str(raised.value)
    assert "may have reached the API" in str(raised.value)


async def test_a_404_names_the_url_posted_to(
    fake_api: FakeMessagesApi, make_client: MakeClient
) -> None:
    client = make_client(fake_api.url + "/v2")  # the fake serves /v1/messages only

    with pytest.raises(PermanentApiError) as raised:
        await client.send(docs_message())

    assert raised.value.status == 404
    assert f"POST {fake_api.url}/v2/v1/messages: is provider.api_url right?" in str(raised.value)


async def test_the_client_keeps_working_after_a_transient_error(
    fake_api: FakeMessagesApi, make_client: MakeClient
) -> None:
    fake_api.respond(500, fixture("http_client_tests_data_500.json"))
    client = make_client(fake_api.url)

    with pytest.raises(TransientApiError):
        await client.send(docs_message())
    message_uuid = await client.send(docs_message())

    assert [a.status for a in fake_api.attempts] == [500, 202]
    assert message_uuid == fake_api.accepted[0].message_uuid


# -- the private key -----------------------------------------------------------------------


async def test_private_key_as_a_path_relative_to_root(
    fake_api: FakeMessagesApi, make_client: MakeClient, private_pem: str, tmp_path: Path
) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "application.pem").write_text(private_pem)
    client = make_client(fake_api.url, root=tmp_path, private_key="keys/application.pem")

    message_uuid = await client.send(docs_message())

    assert [a.status for a in fake_api.attempts] == [202]
    assert message_uuid == fake_api.accepted[0].message_uuid


async def test_private_key_as_an_absolute_path(
    fake_api: FakeMessagesApi, make_client: MakeClient, private_pem: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "application.pem"
    key_file.write_text(private_pem)
    client = make_client(fake_api.url, root=ROOT, private_key=str(key_file))

    await client.send(docs_message())

    assert [a.status for a in fake_api.attempts] == [202]


def test_missing_key_file_raises_config_error_naming_the_setting(
    make_client: MakeClient, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as raised:
        make_client("http://127.0.0.1:9", root=tmp_path, private_key="keys/missing.pem")

    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith("provider.private_key: ")
    assert "missing.pem" in raised.value.problems[0]


def test_an_encrypted_key_is_refused_saying_so(make_client: MakeClient, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    (tmp_path / "encrypted.pem").write_bytes(encrypted)

    with pytest.raises(ConfigError) as raised:
        make_client("http://127.0.0.1:9", root=tmp_path, private_key="encrypted.pem")

    assert raised.value.problems == [
        "provider.private_key: the key is encrypted; give it unencrypted (openssl rsa)"
    ]


@pytest.mark.parametrize(
    "value",
    [
        "not a key",
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    ],
)
def test_non_pem_private_key_raises_config_error_naming_the_setting(
    make_client: MakeClient, tmp_path: Path, value: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        make_client("http://127.0.0.1:9", root=tmp_path, private_key=value)

    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith("provider.private_key: ")


def test_key_file_that_is_not_pem_raises_config_error(
    make_client: MakeClient, tmp_path: Path
) -> None:
    (tmp_path / "application.pem").write_text("this is not a PEM file\n")

    with pytest.raises(ConfigError) as raised:
        make_client("http://127.0.0.1:9", root=tmp_path, private_key="application.pem")

    assert raised.value.problems[0].startswith("provider.private_key: not a PEM private key")


def test_non_rsa_key_raises_config_error(make_client: MakeClient) -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )

    with pytest.raises(ConfigError) as raised:
        make_client("http://127.0.0.1:9", private_key=ec_pem)

    assert raised.value.problems == ["provider.private_key: expected an RSA key (the JWT is RS256)"]


@pytest.mark.parametrize(("header", "expected"), [("inf", None), ("nan", None), ("86400", 3600.0)])
async def test_an_unreasonable_retry_after_is_bounded(
    fake_api: FakeMessagesApi, make_client: MakeClient, header: str, expected: float | None
) -> None:
    fake_api.respond(429, {"title": "Rate Limit Hit"}, headers={"Retry-After": header})
    client = make_client(fake_api.url)
    with pytest.raises(TransientApiError) as raised:
        await client.send(docs_message())
    assert raised.value.retry_after == expected


async def test_a_retry_after_given_as_an_http_date_is_the_time_until_then(
    fake_api: FakeMessagesApi, make_client: MakeClient
) -> None:
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=120)
    for header in (email.utils.format_datetime(soon, usegmt=True), "Sun, 06 Nov 1994 08:49:37 GMT"):
        fake_api.respond(429, {"title": "Rate Limit Hit"}, headers={"Retry-After": header})
    asctime = "Sun Nov  6 08:49:37 1994"  # the third form RFC 9110 has recipients read
    for header in (asctime, "soon"):
        fake_api.respond(429, {"title": "Rate Limit Hit"}, headers={"Retry-After": header})
    client = make_client(fake_api.url)

    waits = []
    for _ in range(4):
        with pytest.raises(TransientApiError) as raised:
            await client.send(docs_message())
        waits.append(raised.value.retry_after)

    assert waits[0] is not None
    assert 110 < waits[0] <= 120
    assert waits[1:] == [0.0, 0.0, None]  # dates past: at once; not a date: the backoff


async def test_an_answer_accepted_without_a_uuid_is_sent_and_says_which_message(
    fake_api: FakeMessagesApi, make_client: MakeClient
) -> None:
    fake_api.respond(202, {"status": "ok"})
    client = make_client(fake_api.url)
    message = docs_message().model_copy(update={"client_ref": "b-1/2"})

    with structlog.testing.capture_logs() as logs:
        message_uuid = await client.send(message)

    assert message_uuid is None  # accepted all the same: never sent again
    [line] = [entry for entry in logs if entry["event"] == "accepted_without_uuid"]
    assert line["client_ref"] == "b-1/2"
    assert line["to"].endswith(message.to[-4:])
    assert message.to not in str(line)
