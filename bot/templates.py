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
        """The keys `name` reads of the mapping `variable`, as `variable.key` or
        `variable["key"]`, unless it allows for their absence (`| default(...)`, `is
        defined`). A key computed at run time is not known here. Call after `problem` found
        none."""
        source, _, _ = self._env.loader.get_source(self._env, name)  # type: ignore[union-attr]
        parsed = self._env.parse(source)
        guarded = {
            id(node.node)
            for node in [*parsed.find_all(nodes.Filter), *parsed.find_all(nodes.Test)]
            if node.name in ("default", "d", "defined", "undefined")
        }
        keys: set[str] = set()
        for read in parsed.find_all(nodes.Getattr):
            if _reads(read.node, variable) and id(read) not in guarded:
                keys.add(read.attr)
        for item in parsed.find_all(nodes.Getitem):
            key = item.arg.value if isinstance(item.arg, nodes.Const) else None
            if _reads(item.node, variable) and id(item) not in guarded and isinstance(key, str):
                keys.add(key)
        return keys

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
