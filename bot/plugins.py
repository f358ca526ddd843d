"""Handler plugins: the `@handler` decorator, loading plugin modules, resolving references.

A plugin is a module listed in `plugins:`. Its handlers are marked with `@handler("name")`
(the mark lives on the function, so there is no global registry to leak between bots);
a route's `handler:` is a registered name or `module:function` of a listed plugin.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import pkgutil
import sys
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from bot.context import Context

Handler = Callable[["Context"], Awaitable[Any]]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

_MARK = "__groupbot_handler__"
_EXAMPLES = "__groupbot_examples__"


@overload
def handler(name: F) -> F: ...
@overload
def handler(name: str | None = None, *, examples: Sequence[str] = ()) -> Callable[[F], F]: ...
def handler(name: Any = None, *, examples: Sequence[str] = ()) -> Any:
    """Register an `async def f(ctx)` as a handler, under `name` or the function's own name.

    Use as `@handler("status")` or bare `@handler`. `examples` are sentences that teach the
    intent of the route using this handler with an `intent:` (or, if none does, the intent
    named like the handler, when a route answers it), added to its examples from config.yaml.
    """
    if name is None or isinstance(name, str):
        registered = name
        return lambda function: _mark(function, registered or function.__name__, examples)
    return _mark(name, name.__name__, examples)


def _mark(function: F, name: str, examples: Sequence[str] = ()) -> F:
    is_async = inspect.iscoroutinefunction(function)  # kept apart: it narrows `function`
    if not is_async:
        raise TypeError(f"@handler: {function.__qualname__} must be an async def function")
    if isinstance(examples, str):
        raise TypeError(f"@handler: examples of {name!r} must be a list of sentences")
    setattr(function, _MARK, name)
    setattr(function, _EXAMPLES, tuple(examples))
    return function


def _why(exc: Exception, module_name: str, root: Path) -> str:
    """What went wrong importing a plugin: the module not there (with the nearest name that
    is), or the error its code raised and where."""
    missing = getattr(exc, "name", None)  # the plugin itself, or a package of its path
    if (
        isinstance(exc, ModuleNotFoundError)
        and missing is not None
        and f"{module_name}.".startswith(f"{missing}.")
    ):
        nearest = difflib.get_close_matches(module_name, _modules_near(module_name, root), n=1)
        return "no such module" + (f"; did you mean {nearest[0]}?" if nearest else "")
    if isinstance(exc, SyntaxError):
        return f"{type(exc).__name__}: {exc}"  # it names its own place
    return f"{type(exc).__name__}: {exc} ({_origin(exc)})"


def _modules_near(module_name: str, root: Path) -> list[str]:
    """The modules beside where `module_name` would be: in its package, else in the
    project's folder (where plugins live)."""
    package, _, _ = module_name.rpartition(".")
    if not package:
        return [found.name for found in pkgutil.iter_modules([str(root)])]
    try:
        spec = importlib.util.find_spec(package)
    except ImportError:
        return []
    if spec is None or spec.submodule_search_locations is None:
        return []
    places = list(spec.submodule_search_locations)
    return [f"{package}.{found.name}" for found in pkgutil.iter_modules(places)]


def _origin(exc: BaseException) -> str:
    """file:line where the exception was raised, in the plugin's code rather than in the
    decorator it called (a SyntaxError names its own place)."""
    frames = traceback.extract_tb(exc.__traceback__)
    theirs = [frame for frame in frames if frame.filename != __file__] or frames
    where = theirs[-1]
    return f"{where.filename}:{where.lineno}"


@dataclass(frozen=True)
class Registry:
    """The handlers of the loaded plugins, by registered name and by `module:function`."""

    plugins: tuple[str, ...]
    by_name: Mapping[str, Handler]
    by_reference: Mapping[str, Handler]
    examples: Mapping[str, tuple[str, ...]]  # handler's registered name -> its sentences
    unimported: tuple[str, ...] = ()  # listed plugins that could not be imported

    def resolve(self, reference: str) -> Handler | None:
        return self.by_name.get(reference) or self.by_reference.get(reference)

    def registered_name(self, reference: str) -> str | None:
        """The name the handler at `reference` (a name or `module:function`) registered as."""
        function = self.resolve(reference)
        name = getattr(function, _MARK, None)
        return name if isinstance(name, str) else None

    def describe_missing(self, reference: str) -> str:
        module, _, function = reference.partition(":")
        if function and module not in self.plugins:
            return f"handler {reference!r}: module {module!r} is not listed in plugins"
        if function and module in self.unimported:
            return f"handler {reference!r}: module {module!r} could not be imported (above)"
        if function:
            return f"handler {reference!r}: {module} has no @handler function {function!r}"
        known = ", ".join(sorted(self.by_name)) or "none"
        unimported = (
            f"; or it is in {', '.join(self.unimported)}, which could not be imported (above)"
            if self.unimported
            else ""
        )
        return f"handler {reference!r} is not registered (registered: {known}){unimported}"


def load_plugins(modules: Sequence[str], *, root: Path) -> tuple[Registry, list[str]]:
    """Import each plugin module; return the registry and a list of problems found."""
    # Plugins live beside config.yaml, like the shipped `handlers` package.
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    problems: list[str] = []
    by_name: dict[str, Handler] = {}
    by_reference: dict[str, Handler] = {}
    owner: dict[str, str] = {}  # registered name -> module:function
    examples: dict[str, tuple[str, ...]] = {}
    unimported: list[str] = []
    for i, module_name in enumerate(modules):
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a plugin's import error must not hide the others
            why = _why(exc, module_name, root)
            problems.append(f"plugins[{i}]: cannot import {module_name!r}: {why}")
            unimported.append(module_name)
            continue
        for attribute, function in vars(module).items():
            name = getattr(function, _MARK, None)
            if not isinstance(name, str) or function.__module__ != module.__name__:
                continue
            reference = f"{module_name}:{attribute}"
            by_reference[reference] = function
            if name in owner:
                problems.append(
                    f"plugins[{i}]: handler name {name!r} of {reference} is already "
                    f"registered by {owner[name]}"
                )
                continue
            owner[name] = reference
            by_name[name] = function
            if declared := getattr(function, _EXAMPLES, ()):
                examples[name] = declared
    registry = Registry(tuple(modules), by_name, by_reference, examples, tuple(unimported))
    return registry, problems
