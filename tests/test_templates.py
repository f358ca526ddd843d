"""bot.templates: sandboxed Jinja, undefined variables as errors that name the template."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.exceptions import TemplateError
from bot.templates import Templates


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path


def templates_with(folder: Path, **files: str) -> Templates:
    """A Templates over `folder` holding `files` (name_ext -> name.ext)."""
    for name, source in files.items():
        (folder / name.replace("_", ".")).write_text(source, encoding="utf-8")
    return Templates(folder)


def test_render_fills_in_variables(folder: Path) -> None:
    templates = templates_with(folder, hi_j2="Hello {{ name }}, you are {{ members | length }}.")
    assert templates.render("hi.j2", {"name": "Ana", "members": ["a", "b", "c"]}) == (
        "Hello Ana, you are 3."
    )


def test_render_strips_surrounding_whitespace(folder: Path) -> None:
    templates = templates_with(folder, pad_j2="\n\n  {{ word }}  \n\n")
    assert templates.render("pad.j2", {"word": "ok"}) == "ok"


def test_render_trims_block_lines(folder: Path) -> None:
    source = "Updates:\n{% for u in updates %}\n- {{ u }}\n{% endfor %}\n"
    templates = templates_with(folder, list_j2=source)
    assert templates.render("list.j2", {"updates": ["one", "two"]}) == "Updates:\n- one\n- two"


def test_render_does_not_escape_html(folder: Path) -> None:
    templates = templates_with(folder, raw_j2="{{ text }}")
    assert templates.render("raw.j2", {"text": "<b>Tom & Jerry</b>"}) == "<b>Tom & Jerry</b>"


def test_undefined_variable_is_a_template_error_naming_the_template(folder: Path) -> None:
    templates = templates_with(folder, hi_j2="Hello {{ name }}")
    with pytest.raises(TemplateError) as caught:
        templates.render("hi.j2", {})
    assert "'hi.j2'" in str(caught.value)
    assert "'name' is undefined" in str(caught.value)


def test_undefined_attribute_is_a_template_error(folder: Path) -> None:
    templates = templates_with(folder, ticket_j2="Ticket {{ match.ticket_id }}")
    with pytest.raises(TemplateError, match=r"'ticket\.j2'.*ticket_id"):
        templates.render("ticket.j2", {"match": {}})


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ '{0.__class__}'.format(1) }}",
        "{{ members.__len__() }}",
    ],
)
def test_sandbox_refuses_python_internals_with_a_template_error(folder: Path, source: str) -> None:
    templates = templates_with(folder, evil_j2=source)
    with pytest.raises(TemplateError, match=r"^template 'evil\.j2': "):
        templates.render("evil.j2", {"members": ["11234567891"]})


def test_sandbox_refuses_to_mutate_the_state(folder: Path) -> None:
    templates = templates_with(folder, mutate_j2="{{ state.update(owner='me') }}done")
    state: dict[str, object] = {"owner": "you"}
    with pytest.raises(TemplateError, match=r"mutate\.j2"):
        templates.render("mutate.j2", {"state": state})
    assert state == {"owner": "you"}


def test_sandbox_refuses_to_mutate_the_members(folder: Path) -> None:
    templates = templates_with(folder, mutate_j2="{{ members.append('11234567899') }}")
    members = ["11234567891"]
    with pytest.raises(TemplateError):
        templates.render("mutate.j2", {"members": members})
    assert members == ["11234567891"]


def test_missing_template_is_a_template_error_naming_it(folder: Path) -> None:
    templates = Templates(folder)
    with pytest.raises(TemplateError) as caught:
        templates.render("nope.txt.j2", {})
    assert "'nope.txt.j2' not found" in str(caught.value)
    assert str(folder) in str(caught.value)


def test_error_raised_inside_the_template_is_a_template_error(folder: Path) -> None:
    templates = templates_with(folder, div_j2="{{ 1 / count }}")
    with pytest.raises(TemplateError, match=r"'div\.j2': ZeroDivisionError"):
        templates.render("div.j2", {"count": 0})


def test_syntax_error_at_render_is_a_template_error(folder: Path) -> None:
    templates = templates_with(folder, broken_j2="{% if %}x{% endif %}")
    with pytest.raises(TemplateError, match=r"'broken\.j2'"):
        templates.render("broken.j2", {})


def test_phone_filter_formats_a_number_for_people(folder: Path) -> None:
    templates = templates_with(folder, who_j2="{{ sender | phone }} wrote")
    assert templates.render("who.j2", {"sender": "12125551234"}) == "+1 212-555-1234 wrote"


def test_phone_filter_leaves_what_is_not_a_number_unchanged(folder: Path) -> None:
    templates = templates_with(folder, who_j2="{{ sender | phone }}")
    assert templates.render("who.j2", {"sender": "someone"}) == "someone"


def test_problem_is_none_for_a_template_that_loads(folder: Path) -> None:
    templates = templates_with(folder, ok_j2="{{ x }}")
    assert templates.problem("ok.j2") is None


def test_problem_names_a_syntax_error_and_its_line(folder: Path) -> None:
    templates = templates_with(folder, broken_j2="line one\n{{ x }\n")
    problem = templates.problem("broken.j2")
    assert problem is not None
    assert problem.startswith("template 'broken.j2': ")
    assert "(line 2)" in problem


def test_problem_names_a_missing_template_and_the_folder(folder: Path) -> None:
    problem = Templates(folder).problem("missing.j2")
    assert problem == f"template 'missing.j2' not found in {folder}"


def test_problem_names_a_template_that_is_not_utf8(folder: Path) -> None:
    (folder / "latin1.j2").write_bytes("Café {{ x }}".encode("latin-1"))
    problem = Templates(folder).problem("latin1.j2")
    assert problem is not None
    assert problem.startswith("template 'latin1.j2'")


def test_render_of_a_template_that_is_not_utf8_is_a_template_error(folder: Path) -> None:
    (folder / "latin1.j2").write_bytes("Café {{ x }}".encode("latin-1"))
    with pytest.raises(TemplateError, match=r"'latin1\.j2'"):
        Templates(folder).render("latin1.j2", {"x": 1})


def test_problem_is_none_for_a_present_template_and_names_a_missing_one(folder: Path) -> None:
    templates = templates_with(folder, here_j2="x")
    assert templates.problem("here.j2") is None
    assert "'gone.j2' not found" in str(templates.problem("gone.j2"))


def test_template_in_a_subfolder_renders(folder: Path) -> None:
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.j2").write_text("deep {{ x }}", encoding="utf-8")
    assert Templates(folder).render("sub/deep.j2", {"x": 1}) == "deep 1"


def test_template_outside_the_folder_is_not_found(folder: Path) -> None:
    inner = folder / "templates"
    inner.mkdir()
    (folder / "secret.j2").write_text("secret", encoding="utf-8")
    with pytest.raises(TemplateError, match="not found"):
        Templates(inner).render("../secret.j2", {})


def test_shipped_templates_have_no_problems() -> None:
    shipped = Path(__file__).resolve().parent.parent / "templates"
    templates = Templates(shipped)
    names = sorted(p.name for p in shipped.glob("*.j2"))
    assert names
    assert {name: templates.problem(name) for name in names} == dict.fromkeys(names)
