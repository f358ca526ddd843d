"""`groupbot new handler NAME`: a handler module, its template, its route in config.yaml and a
test that passes, so a new author starts from working code.

config.yaml is edited with ruamel.yaml, which keeps its comments, quotes and indentation
(guessed from the file); the new route goes at the end of `routes:`.
"""

from __future__ import annotations

import io
import keyword
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.util import load_yaml_guess_indent

from bot.config import Config
from bot.core import build_bot
from bot.exceptions import InvalidInput
from bot.routing import Router, words

NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
# HANDLER's imports: the function it defines may not take one of their names.
IMPORTED = frozenset({"annotations", "handler"})

# Every line holds a name of NAME's longest within 100 characters, and reads the same after
# `ruff format`, so that what is written passes the project's own checks.
HANDLER = '''"""{name}: what this handler answers (say it here)."""

from __future__ import annotations

from bot import Context, handler


@handler("{name}")
async def {name}(ctx: Context) -> dict[str, object]:
    """The variables of its route's template; ctx.state is this group's, kept between
    messages."""
    count = int(ctx.state.get("{name}_count", 0)) + 1
    ctx.state["{name}_count"] = count
    return {{"count": count}}
'''

TEMPLATE = (
    "{{{{ sender | phone }}}} asked for {keyword} "
    '({{{{ count }}}} time{{{{ "s" if count > 1 }}}} in this group).\n'
)

TEST = '''"""The {name} handler, end to end (the groupbot fixture)."""

from __future__ import annotations

import pytest

from bot.testing import Kit

KEYWORD = "{keyword}"


@pytest.mark.asyncio
async def test_{name}(groupbot: Kit) -> None:
    group = groupbot.group("12025550101", "12025550102", "12025550103")

    first = await group.say("12025550101", f"{{KEYWORD}} please")
    second = await group.say("12025550102", f"{{KEYWORD}} again")

    assert first.text == f"+1 202-555-0101 asked for {{KEYWORD}} (1 time in this group)."
    assert second.text == f"+1 202-555-0102 asked for {{KEYWORD}} (2 times in this group)."
'''


@dataclass(frozen=True)
class Written:
    paths: list[Path]
    keyword: str  # the route's keyword: what to type to reach the handler


def new_handler(config: Config, config_path: Path, name: str) -> Written:
    """Write the files and the route; InvalidInput (nothing written) if any already exists."""
    if not NAME.fullmatch(name) or keyword.iskeyword(name):
        raise InvalidInput("NAME", f"expected a Python name in lower case, got {name!r}")
    if name in IMPORTED:
        raise InvalidInput("NAME", f"{name!r} is a name the handler's module imports")
    if any(route.name == name for route in config.routes):
        raise InvalidInput("NAME", f"a route named {name!r} is already in {config_path}")
    # The keyword people type: "water heater", not water_heater.
    spoken = " ".join(part for part in name.split("_") if part)
    taken = {words(k): route.name for route in config.routes for k in route.keywords or ()}
    if words(spoken) in taken:
        raise InvalidInput(
            "NAME", f"the keyword {spoken!r} is used by route {taken[words(spoken)]!r}"
        )
    compliance = config.compliance
    if words(spoken) in {
        words(w) for w in compliance.stop_words + compliance.start_words + compliance.help_words
    }:
        raise InvalidInput("NAME", f"{spoken!r} is a carrier keyword (STOP, HELP...)")
    bot = build_bot(config)  # the project as it is: its handlers, its routes
    if name in bot.registry.by_name:
        raise InvalidInput("NAME", f"a handler named {name!r} is already registered")
    _check_reachable(bot.router, spoken)
    root = config.root
    module = root / "handlers" / f"{name}.py"
    template = config.templates_dir / f"{name}.txt.j2"
    test = root / "tests" / f"test_{name}.py"
    for path in (module, template, test):
        if path.exists():
            raise InvalidInput("NAME", f"{path} already exists")
    edited = _with_route(config_path.read_text(encoding="utf-8"), name, spoken)
    for folder in (module.parent, test.parent):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").touch()
    template.parent.mkdir(parents=True, exist_ok=True)
    module.write_text(HANDLER.format(name=name), encoding="utf-8")
    template.write_text(TEMPLATE.format(keyword=spoken), encoding="utf-8")
    test.write_text(TEST.format(name=name, keyword=spoken), encoding="utf-8")
    config_path.write_text(edited, encoding="utf-8")
    return Written([module, template, test, config_path], spoken)


def _check_reachable(router: Router, spoken: str) -> None:
    """The new route comes last: a keyword or pattern route already there that matches its
    test's messages would answer them instead (`hours` takes "holiday hours please")."""
    for message in (f"{spoken} please", f"{spoken} again"):  # what TEST says
        found = router.explain(message).candidates
        if first := next((m for m in found if m.kind in ("keyword", "pattern")), None):
            raise InvalidInput(
                "NAME",
                f"{message!r} would be answered by route {first.route.name!r} "
                f"({first.describe()}), which comes before a new route; choose another name",
            )


def _with_route(text: str, name: str, spoken: str) -> str:
    _, sequence, offset = load_yaml_guess_indent(text)  # how the file indents "- item"
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=sequence or 2, offset=offset or 0)
    yaml.width = 4096  # never fold a long line that was one line
    yaml.explicit_start = text.lstrip().startswith("---")
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    document: Any = yaml.load(text)
    plugins = document.setdefault("plugins", CommentedSeq())
    if f"handlers.{name}" not in plugins:
        plugins.append(f"handlers.{name}")
    keywords = CommentedSeq([spoken])
    keywords.fa.set_flow_style()
    route = CommentedMap(
        [("name", name), ("keywords", keywords), ("handler", name), ("template", f"{name}.txt.j2")]
    )
    document.setdefault("routes", CommentedSeq()).append(route)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()
