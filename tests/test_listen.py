"""bot/listen.py: the sockets `groupbot run` binds before anything else starts."""

from __future__ import annotations

import socket

import pytest

from bot import listen


def test_an_ipv4_address_gets_one_listening_socket_shown_with_its_real_port() -> None:
    [listening] = listen.bind("127.0.0.1", 0)
    with listening:
        port = listening.getsockname()[1]
        assert listening.family == socket.AF_INET
        assert port > 0
        assert listen.url("127.0.0.1", listening) == f"http://127.0.0.1:{port}/"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # it listens


def test_an_ipv6_address_is_bound_alone_and_shown_in_brackets() -> None:
    [listening] = listen.bind("::1", 0)
    with listening:
        assert listening.family == socket.AF_INET6
        assert listening.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        port = listening.getsockname()[1]
        assert listen.url("::1", listening) == f"http://[::1]:{port}/"


def test_a_busy_port_keeps_nothing_bound() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match="Address already in use"):
            listen.bind("127.0.0.1", port)


@pytest.mark.parametrize("port", [-1, 65536])
def test_a_port_out_of_range_is_an_os_error_naming_it(port: int) -> None:
    with pytest.raises(OSError, match=f"port {port} is out of range"):
        listen.bind("127.0.0.1", port)


def test_a_host_that_does_not_resolve_is_an_os_error() -> None:
    with pytest.raises(socket.gaierror):
        listen.bind("no-such-host.invalid", 0)


def test_an_ipv6_address_may_be_written_in_brackets() -> None:
    [listening] = listen.bind("[::1]", 0)
    with listening:
        assert listening.getsockname()[0] == "::1"
        assert listen.url("[::1]", listening).startswith("http://[::1]:")


def test_every_address_is_shown_as_the_loopback_a_browser_can_open() -> None:
    [listening] = listen.bind("0.0.0.0", 0)  # noqa: S104 - a test, on loopback only below
    with listening:
        port = listening.getsockname()[1]
        assert listen.url("0.0.0.0", listening) == f"http://127.0.0.1:{port}/"  # noqa: S104
