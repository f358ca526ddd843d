"""Phone numbers as the Messages API writes them: E.164 digits without the `+`."""

from __future__ import annotations

import functools

import phonenumbers

from bot.exceptions import InvalidNumber

MIN_DIGITS = 7  # the API's ToNumber minLength
MAX_DIGITS = 15  # E.164's maximum length
NANP_NATIONAL_DIGITS = 10  # a US or Canadian number without its country code


def normalize(raw: str, *, field: str = "number") -> str:
    """Return `raw` as E.164 digits without `+`, or raise InvalidNumber naming `field`.

    Accepts what people and the API write: `11234567891`, `+1 (123) 456-7891`,
    `001 123 456 7891`. The country code is required: there is no default region, because a
    guess would silently address a stranger.
    """
    if is_nanp_digits(raw):
        # How the Messages API writes every member of a group: the library would return it
        # unchanged (tests/test_numbers.py checks that), after 11 µs of parsing.
        return raw
    return _parsed(raw, field=field)


def is_nanp_digits(raw: str) -> bool:
    """`1` and ten more ASCII digits: a North American number as E.164 digits."""
    return (
        len(raw) == NANP_NATIONAL_DIGITS + 1 and raw[0] == "1" and raw.isdigit() and raw.isascii()
    )


@functools.lru_cache(maxsize=8192)  # the same members write again and again; errors aren't kept
def _parsed(raw: str, *, field: str) -> str:
    text = raw.strip()
    digits = "".join(c for c in text if c.isdigit())
    if not text.startswith(("+", "00")) and len(digits) == NANP_NATIONAL_DIGITS:
        # Ten digits without a country code is how Americans write their numbers; read as
        # E.164 it would be a number abroad (2025550111 is in Egypt). Ask rather than guess.
        raise InvalidNumber(
            field, f"expected the country code too: did you mean 1{digits}? (got {raw!r})"
        )
    if text.startswith("00"):
        text = "+" + text[2:]
    elif not text.startswith("+"):
        text = "+" + text
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise InvalidNumber(
            field, f"expected E.164 digits with country code, got {raw!r}"
        ) from None
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidNumber(
            field, f"expected a possible E.164 phone number with country code, got {raw!r}"
        )
    digits = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)[1:]
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        raise InvalidNumber(field, f"expected {MIN_DIGITS} to {MAX_DIGITS} digits, got {raw!r}")
    return digits


def mask(number: str) -> str:
    """Hide all but the last four digits, for logs: `11234567891` -> `•••••••7891`."""
    if len(number) <= 4:
        return "•" * len(number)
    return "•" * (len(number) - 4) + number[-4:]


def display(number: str) -> str:
    """Format digits for people: `12025550111` -> `+1 202-555-0111`.

    North American numbers always get the NANP grouping, even the docs' 1123456789x examples
    (whose area code the library does not format); others use the library's grouping.
    """
    try:
        parsed = phonenumbers.parse("+" + number, None)
    except phonenumbers.NumberParseException:
        return number
    national = str(parsed.national_number)
    if parsed.country_code == 1 and len(national) == 10:
        return f"+1 {national[:3]}-{national[3:6]}-{national[6:]}"
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def reaches_by_mms(number: str) -> bool:
    """Whether group MMS reaches `number` (E.164 digits): US and Canada (+1) only."""
    return number.startswith("1") and len(number) == 11


def only_north_american(number: str) -> str:
    """Why `number` cannot be in a group MMS, for an error message."""
    return f"expected a US or Canadian number (+1): group MMS reaches only those, got {number}"
