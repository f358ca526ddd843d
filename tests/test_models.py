"""bot.models: inbound webhooks and status callbacks parsed once, bad fields named."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import pytest

from bot.exceptions import InvalidInput
from bot.models import (
    MEDIA_KINDS,
    InboundMessage,
    MediaKind,
    OutboundMedia,
    OutboundMessage,
    OutboundMms,
    field_path,
    normalize_all,
    parse_inbound,
    parse_status,
)
from tests.conftest import DATA

VONAGE = DATA / "vonage"


def example() -> dict[str, Any]:
    loaded = json.loads((VONAGE / "inbound-mms-group.example.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def encode(body: object) -> bytes:
    return json.dumps(body).encode()


def media_body(kind: str, **fields: Any) -> dict[str, Any]:
    body = example()
    del body["text"]
    body["message_type"] = kind
    body.update(fields)
    return body


def invalid(body: object) -> InvalidInput:
    data = body if isinstance(body, bytes) else encode(body)
    with pytest.raises(InvalidInput) as caught:
        parse_inbound(data)
    return caught.value


# The documented example


def test_documented_group_example_parses() -> None:
    message = parse_inbound((VONAGE / "inbound-mms-group.example.json").read_bytes())
    assert message.channel == "mms"
    assert message.message_uuid == UUID("aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab")
    assert message.to == "447700900000"
    assert message.sender == "447700900001"
    assert message.participants == ["447700900002"]
    assert message.message_type == "text"
    assert message.body_text == "This is sample text."
    assert message.media == []
    assert message.timestamp.year == 2025
    assert message.origin is not None
    assert message.origin.network_code == "12345"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("from", "+44 7700 900001"),
        ("from", "+447700900001"),
        ("to", "447700 900000"),
        ("from", "12"),
        ("from", "1" * 16),
    ],
)
def test_webhook_numbers_must_be_e164_digits_as_the_api_writes_them(field: str, value: str) -> None:
    body = example()
    body[field] = value
    with pytest.raises(InvalidInput) as raised:
        parse_inbound(encode(body))
    assert raised.value.field == field
    assert "expected E.164 digits without '+'" in raised.value.message


def test_a_formatted_participant_is_refused_naming_its_index() -> None:
    body = example()
    body["mms"] = {"participants": ["447700900002", "0044 7700 900002"]}
    with pytest.raises(InvalidInput) as raised:
        parse_inbound(encode(body))
    assert raised.value.field == "mms.participants[1]"


def test_message_without_mms_has_no_participants() -> None:
    body = example()
    del body["mms"]
    assert parse_inbound(encode(body)).participants == []


def test_unknown_fields_are_ignored() -> None:
    body = example()
    body["brand_new_field"] = {"anything": 1}
    assert parse_inbound(encode(body)).body_text == "This is sample text."


# Media


@pytest.mark.parametrize("kind", MEDIA_KINDS)
def test_single_attachment_of_each_kind_is_a_typed_media_item(kind: MediaKind) -> None:
    url = f"https://api-us.nexmo.com/v3/media/{kind}-1"
    message = parse_inbound(encode(media_body(kind, **{kind: {"url": url, "caption": "See"}})))
    assert message.message_type == kind
    assert len(message.media) == 1
    item = message.media[0]
    assert item.type == kind
    assert item.url == url
    assert item.caption == "See"


@pytest.mark.parametrize("kind", MEDIA_KINDS)
def test_caption_of_an_attachment_is_the_body_text(kind: MediaKind) -> None:
    body = media_body(kind, **{kind: {"url": "https://x.example/m", "caption": "Status?"}})
    assert parse_inbound(encode(body)).body_text == "Status?"


@pytest.mark.parametrize("kind", MEDIA_KINDS)
def test_attachment_without_caption_has_empty_body_text(kind: MediaKind) -> None:
    body = media_body(kind, **{kind: {"url": "https://x.example/m"}})
    message = parse_inbound(encode(body))
    assert message.body_text == ""
    assert message.media[0].caption is None


def test_file_name_is_kept() -> None:
    body = media_body("file", file={"url": "https://x.example/f.pdf", "name": "quote.pdf"})
    assert parse_inbound(encode(body)).media[0].name == "quote.pdf"


def test_content_list_gives_every_attachment_in_order() -> None:
    content = [
        {"type": "image", "url": "https://x.example/1.jpg", "caption": "The leak"},
        {"type": "video", "url": "https://x.example/2.mp4"},
        {"type": "audio", "url": "https://x.example/3.mp3"},
        {"type": "file", "url": "https://x.example/4.pdf", "name": "4.pdf"},
        {"type": "vcard", "url": "https://x.example/5.vcf"},
    ]
    body = media_body("image", image=content[0], content=content)
    message = parse_inbound(encode(body))
    assert [(m.type, m.url) for m in message.media] == [(c["type"], c["url"]) for c in content]
    assert message.media[3].name == "4.pdf"
    assert message.body_text == "The leak"


def test_caption_of_a_later_attachment_is_the_body_text_when_the_first_has_none() -> None:
    content = [
        {"type": "image", "url": "https://x.example/1.jpg"},
        {"type": "image", "url": "https://x.example/2.jpg", "caption": "Status?"},
    ]
    body = media_body("image", image=content[0], content=content)
    assert parse_inbound(encode(body)).body_text == "Status?"


def test_text_wins_over_captions_as_body_text() -> None:
    body = example()
    body["content"] = [{"type": "image", "url": "https://x.example/1.jpg", "caption": "pic"}]
    message = parse_inbound(encode(body))
    assert message.body_text == "This is sample text."
    assert [m.type for m in message.media] == ["image"]


def test_content_item_with_an_unknown_type_is_refused() -> None:
    content = [{"type": "sticker", "url": "https://x.example/1.webp"}]
    error = invalid(media_body("image", image={"url": "https://x.example/a"}, content=content))
    assert error.field == "content[0].type"


def test_content_item_without_url_is_refused() -> None:
    content = [{"type": "image", "url": "https://x.example/1.jpg"}, {"type": "image"}]
    error = invalid(media_body("image", image={"url": "https://x.example/a"}, content=content))
    assert error.field == "content[1].url"
    assert error.message == "required field is missing"


def test_attachment_with_an_empty_url_is_refused() -> None:
    assert invalid(media_body("image", image={"url": ""})).field == "image.url"


# Bad bodies name their field


def test_missing_from_is_named() -> None:
    body = example()
    del body["from"]
    error = invalid(body)
    assert error.field == "from"
    assert error.message == "required field is missing"


def test_bad_second_participant_is_named() -> None:
    body = example()
    body["mms"] = {"participants": ["447700900002", "not-a-number"]}
    error = invalid(body)
    assert error.field == "mms.participants[1]"
    assert "'not-a-number'" in error.message


def test_participant_that_is_not_a_string_is_named() -> None:
    body = example()
    body["mms"] = {"participants": [447700900002]}
    assert invalid(body).field == "mms.participants[0]"


def test_bad_sender_number_is_named() -> None:
    body = example()
    body["from"] = "12"
    assert invalid(body).field == "from"


@pytest.mark.parametrize("kind", MEDIA_KINDS)
def test_media_type_without_its_payload_is_named(kind: MediaKind) -> None:
    error = invalid(media_body(kind))
    assert error.field == kind
    assert repr(kind) in error.message


def test_text_type_without_text_is_named() -> None:
    body = example()
    del body["text"]
    assert invalid(body).field == "text"


def test_sms_channel_is_refused() -> None:
    body = example()
    body["channel"] = "sms"
    error = invalid(body)
    assert error.field == "channel"
    assert "mms" in error.message


def test_unknown_message_type_is_refused() -> None:
    body = example()
    body["message_type"] = "sticker"
    assert invalid(body).field == "message_type"


def test_bad_message_uuid_is_named() -> None:
    body = example()
    body["message_uuid"] = "not-a-uuid"
    assert invalid(body).field == "message_uuid"


def test_bad_timestamp_is_named() -> None:
    body = example()
    body["timestamp"] = "yesterday"
    assert invalid(body).field == "timestamp"


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"channel": "mms",'])
def test_invalid_json_names_the_body(raw: bytes) -> None:
    error = invalid(raw)
    assert error.field == "(body)"
    assert "JSON" in error.message


@pytest.mark.parametrize("raw", [b"[1, 2]", b"[]", b'"text"', b"42", b"null"])
def test_json_that_is_not_an_object_names_the_body(raw: bytes) -> None:
    error = invalid(raw)
    assert error.field == "(body)"
    assert error.message == "expected a JSON object"


def test_invalid_input_str_names_field_first() -> None:
    body = example()
    del body["from"]
    assert str(invalid(body)) == "from: required field is missing"


# Status callbacks


def test_submitted_status_example_parses() -> None:
    status = parse_status((VONAGE / "message-status-mms.submitted.example.json").read_bytes())
    assert status.status == "submitted"
    assert status.message_uuid == UUID("aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab")
    assert status.from_ == "447700900001"
    assert status.to == "447700900000"
    assert status.client_ref == "abc123"
    assert status.usage is not None
    assert status.usage.price == "0.0333"
    assert status.usage.currency == "EUR"
    assert status.error is None


def test_rejected_status_example_carries_its_error() -> None:
    status = parse_status((VONAGE / "message-status-mms.rejected.example.json").read_bytes())
    assert status.status == "rejected"
    assert status.error is not None
    assert status.error.title == "1000"
    assert status.error.detail is not None
    assert status.error.detail.startswith("Throttled")


def test_status_with_unknown_status_value_is_named() -> None:
    body = json.loads((VONAGE / "message-status-mms.submitted.example.json").read_text())
    body["status"] = "exploded"
    with pytest.raises(InvalidInput) as caught:
        parse_status(encode(body))
    assert caught.value.field == "status"


def test_status_without_message_uuid_is_named() -> None:
    body = json.loads((VONAGE / "message-status-mms.submitted.example.json").read_text())
    del body["message_uuid"]
    with pytest.raises(InvalidInput) as caught:
        parse_status(encode(body))
    assert caught.value.field == "message_uuid"


def test_status_that_is_not_json_names_the_body() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_status(b"<xml/>")
    assert caught.value.field == "(body)"


# Outbound


def test_outbound_to_api_uses_the_official_from_field_and_omits_none() -> None:
    message = OutboundMessage.model_validate(
        {
            "to": "11234567891",
            "from": "11234567890",
            "message_type": "text",
            "text": "Hello from Vonage",
            "mms": {"participants": ["11234567892", "11234567893"]},
        }
    )
    assert message.to_api() == {
        "to": "11234567891",
        "from": "11234567890",
        "channel": "mms",
        "message_type": "text",
        "text": "Hello from Vonage",
        "mms": {"participants": ["11234567892", "11234567893"]},
    }


def test_outbound_built_by_python_name_still_sends_from() -> None:
    message = OutboundMessage(
        to="11234567891",
        from_="11234567890",
        message_type="image",
        image=OutboundMedia(url="https://x.example/van.jpg"),
    )
    body = message.to_api()
    assert body["from"] == "11234567890"
    assert "from_" not in body
    assert body["image"] == {"url": "https://x.example/van.jpg"}
    assert "text" not in body
    assert "mms" not in body
    assert "client_ref" not in body


def test_outbound_to_api_round_trips_the_documented_requests() -> None:
    expected = json.loads((VONAGE / "outbound-mms-group.docs-example.json").read_text())
    for body in expected:
        assert OutboundMessage.model_validate(body).to_api() == body


def test_outbound_summary_is_the_text_or_the_attachment() -> None:
    text = OutboundMessage(to="1", from_="2", message_type="text", text="On my way")
    image = OutboundMessage(
        to="1",
        from_="2",
        message_type="image",
        image=OutboundMedia(url="https://x.example/v.jpg", caption="Our van"),
    )
    assert text.summary() == "On my way"
    assert image.summary() == "[image] Our van"


def test_outbound_participants_are_empty_without_mms() -> None:
    one = OutboundMessage(to="11234567891", from_="11234567890", message_type="text", text="hi")
    many = OutboundMessage(
        to="11234567891",
        from_="11234567890",
        message_type="text",
        text="hi",
        mms=OutboundMms(participants=["11234567892"]),
    )
    assert one.participants == []
    assert many.participants == ["11234567892"]


# Helpers


def test_field_path_formats_nested_locations() -> None:
    assert field_path(("mms", "participants", 1)) == "mms.participants[1]"
    assert field_path(("content", 0, "url")) == "content[0].url"
    assert field_path(()) == "(body)"


def test_normalize_all_names_the_first_bad_index() -> None:
    assert normalize_all(["+1 (123) 456-7891", "0011234567892"], "to") == [
        "11234567891",
        "11234567892",
    ]
    with pytest.raises(InvalidInput) as caught:
        normalize_all(["11234567891", "11234567892", "oops"], "to")
    assert caught.value.field == "to[2]"


def test_inbound_model_is_immutable() -> None:
    message: InboundMessage = parse_inbound(encode(example()))
    with pytest.raises(ValueError, match="frozen"):
        message.text = "changed"  # type: ignore[misc]


def test_a_copy_of_an_outbound_message_has_its_own_api_body() -> None:
    message = OutboundMessage.model_validate(
        {"to": "11234567891", "from": "11234567890", "message_type": "text", "text": "hi"}
    )
    assert b"client_ref" not in message.api_json  # computed, and kept

    copied = message.model_copy(update={"client_ref": "b-1/0"})

    assert json.loads(copied.api_json) == copied.to_api()
    assert copied.to_api()["client_ref"] == "b-1/0"
