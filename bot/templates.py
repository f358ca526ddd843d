"""Jinja templates, rendered in the sandbox with undefined variables as errors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bot.exceptions import TemplateError
from bot.numbers import display


class Templates:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Immutable sandbox: a template can neither reach Python internals nor mutate the
        # state or members it is given. Messages are plain text, so no HTML autoescaping.
        self._env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(directory),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            # Read once: templates are checked at start-up (`groupbot check`, `run`), and a
            # file changed afterwards takes effect at the next start, checked again; no
            # stat() of the file for every message.
            auto_reload=False,
        )
        self._env.filters["phone"] = display

    def problem(self, name: str) -> str | None:
        """Why `name` cannot be used, or None when it loads."""
        try:
            self._env.get_template(name)
        except jinja2.TemplateNotFound:
            return f"template {name!r} not found in {self.directory}"
        except jinja2.TemplateSyntaxError as exc:
            return f"template {name!r}: {exc.message} (line {exc.lineno})"
        except UnicodeDecodeError as exc:
            return f"template {name!r}: not UTF-8 text (byte {exc.start})"
        return None

    def names_used(self, name: str) -> set[str]:
        """The variables `name` reads without defining them itself (its globals aside):
        what whoever renders it must give. Call after `problem` found none."""
        source, _, _ = self._env.loader.get_source(self._env, name)  # type: ignore[union-attr]
        used: set[str] = meta.find_undeclared_variables(self._env.parse(source))
        return used - set(self._env.globals)

    def keys_read(self, name: str, variable: str) -> set[str]:
        """The keys `name` reads of the mapping `variable` (`variable.key`,
        `variable["key"]`) that it does not allow to be missing anywhere: a key it checks
        (`is defined`, `"key" in variable`) or gives a default (`| default(...)`) is its
        own business, and so is every key when it binds `variable` itself (a loop, a set).
        A key computed at run time is not known here. Call after `problem` found none."""
        source, _, _ = self._env.loader.get_source(self._env, name)  # type: ignore[union-attr]
        parsed = self._env.parse(source)
        if any(n.name == variable and n.ctx != "load" for n in parsed.find_all(nodes.Name)):
            return set()
        allowed: set[str] = set()
        for test in parsed.find_all(nodes.Test):
            if test.name in ("defined", "undefined"):
                allowed |= _keys_in(test.node, variable)
        for default in parsed.find_all(nodes.Filter):
            if default.name in ("default", "d") and default.node is not None:
                allowed |= _keys_in(default.node, variable)
        for compare in parsed.find_all(nodes.Compare):
            key = compare.expr.value if isinstance(compare.expr, nodes.Const) else None
            for operand in compare.ops:
                if operand.op in ("in", "notin") and _reads(operand.expr, variable):
                    allowed |= {key} if isinstance(key, str) else set()
        return _keys_in(parsed, variable) - allowed

    def render(self, name: str, variables: Mapping[str, Any]) -> str:
        """Render `name`; any failure becomes a TemplateError naming the template."""
        try:
            return self._env.get_template(name).render(variables).strip()
        except jinja2.TemplateNotFound:
            raise TemplateError(f"template {name!r} not found in {self.directory}") from None
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"template {name!r}: {exc.message}") from None
        except jinja2.TemplateError as exc:  # syntax errors and sandbox refusals
            raise TemplateError(f"template {name!r}: {exc}") from None
        except Exception as exc:  # a filter or a value's method raising inside the template
            raise TemplateError(f"template {name!r}: {type(exc).__name__}: {exc}") from exc


def _reads(node: nodes.Node, variable: str) -> bool:
    return isinstance(node, nodes.Name) and node.name == variable


def _keys_in(tree: nodes.Node, variable: str) -> set[str]:
    """The keys of `variable` read as `variable.key` or `variable["key"]` in `tree`."""
    keys: set[str] = set()
    for node in [tree, *tree.find_all((nodes.Getattr, nodes.Getitem))]:
        if isinstance(node, nodes.Getattr) and _reads(node.node, variable):
            keys.add(node.attr)
        elif isinstance(node, nodes.Getitem) and _reads(node.node, variable):
            key = node.arg.value if isinstance(node.arg, nodes.Const) else None
            keys |= {key} if isinstance(key, str) else set()
    return keys
