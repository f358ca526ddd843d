"""bot.broadcast: a Reply becomes one message per member, the others as participants."""

from __future__ import annotations

import json

import pytest

from bot.broadcast import plan
from bot.context import Reply
from bot.groups import Group
from bot.models import MEDIA_KINDS, MediaKind, OutboundMessage
from tests.conftest import DATA

BOT = "11234567890"
MEMBERS = ["11234567891", "11234567892", "11234567893", "11234567894", "11234567895"]


def group_of(size: int) -> Group:
    # The bot's own number is in the inbound list, as in a real webhook; Group.of drops it.
    return Group.of([*MEMBERS[:size], BOT], bot_number=BOT)


def by_recipient(messages: list[OutboundMessage]) -> dict[str, OutboundMessage]:
    return {m.to: m for m in messages}


@pytest.mark.parametrize("size", [3, 5])
def test_one_message_per_member(size: int) -> None:
    messages = plan(Reply("On my way"), group_of(size), bot_number=BOT)
    assert len(messages) == size
    assert sorted(m.to for m in messages) == sorted(MEMBERS[:size])


@pytest.mark.parametrize("size", [3, 5])
def test_participants_are_all_the_other_members(size: int) -> None:
    members = MEMBERS[:size]
    for message in plan(Reply("On my way"), group_of(size), bot_number=BOT):
        assert sorted(message.participants) == sorted(m for m in members if m != message.to)
        assert message.to not in message.participants
        assert BOT not in message.participants
        assert len(message.participants) == size - 1


@pytest.mark.parametrize("size", [3, 5])
def test_every_message_is_from_the_bot_on_mms(size: int) -> None:
    for message in plan(Reply("On my way"), group_of(size), bot_number=BOT):
        assert message.from_ == BOT
        assert message.to != BOT
        assert message.channel == "mms"
        assert message.message_type == "text"
        assert message.text == "On my way"


def test_participants_keep_the_group_order() -> None:
    messages = by_recipient(plan(Reply("hi"), group_of(5), bot_number=BOT))
    assert messages[MEMBERS[2]].participants == [MEMBERS[0], MEMBERS[1], MEMBERS[3], MEMBERS[4]]


def test_three_member_plan_is_exactly_the_documented_requests() -> None:
    expected = json.loads((DATA / "vonage" / "outbound-mms-group.docs-example.json").read_text())
    messages = plan(Reply("Hello from Vonage"), group_of(3), bot_number=BOT)
    assert {m.to: m.to_api() for m in messages} == {body["to"]: body for body in expected}


def test_reply_to_sender_only_is_one_message_without_mms() -> None:
    reply = Reply("Your code is 1234", to_sender_only=True)
    messages = plan(reply, group_of(5), bot_number=BOT, sender=MEMBERS[3])
    assert len(messages) == 1
    assert messages[0].to == MEMBERS[3]
    assert messages[0].mms is None
    assert "mms" not in messages[0].to_api()
    assert messages[0].to_api()["text"] == "Your code is 1234"


def test_reply_to_sender_only_without_a_sender_is_refused() -> None:
    with pytest.raises(ValueError, match="sender"):
        plan(Reply("secret", to_sender_only=True), group_of(3), bot_number=BOT)


def test_image_reply_is_an_image_message_with_url_and_caption() -> None:
    reply = Reply.image("https://example.com/van.jpg", caption="Our van")
    messages = plan(reply, group_of(3), bot_number=BOT)
    assert len(messages) == 3
    for message in messages:
        body = message.to_api()
        assert body["message_type"] == "image"
        assert body["image"] == {"url": "https://example.com/van.jpg", "caption": "Our van"}
        assert "text" not in body
        assert len(body["mms"]["participants"]) == 2


def test_vcard_reply_to_sender_is_a_vcard_message_without_mms() -> None:
    reply = Reply.vcard("https://example.com/on-call.vcf", "On-call", to_sender_only=True)
    [message] = plan(reply, group_of(3), bot_number=BOT, sender=MEMBERS[1])
    assert message.to_api() == {
        "to": MEMBERS[1],
        "from": BOT,
        "channel": "mms",
        "message_type": "vcard",
        "vcard": {"url": "https://example.com/on-call.vcf", "caption": "On-call"},
    }


FILES = {"image": "a.png", "audio": "a.mp3", "video": "a.mp4", "file": "a.pdf", "vcard": "a.vcf"}


@pytest.mark.parametrize("kind", MEDIA_KINDS)
def test_every_media_kind_is_sent_under_its_own_field(kind: MediaKind) -> None:
    url = f"https://example.com/{FILES[kind]}"
    reply = getattr(Reply, kind)(url, caption="c")
    for message in plan(reply, group_of(3), bot_number=BOT):
        body = message.to_api()
        assert body["message_type"] == kind
        assert body[kind] == {"url": url, "caption": "c"}
        assert not {k for k in MEDIA_KINDS if k != kind} & body.keys()


def test_media_without_caption_omits_caption() -> None:
    [message, *_] = plan(Reply.image("https://example.com/a.jpg"), group_of(3), bot_number=BOT)
    assert message.to_api()["image"] == {"url": "https://example.com/a.jpg"}


def test_one_member_group_gets_one_message_without_participants() -> None:
    group = Group.of([MEMBERS[0], BOT], bot_number=BOT)
    messages = plan(Reply("Hello"), group, bot_number=BOT)
    assert len(messages) == 1
    assert messages[0].to == MEMBERS[0]
    assert messages[0].participants == []
    assert "mms" not in messages[0].to_api()


def test_sender_is_ignored_for_a_reply_to_the_whole_group() -> None:
    messages = plan(Reply("all"), group_of(3), bot_number=BOT, sender=MEMBERS[0])
    assert sorted(m.to for m in messages) == sorted(MEMBERS[:3])
