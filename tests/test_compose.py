"""bot.compose: the Reply of a broadcast that answers no message."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.compose import compose
from bot.context import Media, Reply
from bot.exceptions import HandlerError, InvalidInput
from bot.templates import Templates

BOT = "11234567890"
MEMBERS = ["11234567891", "11234567892", "11234567893"]


@pytest.fixture
def templates(tmp_path: Path) -> Templates:
    files = {
        "welcome.j2": "Hi {{ members | length }} people, from {{ bot_number }}.",
        "visit.j2": "Visit on {{ day }} for {{ members[0] }}.",
        "needs.j2": "Hello {{ name }}",
        "empty.j2": "{% if false %}never{% endif %}",
        "broken.j2": "{% if %}",
        "evil.j2": "{{ ''.__class__ }}",
    }
    for name, source in files.items():
        (tmp_path / name).write_text(source, encoding="utf-8")
    return Templates(tmp_path)


def test_text_becomes_a_text_reply_to_the_group(templates: Templates) -> None:
    reply = compose(templates, bot_number=BOT, members=MEMBERS, text="Crew arrives at 9")
    assert reply == Reply("Crew arrives at 9")
    assert not reply.to_sender_only


def test_template_sees_members_and_bot_number(templates: Templates) -> None:
    reply = compose(templates, bot_number=BOT, members=MEMBERS, template="welcome.j2")
    assert reply.text == f"Hi 3 people, from {BOT}."


def test_template_sees_the_callers_variables(templates: Templates) -> None:
    reply = compose(
        templates,
        bot_number=BOT,
        members=MEMBERS,
        template="visit.j2",
        variables={"day": "Friday"},
    )
    assert reply.text == f"Visit on Friday for {MEMBERS[0]}."


def test_media_becomes_a_media_reply(templates: Templates) -> None:
    media = Media("image", "https://example.com/van.jpg", caption="Our van")
    reply = compose(templates, bot_number=BOT, members=MEMBERS, media=media)
    assert reply.media == media
    assert reply.text is None


def test_text_and_template_together_are_refused(templates: Templates) -> None:
    with pytest.raises(InvalidInput) as caught:
        compose(templates, bot_number=BOT, members=MEMBERS, text="hi", template="welcome.j2")
    assert "exactly one of text, template or media" in caught.value.message
    assert "got text, template" in caught.value.message


def test_text_and_media_together_are_refused(templates: Templates) -> None:
    media = Media("image", "https://example.com/a.jpg")
    with pytest.raises(InvalidInput, match="got text, media"):
        compose(templates, bot_number=BOT, members=MEMBERS, text="hi", media=media)


def test_nothing_to_send_is_refused(templates: Templates) -> None:
    with pytest.raises(InvalidInput, match="got none"):
        compose(templates, bot_number=BOT, members=MEMBERS)


def test_blank_text_is_refused_naming_text(templates: Templates) -> None:
    with pytest.raises(InvalidInput) as caught:
        compose(templates, bot_number=BOT, members=MEMBERS, text="   ")
    assert caught.value.field == "text"


def test_undefined_template_variable_is_invalid_input_naming_template(
    templates: Templates,
) -> None:
    with pytest.raises(InvalidInput) as caught:
        compose(templates, bot_number=BOT, members=MEMBERS, template="needs.j2")
    assert caught.value.field == "template"
    assert "'needs.j2'" in caught.value.message
    assert "name" in caught.value.message


def test_missing_template_is_invalid_input_naming_template(templates: Templates) -> None:
    with pytest.raises(InvalidInput) as caught:
        compose(templates, bot_number=BOT, members=MEMBERS, template="nope.j2")
    assert caught.value.field == "template"
    assert "not found" in caught.value.message


@pytest.mark.parametrize("name", ["broken.j2", "evil.j2"])
def test_template_that_fails_to_render_is_invalid_input_naming_template(
    templates: Templates, name: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        compose(templates, bot_number=BOT, members=MEMBERS, template=name)
    assert caught.value.field == "template"
    assert repr(name) in caught.value.message


def test_template_rendering_no_text_is_refused(templates: Templates) -> None:
    with pytest.raises(InvalidInput) as caught:
        compose(templates, bot_number=BOT, members=MEMBERS, template="empty.j2")
    assert caught.value.field == "template"
    assert "rendered no text" in caught.value.message


def test_a_variable_cannot_replace_the_members(templates: Templates) -> None:
    reply = compose(
        templates,
        bot_number=BOT,
        members=MEMBERS,
        template="welcome.j2",
        variables={"members": ["x"], "bot_number": "0"},
    )
    assert reply.text == f"Hi 3 people, from {BOT}."


def test_an_empty_caption_is_no_caption_and_a_long_one_is_refused() -> None:
    assert Media("image", "https://example.com/a.jpg", caption="  ").caption is None
    with pytest.raises(HandlerError, match=r"Media.caption: expected at most 3000 characters"):
        Media("image", "https://example.com/a.jpg", caption="x" * 3001)


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        ("image", "https://example.com/photo.tiff"),
        ("vcard", "https://example.com/card.txt"),
        ("audio", "https://example.com/voice"),
        ("video", "https://example.com/clip.mov?x=1"),
    ],
)
def test_a_media_type_the_api_refuses_is_refused_before_queueing(kind: str, url: str) -> None:
    with pytest.raises(HandlerError, match=rf"Media.url: a {kind} must be one of"):
        Media(kind, url)  # type: ignore[arg-type]


def test_media_types_the_api_takes_are_accepted() -> None:
    assert Media("image", "https://example.com/a/Van.JPG?size=2").kind == "image"
    assert Media("vcard", "https://example.com/on-call.vcf").kind == "vcard"
    assert Media("file", "https://example.com/invoice").kind == "file"  # any type of file
