"""The broadcast plan: a Reply becomes one OutboundMessage per member.

Each member's message has `to` = that member and `mms.participants` = every other member,
so every handset shows one shared thread. The bot is never a participant. A message to one
member alone carries no participants.
"""

from __future__ import annotations

from bot.context import Reply
from bot.groups import Group
from bot.models import OutboundMedia, OutboundMessage, OutboundMms


def plan(
    reply: Reply,
    group: Group,
    *,
    bot_number: str,
    sender: str | None = None,
    skip: frozenset[str] = frozenset(),
    keep_skipped_in_participants: bool = True,
) -> list[OutboundMessage]:
    """One message per recipient: the whole group, or only `sender` for `to_sender_only`.

    Members in `skip` (opted out) get nothing; by default they stay in the others'
    participant lists, so that every handset keeps showing one thread.
    """
    if reply.to_sender_only:
        if sender is None:
            raise ValueError("a reply to the sender alone needs a sender")
        return [_message(reply, to=sender, participants=[], bot_number=bot_number)]
    hidden = frozenset() if keep_skipped_in_participants else skip
    return [
        _message(
            reply,
            to=member,
            participants=[m for m in group.others(member) if m not in hidden],
            bot_number=bot_number,
        )
        for member in group.members
        if member not in skip
    ]


def _message(reply: Reply, *, to: str, participants: list[str], bot_number: str) -> OutboundMessage:
    fields: dict[str, object] = {"to": to, "from": bot_number, "channel": "mms"}
    if participants:
        fields["mms"] = OutboundMms(participants=participants)
    if reply.media is not None:
        fields["message_type"] = reply.media.kind
        fields[reply.media.kind] = OutboundMedia(url=reply.media.url, caption=reply.media.caption)
    else:
        fields["message_type"] = "text"
        fields["text"] = reply.text
    return OutboundMessage.model_validate(fields)
