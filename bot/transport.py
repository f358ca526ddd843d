"""POSTs to one origin over kept-alive HTTP/1.1 connections: the Messages API client's transport.

A send is what a bot does most, three times for each message it answers. aiohttp's client
spent 60-70 µs of CPU on one (a request object, a response object, a stream reader and a
timer each); writing the request as one buffer and parsing the answer with httptools (the
parser uvicorn runs on) costs 25-30 (bench/client.py). This does only what the client
needs: POST a body, read an answer sent with a length, chunked or until the connection
closes, keep connections for the next request (at most `limit` of them, each idle at most
`keepalive_seconds`), TLS for https, and one deadline for the whole exchange. It never
sends a request twice: what to do after a failure is the caller's to decide.

Errors: `TimeoutError` past the deadline (saying so when the request was not written);
`NoAnswer` (a ConnectionError) when the request was written but no answer came whole: the
connection broke, or brought something that is not an answer, so the request may have
arrived; any other `OSError` when no connection could be made (TLS and name lookup
included). A connection whose exchange failed in any way is closed, never used again.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Mapping
from typing import NamedTuple, cast
from urllib.parse import urlsplit

import httptools

# The API answers with a few hundred bytes; a server sending more is not the API.
MAX_ANSWER_BYTES = 1 << 20  # said as "1 MiB": logs mask any run of 7 digits as a number
# As many as the outbox may send at once (store.Places), so that a send never waits for one.
LIMIT = 256
# aiohttp's default too: servers drop idle connections after a while, and a request written
# to one they are dropping fails.
KEEPALIVE_SECONDS = 15.0
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_VALUES = re.compile(r"[\r\n\x00]")


class NoAnswer(ConnectionError):
    """The request was written, but no whole answer came back."""


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]  # names in lower case; of a repeated header, its last value
    body: bytes


class Origin:
    """Kept-alive connections to the `http://` or `https://` origin of `url`."""

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float,
        limit: int = LIMIT,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL with a host, got {url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("expected a URL without credentials")
        self.host = parts.hostname
        if parts.port == 0:
            raise ValueError(f"expected a port from 1 to 65535, got {url!r}")
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host_header = parts.netloc  # with the port if the URL has one, as browsers send
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        self.timeout_seconds = timeout_seconds
        self._keepalive_seconds = keepalive_seconds
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []  # the most recently used last: it is taken first
        self._open: set[_Connection] = set()
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Connections open now, in use or idle."""
        return len(self._open)

    def head(self, target: str, headers: Mapping[str, str]) -> bytes:
        """A POST's request line and headers, but for its length: checked and encoded once,
        for as many requests as use them."""
        if not target.startswith("/") or _FORBIDDEN_IN_VALUES.search(target) or " " in target:
            raise ValueError(f"expected a request target starting with '/', got {target!r}")
        lines = [f"POST {target} HTTP/1.1", f"Host: {self._host_header}"]
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"header name {name!r} is not an HTTP token")
            if _FORBIDDEN_IN_VALUES.search(value):
                raise ValueError(f"header {name}: a value may not contain CR, LF or NUL")
            if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                raise ValueError(f"header {name} is the transport's to set")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    async def post(self, head: bytes, body: bytes) -> Answer:
        """Send `body` after `head` (from `head()`) and read the answer, all within
        `timeout_seconds`, waiting for a connection included."""
        request = b"%bContent-Length: %d\r\n\r\n%b" % (head, len(body), body)
        waiting_for = "a free connection"  # until the request is written: said if time runs out
        try:
            async with asyncio.timeout(self.timeout_seconds), self._slots:
                waiting_for = "the connection to be made"
                connection = await self._connection()
                waiting_for = ""
                try:
                    answer = await connection.exchange(request)
                except BaseException:
                    connection.close()  # what it would bring next is unknown
                    raise
                if connection.reusable and not self._closed:
                    connection.idle_since = time.monotonic()
                    self._idle.append(connection)
                else:
                    connection.close()
        except TimeoutError:
            if waiting_for:
                raise TimeoutError(
                    f"not sent: waited {self.timeout_seconds:g} s for {waiting_for} "
                    f"(at most {self.limit} at once)"
                ) from None
            raise
        return answer

    async def close(self) -> None:
        self._closed = True
        for connection in list(self._open):
            connection.close()
        self._idle.clear()

    async def _connection(self) -> _Connection:
        if self._closed:
            raise ConnectionError("the transport is closed")
        now = time.monotonic()
        # The longest idle first (at the front): all that outlived the keep-alive go now, not
        # only one when it happens to be taken, so a burst's connections do not stay open.
        expired = 0
        for connection in self._idle:
            if connection.reusable and now - connection.idle_since < self._keepalive_seconds:
                break
            connection.close()
            expired += 1
        del self._idle[:expired]
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:  # kept alive: the sweep above left only fresh ones
                return connection
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            lambda: _Connection(self._open), self.host, self.port, ssl=self._ssl
        )
        return connection


class _Connection(asyncio.Protocol):
    """One connection, one exchange at a time; httptools calls the `on_*` methods."""

    def __init__(self, open_connections: set[_Connection]) -> None:
        self._open_connections = open_connections
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Answer] | None = None
        self._received = 0  # bytes of this exchange's answer, its head included
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._ends_with_close = False  # no length, not chunked: the answer ends with the connection
        self.reusable = False
        self.idle_since = 0.0

    def exchange(self, request: bytes) -> asyncio.Future[Answer]:
        assert self._transport is not None
        assert self.reusable
        self.reusable = False  # until a whole answer has come, on a connection kept alive
        self._received = 0
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return self._answer

    def close(self) -> None:
        self.reusable = False
        self._fail_answer("the connection was closed before the answer came")
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self.reusable = True
        self._open_connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._open_connections.discard(self)
        closed_cleanly = exc is None  # not reset: a reset answer may be cut short
        if self._ends_with_close and closed_cleanly and self._answer and not self._answer.done():
            self._answer.set_result(self._whole_answer())  # its end is the connection's
        self._fail_answer("the server closed the connection before it answered")

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        if self._answer is None or self._answer.done():
            self._fail("the server sent data no request asked for")
        elif self._received > MAX_ANSWER_BYTES:  # counts the head too: it may be endless
            self._fail(f"an answer of more than {MAX_ANSWER_BYTES >> 20} MiB")
        else:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self._fail("the server switched protocols")
            except httptools.HttpParserCallbackError as exc:  # one of ours refused the data
                self._fail(str(exc.__context__ or exc))
            except httptools.HttpParserError as exc:
                self._fail(f"malformed answer: {exc}")

    # -- httptools

    def on_message_begin(self) -> None:
        if self._answer is None or self._answer.done():
            # Bytes after the answer (in the same read): never taken for the next one.
            raise ValueError("the server sent more than one answer")
        self._headers, self._body, self._ends_with_close = {}, [], False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._ends_with_close = (
            status >= 200  # 1xx: an interim answer, the real one follows
            and status not in (204, 304)
            and "content-length" not in self._headers
            and "chunked" not in self._headers.get("transfer-encoding", "").lower()
        )

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:  # an interim answer: the real one follows
            return
        assert self._answer is not None
        self.reusable = self._parser.should_keep_alive()
        self._answer.set_result(self._whole_answer())

    def _whole_answer(self) -> Answer:
        return Answer(self._parser.get_status_code(), self._headers, b"".join(self._body))

    def _fail(self, reason: str) -> None:
        """End the exchange in progress, if any, with a ConnectionError; close for good."""
        self._fail_answer(reason)
        self.close()

    def _fail_answer(self, reason: str) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(NoAnswer(reason))
