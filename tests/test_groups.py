"""bot.groups: who is in a conversation, and a key that names it without its numbers."""

from __future__ import annotations

import itertools

import pytest

from bot.exceptions import InvalidInput
from bot.groups import Group

BOT = "11234567890"
A, B, C, D = "11234567891", "11234567892", "11234567893", "11234567894"


def test_of_drops_the_bots_own_number() -> None:
    group = Group.of([A, BOT, B], bot_number=BOT)
    assert group.members == (A, B)
    assert BOT not in group.members


def test_of_drops_duplicates() -> None:
    assert Group.of([A, B, A, C, B], bot_number=BOT).members == (A, B, C)


def test_of_keeps_first_seen_order() -> None:
    assert Group.of([C, A, B], bot_number=BOT).members == (C, A, B)
    assert Group.of([B, C, B, A], bot_number=BOT).members == (B, C, A)


def test_of_with_only_the_bot_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        Group.of([BOT, BOT], bot_number=BOT)
    assert caught.value.field == "members"


def test_empty_group_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        Group(())
    assert caught.value.field == "members"


def test_group_listing_a_member_twice_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        Group((A, B, A))
    assert caught.value.field == "members"


def test_key_does_not_depend_on_member_order() -> None:
    keys = {Group(order).key for order in itertools.permutations((A, B, C))}
    assert len(keys) == 1


def test_key_differs_between_groups() -> None:
    assert Group((A, B)).key != Group((A, C)).key
    assert Group((A, B)).key != Group((A, B, C)).key
    assert Group((A,)).key != Group((B,)).key


def test_key_is_stable_across_instances() -> None:
    assert Group.of([A, B, BOT], bot_number=BOT).key == Group((B, A)).key


@pytest.mark.parametrize("members", [(A,), (A, B), (A, B, C, D)])
def test_key_does_not_reveal_the_numbers(members: tuple[str, ...]) -> None:
    key = Group(members).key
    for number in members:
        assert number not in key
        assert number[-4:] not in key  # not even the part logs are allowed to show
        assert number[1:] not in key


def test_key_is_short_and_safe_in_urls() -> None:
    key = Group((A, B, C)).key
    assert key.startswith("g")
    assert len(key) == 17
    assert key[1:].isalnum()
    assert key.isascii()


def test_for_broadcast_drops_the_bot_and_duplicates() -> None:
    group = Group.for_broadcast([A, BOT, B, A], bot_number=BOT, max_size=10)
    assert group.members == (A, B)


def test_for_broadcast_refuses_no_members_and_too_many_naming_the_field() -> None:
    with pytest.raises(InvalidInput, match="besides the bot") as none:
        Group.for_broadcast([BOT], bot_number=BOT, max_size=10, field="--to")
    with pytest.raises(InvalidInput, match="at most 1 members, got 2") as many:
        Group.for_broadcast([A, B], bot_number=BOT, max_size=1)
    assert (none.value.field, many.value.field) == ("--to", "to")


def test_others_is_everyone_but_the_member_in_group_order() -> None:
    group = Group((A, B, C, D))
    assert group.others(C) == [A, B, D]
    assert group.others(A) == [B, C, D]


def test_others_of_the_only_member_is_empty() -> None:
    assert Group((A,)).others(A) == []
