"""bot.numbers: E.164 digits without `+`, masking for logs, display for people."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.exceptions import InvalidInput, InvalidNumber
from bot.numbers import _parsed, display, is_nanp_digits, mask, normalize


@pytest.mark.parametrize(
    "raw",
    [
        "11234567891",
        "+11234567891",
        "+1 (123) 456-7891",
        "+1 123.456.7891",
        "0011234567891",
        "001 123 456 7891",
        "  11234567891  ",
    ],
)
def test_normalize_accepts_what_people_and_the_api_write(raw: str) -> None:
    assert normalize(raw) == "11234567891"


def test_normalize_keeps_a_non_us_number_in_its_own_country() -> None:
    assert normalize("+44 7700 900001") == "447700900001"


@pytest.mark.parametrize("raw", ["abc", "", "   ", "+1", "hello 11234567891", "n/a"])
def test_normalize_rejects_junk_naming_the_field(raw: str) -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalize(raw, field="mms.participants[2]")
    assert caught.value.field == "mms.participants[2]"
    assert repr(raw) in caught.value.message
    assert str(caught.value).startswith("mms.participants[2]: ")


@pytest.mark.parametrize("raw", ["123", "12345", "1123"])
def test_normalize_rejects_a_number_that_is_too_short(raw: str) -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalize(raw, field="to")
    assert caught.value.field == "to"
    assert repr(raw) in caught.value.message


def test_normalize_rejects_a_number_that_is_too_long() -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalize("11234567891234567", field="to")
    assert caught.value.field == "to"


def test_normalize_names_number_as_the_default_field() -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalize("junk")
    assert caught.value.field == "number"


def test_invalid_number_is_an_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        normalize("junk")


def test_normalize_is_idempotent() -> None:
    once = normalize("+1 (123) 456-7891")
    assert normalize(once) == once


def test_mask_keeps_only_the_last_four_digits() -> None:
    masked = mask("11234567891")
    assert masked.endswith("7891")
    assert len(masked) == len("11234567891")
    assert "1123456" not in masked
    assert set(masked[:-4]) == {"•"}


@pytest.mark.parametrize("number", ["1", "123", "1234"])
def test_mask_hides_a_number_of_four_digits_or_fewer_entirely(number: str) -> None:
    assert mask(number) == "•" * len(number)


def test_mask_of_five_digits_shows_four() -> None:
    assert mask("12345") == "•2345"


def test_display_formats_a_us_number_for_people() -> None:
    assert display("12125551234") == "+1 212-555-1234"


def test_display_formats_a_uk_number_for_people() -> None:
    assert display("447700900001") == "+44 7700 900001"


def test_display_formats_the_documented_example() -> None:
    # numbers.display's docstring, and every number in the project's examples and the Vonage
    # docs, use the 1-123-456-789x range.
    assert display("11234567891") == "+1 123-456-7891"


@pytest.mark.parametrize("text", ["abc", ""])
def test_display_returns_what_is_not_a_number_unchanged(text: str) -> None:
    assert display(text) == text


def test_ten_digits_without_country_code_ask_for_the_us_one() -> None:
    with pytest.raises(InvalidNumber, match=r"did you mean 12025550111\?") as raised:
        normalize("(202) 555-0111", field="to[0]")
    assert raised.value.field == "to[0]"
    assert normalize("+1 202 555 0111") == "12025550111"


@given(st.from_regex(r"1[0-9]{10}", fullmatch=True))
def test_the_library_returns_a_north_american_number_in_api_digits_unchanged(raw: str) -> None:
    # Why normalize() may return such a number as it is, without parsing it.
    assert is_nanp_digits(raw)
    assert _parsed(raw, field="number") == raw


@pytest.mark.parametrize(
    "raw", ["11234567891 ", "+11234567891", "2123456789", "112345678912", "1123456789\u0661"]
)
def test_only_eleven_ascii_digits_starting_with_1_skip_the_library(raw: str) -> None:
    assert not is_nanp_digits(raw)
