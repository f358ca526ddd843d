"""bot.plugins: the @handler mark, loading plugin modules, resolving route references."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.plugins import Registry, handler, load_plugins


class PluginFolder:
    """Plugin modules written into a folder, under names unique to one test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = f"gbtest_{uuid.uuid4().hex[:12]}"

    def write(self, name: str, source: str) -> str:
        module = f"{self.prefix}_{name}"
        (self.root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        return module


@pytest.fixture
def plugins(tmp_path: Path) -> Iterator[PluginFolder]:
    folder = PluginFolder(tmp_path)
    saved_path = list(sys.path)
    yield folder
    # load_plugins puts the root on sys.path and imports the modules: undo both.
    sys.path[:] = saved_path
    for name in [n for n in sys.modules if n.startswith(folder.prefix)]:
        del sys.modules[name]


HANDLERS = """
    from bot import handler

    @handler("status")
    async def status(ctx):
        return "ok"

    @handler
    async def recap(ctx):
        return None

    async def helper(ctx):  # not marked: not a handler
        return "no"
"""


# @handler


def test_handler_with_a_name_registers_under_that_name() -> None:
    @handler("where")
    async def find(ctx: Any) -> str:
        return "here"

    assert getattr(find, "__groupbot_handler__", None) == "where"


def test_bare_handler_registers_under_the_function_name() -> None:
    @handler
    async def recap(ctx: Any) -> None:
        return None

    assert getattr(recap, "__groupbot_handler__", None) == "recap"


def test_handler_with_empty_parentheses_registers_under_the_function_name() -> None:
    @handler()
    async def hours(ctx: Any) -> None:
        return None

    assert getattr(hours, "__groupbot_handler__", None) == "hours"


async def test_handler_returns_the_function_itself_still_callable() -> None:
    async def status(ctx: Any) -> str:
        return f"status for {ctx}"

    assert handler("status")(status) is status
    assert await status("me") == "status for me"


def test_non_async_function_is_refused_at_decoration() -> None:
    def status(ctx: Any) -> str:
        return "ok"

    with pytest.raises(TypeError, match="status must be an async def function"):
        handler("status")(status)  # type: ignore[type-var]


def test_bare_handler_on_a_non_async_function_is_refused() -> None:
    def recap(ctx: Any) -> str:
        return "ok"

    with pytest.raises(TypeError, match="async def"):
        handler(recap)  # type: ignore[type-var]


# load_plugins


def test_load_plugins_registers_by_name_and_by_reference(plugins: PluginFolder) -> None:
    module = plugins.write("ops", HANDLERS)
    registry, problems = load_plugins([module], root=plugins.root)
    assert problems == []
    assert registry.plugins == (module,)
    assert set(registry.by_name) == {"status", "recap"}
    assert set(registry.by_reference) == {f"{module}:status", f"{module}:recap"}
    assert registry.by_name["status"] is registry.by_reference[f"{module}:status"]


async def test_resolved_handler_is_the_plugin_function(plugins: PluginFolder) -> None:
    module = plugins.write("ops", HANDLERS)
    registry, _ = load_plugins([module], root=plugins.root)
    function = registry.resolve("status")
    assert function is not None
    assert await function(None) == "ok"  # type: ignore[arg-type]


def test_resolve_by_name_and_by_module_function(plugins: PluginFolder) -> None:
    module = plugins.write("ops", HANDLERS)
    registry, _ = load_plugins([module], root=plugins.root)
    assert registry.resolve("recap") is not None
    assert registry.resolve(f"{module}:recap") is registry.resolve("recap")


def test_resolve_unknown_references_gives_none(plugins: PluginFolder) -> None:
    module = plugins.write("ops", HANDLERS)
    registry, _ = load_plugins([module], root=plugins.root)
    assert registry.resolve("nope") is None
    assert registry.resolve(f"{module}:helper") is None  # exists, but not a handler
    assert registry.resolve(f"{module}:nope") is None
    assert registry.resolve("other.module:status") is None


def test_import_error_of_one_plugin_does_not_hide_the_others(plugins: PluginFolder) -> None:
    good_before = plugins.write("good_before", HANDLERS)
    broken = plugins.write(
        "broken",
        """
        from bot import handler

        import a_module_that_does_not_exist_anywhere
        """,
    )
    good_after = plugins.write(
        "good_after",
        """
        from bot import handler

        @handler("late")
        async def late(ctx):
            return "late"
        """,
    )
    registry, problems = load_plugins([good_before, broken, good_after], root=plugins.root)
    assert len(problems) == 1
    assert problems[0].startswith(f"plugins[1]: cannot import {broken!r}: ModuleNotFoundError")
    assert "a_module_that_does_not_exist_anywhere" in problems[0]
    assert f"{broken}.py:4" in problems[0]  # the file and line of the failing import
    assert set(registry.by_name) == {"status", "recap", "late"}


def test_plugin_raising_while_imported_is_reported(plugins: PluginFolder) -> None:
    broken = plugins.write("raises", "raise RuntimeError('no database configured')\n")
    _, problems = load_plugins([broken], root=plugins.root)
    assert len(problems) == 1
    assert "RuntimeError: no database configured" in problems[0]


def test_a_misspelt_plugin_module_suggests_the_nearest_one(plugins: PluginFolder) -> None:
    real = plugins.write("billing", HANDLERS)
    misspelt = real.replace("billing", "biling")

    _, problems = load_plugins([misspelt], root=plugins.root)

    assert problems == [
        f"plugins[0]: cannot import {misspelt!r}: no such module; did you mean {real}?"
    ]


def test_a_module_missing_inside_a_plugin_is_the_plugin_s_error(plugins: PluginFolder) -> None:
    # The missing module's name begins the plugin's own, yet it is not the plugin.
    broken = plugins.write("needs", f"import {plugins.prefix}\n")

    _, problems = load_plugins([broken], root=plugins.root)

    [problem] = problems
    assert f"ModuleNotFoundError: No module named '{plugins.prefix}'" in problem
    assert problem.endswith(f"({plugins.root / broken}.py:1)")


def test_plugin_with_a_syntax_error_is_reported(plugins: PluginFolder) -> None:
    broken = plugins.write("syntax", "async def oops(:\n")
    _, problems = load_plugins([broken], root=plugins.root)
    assert len(problems) == 1
    assert problems[0].startswith("plugins[0]: cannot import")
    assert "SyntaxError" in problems[0]


def test_missing_plugin_module_is_reported(plugins: PluginFolder) -> None:
    missing = f"{plugins.prefix}_missing"
    registry, problems = load_plugins([missing], root=plugins.root)
    assert len(problems) == 1
    assert f"cannot import {missing!r}" in problems[0]
    assert registry.by_name == {}


def test_non_async_handler_in_a_plugin_is_reported_as_its_import_error(
    plugins: PluginFolder,
) -> None:
    broken = plugins.write(
        "sync",
        """
        from bot import handler

        @handler("sync")
        def sync(ctx):
            return "no"
        """,
    )
    _, problems = load_plugins([broken], root=plugins.root)
    [problem] = problems
    assert "TypeError: @handler: sync must be an async def function" in problem
    # At the plugin's line (the decorator's), not inside bot/plugins.py where it is raised.
    assert problem.endswith(f"({plugins.root / broken}.py:4)")


def test_two_plugins_registering_one_name_is_a_problem(plugins: PluginFolder) -> None:
    first = plugins.write("first", HANDLERS)
    second = plugins.write(
        "second",
        """
        from bot import handler

        @handler("status")
        async def other_status(ctx):
            return "other"
        """,
    )
    registry, problems = load_plugins([first, second], root=plugins.root)
    assert len(problems) == 1
    assert problems[0] == (
        f"plugins[1]: handler name 'status' of {second}:other_status is already registered "
        f"by {first}:status"
    )
    # The first registration is kept; the second stays reachable by reference.
    assert registry.by_name["status"] is registry.by_reference[f"{first}:status"]
    assert registry.resolve(f"{second}:other_status") is not None


def test_handler_imported_from_another_plugin_is_not_registered_twice(
    plugins: PluginFolder,
) -> None:
    first = plugins.write("origin", HANDLERS)
    second = plugins.write("reexport", f"from {first} import status\n")
    registry, problems = load_plugins([first, second], root=plugins.root)
    assert problems == []
    assert f"{second}:status" not in registry.by_reference


def test_plugin_folder_is_importable_after_loading(plugins: PluginFolder) -> None:
    module = plugins.write("ops", HANDLERS)
    load_plugins([module], root=plugins.root)
    assert str(plugins.root) in sys.path
    assert module in sys.modules


# describe_missing


def registry_with(*names: str, plugins: tuple[str, ...] = ("handlers.team",)) -> Registry:
    async def function(ctx: Any) -> None:
        return None

    return Registry(plugins, dict.fromkeys(names, function), {}, {})


def test_describe_missing_name_lists_the_registered_names() -> None:
    message = registry_with("recap", "escalate").describe_missing("status")
    assert message == "handler 'status' is not registered (registered: escalate, recap)"


def test_describe_missing_name_with_nothing_registered_says_none() -> None:
    message = registry_with().describe_missing("status")
    assert message == "handler 'status' is not registered (registered: none)"


def test_describe_missing_says_which_plugins_could_not_be_imported(
    plugins: PluginFolder,
) -> None:
    good = plugins.write("good", HANDLERS)
    broken = plugins.write("broken", "raise RuntimeError('no database configured')\n")
    registry, _ = load_plugins([good, broken], root=plugins.root)

    assert registry.describe_missing("quote").endswith(
        f"; or it is in {broken}, which could not be imported (above)"
    )
    assert registry.describe_missing(f"{broken}:quote") == (
        f"handler '{broken}:quote': module '{broken}' could not be imported (above)"
    )


def test_describe_missing_reference_to_a_module_not_in_plugins() -> None:
    message = registry_with().describe_missing("handlers.billing:invoice")
    assert (
        message
        == "handler 'handlers.billing:invoice': module 'handlers.billing' is not listed in plugins"
    )


def test_describe_missing_function_of_a_listed_plugin() -> None:
    message = registry_with().describe_missing("handlers.team:nothing")
    assert (
        message
        == "handler 'handlers.team:nothing': handlers.team has no @handler function 'nothing'"
    )
