"""bot.transport: kept-alive POSTs to one origin, against real servers on loopback."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bot.transport import MAX_ANSWER_BYTES, NoAnswer, Origin
from tests.conftest import until

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
HEADERS = {"Content-Type": "application/json"}


class RawServer:
    """A loopback TCP server running `serve` on each connection; it counts connections, and
    remembers how many were open at once."""

    def __init__(self, serve: Serve) -> None:
        self.serve = serve
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.closed = asyncio.Event()  # set whenever a connection ends
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await self.serve(reader, writer)
        finally:
            self.open_now -= 1
            self._writers.discard(writer)
            writer.close()
            self.closed.set()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body; (b"", b"") once the client has closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b"", b""
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


def answering(*answers: bytes) -> Serve:
    """Answer each request on a connection with the next of `answers` (the last one again
    once they run out) until the client closes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in range(10_000):
            head, _ = await read_request(reader)
            if not head:
                return
            writer.write(answers[min(i, len(answers) - 1)])
            await writer.drain()

    return serve


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Serve], Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def start(serve: Serve) -> RawServer:
        server = RawServer(serve)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


# -- the request and the answer ------------------------------------------------------------


async def test_a_post_carries_the_head_and_body_and_returns_status_headers_and_body() -> None:
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def messages(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, dict(request.headers), await request.read()))
        return web.json_response({"ok": True}, status=202, headers={"Retry-After": "7"})

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    async with TestServer(app, host="127.0.0.1") as server:
        host = f"127.0.0.1:{server.port}"
        origin = Origin(str(server.make_url("/")), timeout_seconds=5)
        head = origin.head("/v1/messages", {"Authorization": "Bearer t", **HEADERS})
        answer = await origin.post(head, b'{"text": "hi"}')
        await origin.close()

    assert answer.status == 202
    assert answer.headers["retry-after"] == "7"
    assert answer.body == b'{"ok": true}'
    method, path, headers, body = seen[0]
    assert (method, path, body) == ("POST", "/v1/messages", b'{"text": "hi"}')
    assert headers["Authorization"] == "Bearer t"
    assert headers["Host"] == host
    assert headers["Content-Length"] == "14"


async def test_a_chunked_answer_is_read_whole(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    server = await raw_server(answering(chunked))
    origin = Origin(server.url, timeout_seconds=5)

    answer = await origin.post(origin.head("/", HEADERS), b"{}")
    await origin.close()

    assert (answer.status, answer.body) == (200, b"hello world")


async def test_an_interim_answer_is_followed_by_the_real_one(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    server = await raw_server(answering(b"HTTP/1.1 100 Continue\r\n\r\n" + ACCEPTED))
    origin = Origin(server.url, timeout_seconds=5)

    answer = await origin.post(origin.head("/", HEADERS), b"{}")
    await origin.close()

    assert (answer.status, answer.body) == (202, b"{}")


UVLOOP_SCRIPT = """
import asyncio, uvloop
from bot.transport import Origin

async def serve(reader, writer):
    while await reader.readuntil(b"\\r\\n\\r\\n") and await reader.readexactly(2):
        writer.write(ANSWER)

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    origin = Origin(f"http://127.0.0.1:{port}", timeout_seconds=5)
    head = origin.head("/", {})
    print((await origin.post(head, b"{}")).status, (await origin.post(head, b"{}")).status)
    await origin.close()

uvloop.run(main())
""".replace("ANSWER", repr(ACCEPTED))


def test_a_post_works_on_uvloop_as_groupbot_run_has_it() -> None:
    # In a process of its own: a transport that fails on uvloop may leave its loop hung.
    run = subprocess.run(  # noqa: S603 - our own snippet
        [sys.executable, "-c", UVLOOP_SCRIPT], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["202", "202"]


@pytest.mark.parametrize(
    "answer",
    [
        b'HTTP/1.0 202 Accepted\r\n\r\n{"message_uuid": "x"}',
        b'HTTP/1.1 202 Accepted\r\nConnection: close\r\n\r\n{"message_uuid": "x"}',
    ],
)
async def test_an_answer_without_a_length_ends_when_the_server_closes(
    raw_server: Callable[[Serve], Awaitable[RawServer]], answer: bytes
) -> None:
    async def close_after(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    server = await raw_server(close_after)
    origin = Origin(server.url, timeout_seconds=5)

    got = await origin.post(origin.head("/", HEADERS), b"{}")
    await origin.close()

    assert (got.status, got.body) == (202, b'{"message_uuid": "x"}')


async def test_bytes_after_an_answer_are_never_taken_for_the_next_one(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    first = b"HTTP/1.1 429 Too Many\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
    stray = b"HTTP/1.1 400 Bad\r\nRetry-After: 86400\r\nContent-Len"  # half an answer
    answers = iter([first + stray, ACCEPTED])

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await read_request(reader))[0]:
            writer.write(next(answers))
            await writer.drain()

    server = await raw_server(serve)
    origin = Origin(server.url, timeout_seconds=5)
    head = origin.head("/", HEADERS)

    answer = await origin.post(head, b"{}")
    second = await origin.post(head, b"{}")
    await origin.close()

    assert (answer.status, answer.headers["retry-after"]) == (429, "1")
    assert second.status == 202  # the server's own answer, on a new connection
    assert server.connections == 2


# -- connections ---------------------------------------------------------------------------


async def test_one_connection_serves_request_after_request(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    server = await raw_server(answering(ACCEPTED))
    origin = Origin(server.url, timeout_seconds=5)
    head = origin.head("/", HEADERS)

    statuses = [(await origin.post(head, b"{}")).status for _ in range(5)]
    await origin.close()

    assert statuses == [202] * 5
    assert server.connections == 1


def answering_once_released(release: asyncio.Event) -> Serve:
    """A server that answers each request once `release` is set."""

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await read_request(reader))[0]:
            await release.wait()
            writer.write(ACCEPTED)
            await writer.drain()

    return slow


async def test_connections_at_once_are_capped_at_the_limit(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    release = asyncio.Event()
    server = await raw_server(answering_once_released(release))
    origin = Origin(server.url, timeout_seconds=5, limit=2)
    head = origin.head("/", HEADERS)

    posts = [asyncio.create_task(origin.post(head, b"{}")) for _ in range(10)]
    await until(lambda: server.connections == 2)
    release.set()
    answers = await asyncio.gather(*posts)
    await origin.close()

    assert [a.status for a in answers] == [202] * 10
    assert server.most_open == 2


async def test_a_post_that_found_no_free_connection_in_time_says_it_was_not_sent(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    release = asyncio.Event()
    server = await raw_server(answering_once_released(release))
    origin = Origin(server.url, timeout_seconds=5, limit=1)
    head = origin.head("/", HEADERS)
    first = asyncio.create_task(origin.post(head, b"{}"))
    await until(lambda: server.connections == 1)
    origin.timeout_seconds = 0.3  # for the second only: the first keeps its 5 s

    with pytest.raises(TimeoutError) as waited:
        await origin.post(head, b"{}")
    release.set()
    answer = await first
    await origin.close()

    assert str(waited.value) == "not sent: waited 0.3 s for a free connection (at most 1 at once)"
    assert answer.status == 202
    assert server.connections == 1  # the second never had one


async def test_an_answer_with_connection_close_is_the_last_on_its_connection(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    closing = ACCEPTED.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    server = await raw_server(answering(closing))
    origin = Origin(server.url, timeout_seconds=5)
    head = origin.head("/", HEADERS)

    await origin.post(head, b"{}")
    await origin.post(head, b"{}")
    await origin.close()

    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_written_to(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ACCEPTED)  # keep-alive by HTTP/1.1's default, then closed all the same
        await writer.drain()

    server = await raw_server(one_answer)
    origin = Origin(server.url, timeout_seconds=5)
    head = origin.head("/", HEADERS)

    await origin.post(head, b"{}")
    await until(lambda: origin.open_connections == 0)
    answer = await origin.post(head, b"{}")
    await origin.close()

    assert answer.status == 202
    assert server.connections == 2


async def test_a_connection_idle_past_the_keepalive_is_closed_and_replaced(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    server = await raw_server(answering(ACCEPTED))
    origin = Origin(server.url, timeout_seconds=5, keepalive_seconds=0)
    head = origin.head("/", HEADERS)

    await origin.post(head, b"{}")
    await origin.post(head, b"{}")
    await until(lambda: server.open_now == 1)  # the first was closed by the client
    await origin.close()

    assert server.connections == 2


async def test_connections_idle_past_the_keepalive_are_closed_though_a_fresh_one_is_taken(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    server = await raw_server(answering(ACCEPTED))
    origin = Origin(server.url, timeout_seconds=5, keepalive_seconds=15)
    head = origin.head("/", HEADERS)
    await asyncio.gather(*(origin.post(head, b"{}") for _ in range(3)))  # a burst: 3 open
    assert origin.open_connections == 3
    for stale in origin._idle[:2]:  # as if the burst was a minute ago, and only one used since
        stale.idle_since -= 60

    await origin.post(head, b"{}")  # on the one still fresh

    assert origin.open_connections == 1  # the stale two did not wait to be taken to go
    await until(lambda: server.open_now == 1)
    await origin.close()
    assert server.connections == 3


async def test_close_closes_every_connection_and_refuses_later_posts(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    server = await raw_server(answering(ACCEPTED))
    origin = Origin(server.url, timeout_seconds=5)
    head = origin.head("/", HEADERS)
    await origin.post(head, b"{}")

    await origin.close()
    await until(lambda: server.open_now == 0)

    with pytest.raises(ConnectionError, match="closed"):
        await origin.post(head, b"{}")


# -- failures ------------------------------------------------------------------------------


async def test_no_answer_within_the_timeout_raises_and_drops_the_connection(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    calls = 0

    async def silent_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await read_request(reader)
            await reader.read()  # never answers; returns when the client hangs up
            return
        await answering(ACCEPTED)(reader, writer)

    server = await raw_server(silent_first)
    origin = Origin(server.url, timeout_seconds=0.2)
    head = origin.head("/", HEADERS)

    with pytest.raises(TimeoutError):
        await origin.post(head, b"{}")
    await asyncio.wait_for(server.closed.wait(), 5)  # the client hung up on it
    answer = await origin.post(head, b"{}")
    await origin.close()

    assert answer.status == 202
    assert server.connections == 2


async def test_a_server_closing_before_it_answers_is_a_connection_error(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    server = await raw_server(hang_up)
    origin = Origin(server.url, timeout_seconds=5)

    with pytest.raises(NoAnswer, match="closed the connection before it answered"):
        await origin.post(origin.head("/", HEADERS), b"{}")
    await origin.close()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"SMTP READY\r\n\r\n", "malformed answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_ANSWER_BYTES + 1), "more than"),
    ],
)
async def test_what_is_not_an_answer_is_a_connection_error_and_the_connection_is_dropped(
    raw_server: Callable[[Serve], Awaitable[RawServer]], answer: bytes, expected: str
) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        if b"Content-Length" in answer:
            writer.write(b"x" * (MAX_ANSWER_BYTES + 1))
        await writer.drain()
        await reader.read()  # until the client hangs up

    server = await raw_server(serve)
    origin = Origin(server.url, timeout_seconds=5)

    with pytest.raises(ConnectionError, match=expected):
        await origin.post(origin.head("/", HEADERS), b"{}")
    await asyncio.wait_for(server.closed.wait(), 5)
    await origin.close()


async def test_an_endless_head_is_refused_at_the_size_cap(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Long: ")
        while not writer.is_closing():
            writer.write(b"a" * 65536)
            await writer.drain()

    server = await raw_server(endless)
    origin = Origin(server.url, timeout_seconds=30)

    with pytest.raises(ConnectionError, match="more than"):
        await origin.post(origin.head("/", HEADERS), b"{}")
    await origin.close()


async def test_closing_with_a_request_in_flight_fails_it(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()

    server = await raw_server(silent)
    origin = Origin(server.url, timeout_seconds=30)
    post = asyncio.create_task(origin.post(origin.head("/", HEADERS), b"{}"))
    await until(lambda: server.connections == 1)

    await origin.close()

    with pytest.raises(ConnectionError, match="closed before the answer came"):
        await post


async def test_a_refused_connection_is_an_os_error(
    raw_server: Callable[[Serve], Awaitable[RawServer]],
) -> None:
    server = await raw_server(answering(ACCEPTED))
    await server.stop()
    origin = Origin(server.url, timeout_seconds=5)

    with pytest.raises(OSError, match="onnect"):
        await origin.post(origin.head("/", HEADERS), b"{}")


# -- TLS -----------------------------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_is_spoken_with_the_certificate_checked(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)

    async def messages(request: web.Request) -> web.Response:
        return web.json_response({"secure": request.secure}, status=202)

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served)
    await site.start()
    port = runner.addresses[0][1]
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        origin = Origin(f"https://127.0.0.1:{port}", timeout_seconds=5, ssl_context=trusting)
        answer = await origin.post(origin.head("/v1/messages", HEADERS), b"{}")
        await origin.close()

        doubting = Origin(f"https://127.0.0.1:{port}", timeout_seconds=5)  # the system's CAs
        with pytest.raises(ssl.SSLCertVerificationError):
            await doubting.post(doubting.head("/v1/messages", HEADERS), b"{}")
    finally:
        await runner.cleanup()

    assert (answer.status, answer.body) == (202, b'{"secure": true}')


# -- what is refused up front --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://example.com", "http:// or https://"),
        ("example.com", "http:// or https://"),
        ("https://user:secret@example.com", "without credentials"),
        ("https://example.com:0", "a port from 1 to 65535"),
    ],
)
def test_an_origin_needs_an_http_url_without_credentials(url: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected) as raised:
        Origin(url, timeout_seconds=1)
    assert "secret" not in str(raised.value)


@pytest.mark.parametrize(
    ("target", "headers", "expected"),
    [
        ("/", {"X-Evil": "a\r\nInjected: yes"}, "CR, LF or NUL"),
        ("/", {"Bad Name": "x"}, "not an HTTP token"),
        ("/", {"Content-Length": "5"}, "the transport's to set"),
        ("/", {"host": "elsewhere"}, "the transport's to set"),
        ("v1/messages", {}, "starting with '/'"),
        ("/a b", {}, "starting with '/'"),
    ],
)
def test_a_head_refuses_what_would_break_the_request(
    target: str, headers: dict[str, str], expected: str
) -> None:
    origin = Origin("http://127.0.0.1:9", timeout_seconds=1)
    with pytest.raises(ValueError, match=expected):
        origin.head(target, headers)


def test_the_host_header_keeps_an_ipv6_address_in_brackets_and_the_port() -> None:
    origin = Origin("http://[::1]:8091/base", timeout_seconds=1)

    head = origin.head("/v1/messages", {})

    assert head == b"POST /v1/messages HTTP/1.1\r\nHost: [::1]:8091\r\n"
    assert (origin.host, origin.port) == ("::1", 8091)
