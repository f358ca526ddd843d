"""Helpers for tests that run `groupbot` as a real process."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import APPLICATION_ID, ROOT, merge, shipped_config
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
        }
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
