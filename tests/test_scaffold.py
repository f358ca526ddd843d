"""`groupbot new handler NAME`: working code to start from, and config.yaml kept as it was."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from tests.cli_support import environment
from tests.conftest import ROOT
from tests.test_cli import groupbot


def project(folder: Path) -> Path:
    """A copy of the shipped project (config, plugins, templates) to scaffold into."""
    shutil.copy(ROOT / "config.yaml", folder / "config.yaml")
    shutil.copytree(ROOT / "handlers", folder / "handlers")
    shutil.copytree(ROOT / "templates", folder / "templates")
    return folder / "config.yaml"


async def run(*command: str | Path, cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=environment(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode()


@pytest.mark.parametrize(
    "name",
    ["scaffold_probe", "water_heater_with_a_very_long_name_for_i"],  # the longest allowed
)
async def test_a_new_handler_is_wired_checked_clean_and_its_test_passes(
    tmp_path: Path, name: str
) -> None:
    config = project(tmp_path)
    before = config.read_text()
    spoken = name.replace("_", " ")

    result = await groupbot("new", "handler", name, "--config", config, cwd=tmp_path)

    assert result.code == 0, result.err
    written = [f"handlers/{name}.py", f"templates/{name}.txt.j2", f"tests/test_{name}.py"]
    assert all((tmp_path / path).is_file() for path in written)
    after = config.read_text()
    assert (
        after.replace(f"handlers.team, handlers.{name}]", "handlers.team]").replace(
            f"  - name: {name}\n    keywords: [{spoken}]\n"
            f"    handler: {name}\n    template: {name}.txt.j2\n",
            "",
        )
        == before
    )  # only the plugin and the route were added; every comment is still there
    assert (await groupbot("check", "--config", config, cwd=tmp_path)).code == 0
    # The code written passes the checks `make test` runs on the project (whose own package,
    # bot, sits beside handlers/ and tests/).
    (tmp_path / "bot").symlink_to(ROOT / "bot")
    ruff: list[str | Path] = [
        Path(sys.executable).parent / "ruff",
        "--config",
        ROOT / "pyproject.toml",
    ]
    sources = [written[0], written[2]]
    checked = await run(*ruff, "check", "--no-cache", *sources, cwd=tmp_path)
    assert checked == (0, "All checks passed!\n")
    formatted = await run(*ruff, "format", "--check", "--no-cache", *sources, cwd=tmp_path)
    assert formatted[0] == 0, formatted[1]
    code, out = await run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", written[2], cwd=tmp_path
    )
    assert code == 0, out
    assert "1 passed" in out
    # Also from the tests' folder: the fixture finds config.yaml in pytest's root folder.
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytest_in_tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    code, out = await run(*pytest_in_tests, f"test_{name}.py", cwd=tmp_path / "tests")
    assert code == 0, out
    assert "1 passed" in out


@pytest.mark.parametrize(
    ("name", "spoken"), [("x_", "x"), ("a__b", "a b"), ("water_heater_", "water heater")]
)
async def test_the_keyword_is_the_name_s_words_and_the_hint_says_it(
    tmp_path: Path, name: str, spoken: str
) -> None:
    config = project(tmp_path)

    result = await groupbot("new", "handler", name, "--config", config, cwd=tmp_path)

    assert result.code == 0, result.err
    assert f"  - name: {name}\n    keywords: [{spoken}]\n" in config.read_text()
    # The hint works as printed: the command, the config, the keyword.
    [hint] = [line for line in result.out.splitlines() if line.startswith("try it: ")]
    command = shlex.split(hint.removeprefix("try it: ").partition(";")[0])
    assert command[1:] == ["route", "--config", str(config), spoken]
    code, out = await run(*command, cwd=tmp_path)
    assert code == 0, out
    assert f"result: route '{name}' answers (keyword '{spoken}')" in out


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("van", "a route named 'van' is already in"),
        ("eta", "the keyword 'eta' is used by route 'status'"),
        (
            "holiday_hours",
            "'holiday hours please' would be answered by route 'hours' (keyword 'hours'), "
            "which comes before a new route",
        ),
        ("post_update", "a handler named 'post_update' is already registered"),
        ("stop", "'stop' is a carrier keyword"),
        ("class", "expected a Python name in lower case, got 'class'"),
        ("handler", "'handler' is a name the handler's module imports"),
        ("Bad-Name", "expected a Python name in lower case, got 'Bad-Name'"),
    ],
)
async def test_a_name_that_would_not_work_is_refused_and_nothing_is_written(
    tmp_path: Path, name: str, reason: str
) -> None:
    config = project(tmp_path)
    before = config.read_text()

    result = await groupbot("new", "handler", name, "--config", config, cwd=tmp_path)

    assert result.code == 2
    assert reason in result.err
    assert config.read_text() == before
    assert not (tmp_path / "tests").exists()


async def test_the_config_keeps_its_own_indentation(tmp_path: Path) -> None:
    project(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(
        "---\n"
        'bot: {number: "11234567890"}\n'
        "plugins:\n- handlers.support\n"
        "templates: templates\n"
        "routes:\n- name: hours   # keep me\n  keywords: [hours]\n  template: hours.txt.j2\n"
    )

    result = await groupbot("new", "handler", "scaffold_probe", "--config", config, cwd=tmp_path)

    assert result.code == 0, result.err
    assert config.read_text() == (
        "---\n"
        'bot: {number: "11234567890"}\n'
        "plugins:\n- handlers.support\n- handlers.scaffold_probe\n"
        "templates: templates\n"
        "routes:\n- name: hours   # keep me\n  keywords: [hours]\n  template: hours.txt.j2\n"
        "- name: scaffold_probe\n  keywords: [scaffold probe]\n  handler: scaffold_probe\n"
        "  template: scaffold_probe.txt.j2\n"
    )
