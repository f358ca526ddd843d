"""`groupbot chat`: the group in a terminal. One types as any member (`/as NUMBER`) and sees
what every member receives, through the whole pipeline with the simulator and a throwaway
store: nothing leaves the machine."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from bot.core import build_bot
from bot.exceptions import InvalidInput
from bot.groups import Group
from bot.models import normalize_all
from bot.numbers import display, normalize
from bot.runtime import running
from bot.simulator.session import Replies, Session, simulated_config

CHAT_HELP = (
    "type a message to send it; /as NUMBER to speak as another member; /help; /quit to leave"
)


async def chat_in_terminal(config_path: Path, members: Sequence[str]) -> int:
    """Chat until /quit or the end of input; return the exit status."""
    with tempfile.TemporaryDirectory(prefix="groupbot-chat-") as folder:
        config = simulated_config(config_path, Path(folder))
        group = Group.for_broadcast(
            normalize_all(members, "--member"),
            bot_number=config.bot.number,
            max_size=config.bot.max_group_size,
            field="--member",
        )
        bot = build_bot(config)
        for warning in bot.warnings:
            print(f"warning: {warning}")
        async with running(bot) as runtime:
            session = Session(runtime)
            chat = session.group(*group.members)
            speaker = group.members[0]
            names = ", ".join(display(m) for m in group.members)
            print(f"group: {names} and the bot {display(config.bot.number)}\n{CHAT_HELP}")
            lines = _stdin_lines()
            while True:
                print(f"{display(speaker)}> ", end="", flush=True)
                line = await lines.get()
                if not line or line.strip() == "/quit":
                    return 0
                text = line.strip()
                if not text:
                    continue
                if text.startswith("/as "):
                    speaker = _member(text[4:], group) or speaker
                    continue
                if text in ("/help", "/?"):
                    print(f"  {CHAT_HELP}")
                    continue
                try:
                    replies = await chat.say(speaker, text)
                except AssertionError as exc:  # not answered in time: say so, keep chatting
                    print(f"  ({exc})")
                    continue
                for member in group.members:
                    if member != speaker:
                        print(f"  {display(member)} sees: {display(speaker)}: {text}")
                for line in _received(replies):
                    print("  " + line.replace("\n", "\n      "))


def _stdin_lines() -> asyncio.Queue[str]:
    """Lines typed, from a daemon thread: Ctrl-C ends the command at once instead of waiting
    for a blocked read to return ("" marks the end of input)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, "")

    threading.Thread(target=read, daemon=True, name="groupbot-chat-input").start()
    return queue


def _received(replies: Replies) -> list[str]:
    """What the members got: once for everyone when they all got the same."""
    texts = [text for received in replies.values() for text in received]
    if not texts:
        return ["(the bot stays silent)"]
    if len(replies) > 1 and all(received == [texts[0]] for received in replies.values()):
        return [f"everyone gets: {texts[0]}"]
    return [f"{display(m)} gets: {t}" for m, received in replies.items() for t in received]


def _member(raw: str, group: Group) -> str | None:
    try:
        number = normalize(raw.strip(), field="/as")
    except InvalidInput as exc:
        print(f"  {exc}")
        return None
    if number not in group.members:
        print(f"  {display(number)} is not in this group")
        return None
    return number
