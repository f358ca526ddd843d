"""The sockets `groupbot run` serves on, bound before anything else starts."""

from __future__ import annotations

import ipaddress
import socket

BACKLOG = 128  # aiohttp's own default


def bind(host: str, port: int) -> list[socket.socket]:
    """A listening socket for every address `host` resolves to, IPv4 and IPv6 alike (as
    aiohttp binds a host itself); OSError if any cannot be had, and then none is kept."""
    if not 0 <= port <= 65535:
        raise OSError(f"port {port} is out of range (0-65535)")
    found = socket.getaddrinfo(
        unbracketed(host), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(found):  # each address once
            listening = socket.socket(family, kind, protocol)
            sockets.append(listening)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Its own address only: an IPv4 one of the same host has its own socket.
                listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listening.bind(address)
            listening.listen(BACKLOG)
    except BaseException:
        for listening in sockets:
            listening.close()
        raise
    return sockets


# Every address of the machine: a browser on it reaches the bot at its loopback one.
REACHABLE = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - names, not bindings


def unbracketed(host: str) -> str:
    """`[::1]`, as written in URLs, is the address ::1."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def url(host: str, listening: socket.socket) -> str:
    """Where a browser finds it: an IPv6 host in brackets, the port actually bound."""
    address = unbracketed(host)
    address = REACHABLE.get(address, address)
    shown = f"[{address}]" if ":" in address else address
    return f"http://{shown}:{listening.getsockname()[1]}/"


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any address
