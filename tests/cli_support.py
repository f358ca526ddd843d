"""Helpers for tests that run `groupbot` as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import APPLICATION_ID, ROOT, SIGNATURE_SECRET, merge, shipped_config, signed
from tests.fakes import FakeMessagesApi


def environment() -> dict[str, str]:
    """A clean environment: no GROUPBOT_* or VONAGE_* from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_config(folder: Path, overrides: dict[str, Any] | None = None) -> Path:
    """The shipped config's routes and plugins, templates from the repo, storage in `folder`."""
    config = merge(
        shipped_config(),
        {
            "provider": {"kind": "simulator"},
            "templates": str(ROOT / "templates"),
            "storage": {"url": f"sqlite:///{folder / 'var' / 'groupbot.db'}"},
            "log": {"level": "info", "format": "json"},
        },
    )
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(merge(config, overrides or {}), sort_keys=False))
    return path


def vonage(api: FakeMessagesApi, private_pem: str) -> dict[str, Any]:
    return {
        "provider": {
            "kind": "vonage",
            "api_url": api.url,
            "application_id": APPLICATION_ID,
            "private_key": private_pem,
            "signature_secret": SIGNATURE_SECRET,
        }
    }


def post_signed(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> aiohttp.client._RequestContextManager:
    """POST a webhook signed as Vonage signs it."""
    data = json.dumps(body).encode()
    return session.post(url, data=data, headers=signed(data))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def wait_healthy(
    process: asyncio.subprocess.Process, url: str, log: Path, within: float = 30.0
) -> None:
    """Poll `url`/healthz until 200; fail with the process's log if it exits or is too slow."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            if process.returncode is not None:
                pytest.fail(f"groupbot run exited early:\n{read(log)}")
            try:
                async with session.get(url + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"/healthz not 200 within {within} s:\n{read(log)}")
            await asyncio.sleep(0.05)


def read(log: Path) -> str:
    return log.read_text(errors="replace")
