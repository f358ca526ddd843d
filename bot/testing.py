"""A pytest plugin for handler authors: the real pipeline, the simulator, one fixture.

    async def test_eta(groupbot):
        group = groupbot.group("12025550101", "12025550102", "12025550103")
        replies = await group.say("12025550101", "what's the ETA?")
        assert replies.text == 'The technician is on the way. Reply "arrived" ...'
        assert replies["12025550103"] == [replies.text]   # every member got it

`groupbot` loads the project's config.yaml (`--groupbot-config PATH`, else $GROUPBOT_CONFIG,
else config.yaml in pytest's root folder, else in the current one), swaps in the
simulator and a fresh SQLite file, and runs the workers. `say` goes through the same signed
webhook path as Vonage's, and returns once the message is handled and every answer sent.
`await groupbot.advance(seconds)` moves the bot's clock on, for `ctx.expect` windows.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from bot.simulator.session import GroupChat, Replies, Session

    Kit = Session

try:
    import pytest_asyncio
except ImportError:  # pytest loads this plugin whenever groupbot is installed
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = ["GroupChat", "Kit", "Replies", "groupbot"]


def __getattr__(name: str) -> Any:
    # The kit's classes load the whole bot (and numpy): only when a test asks for them,
    # not at every pytest start.
    from bot.simulator import session

    kinds = {"Kit": session.Session, "GroupChat": session.GroupChat, "Replies": session.Replies}
    if name in kinds:
        return kinds[name]
    raise AttributeError(name)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--groupbot-config",
        default=None,
        help=(
            "config the groupbot fixture loads (default: $GROUPBOT_CONFIG, else config.yaml "
            "in pytest's root folder, else in the current one)"
        ),
    )


def _config_path(request: pytest.FixtureRequest) -> Path:
    from bot.config import DEFAULT_CONFIG, ENV_CONFIG, default_path

    option = request.config.getoption("--groupbot-config")
    if option:
        return Path(option)
    if os.environ.get(ENV_CONFIG):
        return default_path()
    # The project's, wherever pytest runs from (`cd tests && pytest` included).
    at_root = request.config.rootpath / DEFAULT_CONFIG
    path = at_root if at_root.is_file() else Path(DEFAULT_CONFIG)
    if not path.is_file():
        folders = dict.fromkeys([str(request.config.rootpath), str(Path.cwd())])
        pytest.fail(
            f"groupbot fixture: no {DEFAULT_CONFIG} in {' or '.join(folders)}; "
            f"pass --groupbot-config PATH or set {ENV_CONFIG}",
            pytrace=False,
        )
    return path


async def _groupbot(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Kit]:
    from bot.core import build_bot
    from bot.runtime import running
    from bot.simulator.session import Session, simulated_config

    config = simulated_config(_config_path(request), tmp_path)
    bot = build_bot(config)
    kit: Session | None = None

    def clock() -> float:
        return kit.now() if kit is not None else time.time()

    async with running(bot, clock=clock) as runtime:
        kit = Session(runtime)
        yield kit


if pytest_asyncio is not None:
    groupbot = pytest_asyncio.fixture(_groupbot)
else:

    @pytest.fixture
    def groupbot() -> None:
        raise pytest.UsageError(
            "the groupbot fixture needs pytest-asyncio: pip install 'groupbot[testing]'"
        )
