"""`groupbot new handler NAME`: a handler module, its template, its route in config.yaml and a
test that passes, so a new author starts from working code.

config.yaml is edited with ruamel.yaml, which keeps its comments and layout.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from bot.config import Config
from bot.exceptions import InvalidInput

NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")

HANDLER = '''"""{name}: what this handler answers (say it here)."""

from __future__ import annotations

from bot import Context, handler


@handler("{name}")
async def {name}(ctx: Context) -> dict[str, object]:
    """Variables for templates/{name}.txt.j2; ctx.state is this group's, kept between messages."""
    count = int(ctx.state.get("{name}_count", 0)) + 1
    ctx.state["{name}_count"] = count
    return {{"count": count}}
'''

TEMPLATE = (
    "{{{{ sender | phone }}}} asked for {name} "
    '({{{{ count }}}} time{{{{ "s" if count > 1 }}}} in this group).\n'
)

TEST = '''"""{name}: the whole pipeline with the simulator (bot.testing's groupbot fixture)."""

from __future__ import annotations

import pytest

from bot.testing import Kit


@pytest.mark.asyncio
async def test_{name}_answers_the_whole_group(groupbot: Kit) -> None:
    group = groupbot.group("12025550101", "12025550102", "12025550103")

    first = await group.say("12025550101", "{name} please")
    second = await group.say("12025550102", "{name} again")

    assert first.text == "+1 202-555-0101 asked for {name} (1 time in this group)."
    assert second.text == "+1 202-555-0102 asked for {name} (2 times in this group)."
'''


@dataclass(frozen=True)
class Written:
    paths: list[Path]


def new_handler(config: Config, config_path: Path, name: str) -> Written:
    """Write the files and the route; InvalidInput (nothing written) if any already exists."""
    if not NAME.fullmatch(name):
        raise InvalidInput("NAME", f"expected a Python name in lower case, got {name!r}")
    root = config.root
    module = root / "handlers" / f"{name}.py"
    template = config.templates_dir / f"{name}.txt.j2"
    test = root / "tests" / f"test_{name}.py"
    for path in (module, template, test):
        if path.exists():
            raise InvalidInput("NAME", f"{path} already exists")
    if any(route.name == name for route in config.routes):
        raise InvalidInput("NAME", f"a route named {name!r} is already in {config_path}")
    edited = _with_route(config_path.read_text(encoding="utf-8"), name)
    for folder in (module.parent, test.parent):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").touch()
    template.parent.mkdir(parents=True, exist_ok=True)
    module.write_text(HANDLER.format(name=name), encoding="utf-8")
    template.write_text(TEMPLATE.format(name=name), encoding="utf-8")
    test.write_text(TEST.format(name=name), encoding="utf-8")
    config_path.write_text(edited, encoding="utf-8")
    return Written([module, template, test, config_path])


def _with_route(text: str, name: str) -> str:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    document: Any = yaml.load(text)
    plugins = document.setdefault("plugins", CommentedSeq())
    if f"handlers.{name}" not in plugins:
        plugins.append(f"handlers.{name}")
    keywords = CommentedSeq([name])
    keywords.fa.set_flow_style()
    route = CommentedMap(
        [("name", name), ("keywords", keywords), ("handler", name), ("template", f"{name}.txt.j2")]
    )
    document.setdefault("routes", CommentedSeq()).append(route)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()
