"""A small team receiving a shared update and keeping track of it."""

from __future__ import annotations

from bot import Context, Reply, handler

MAX_UPDATES = 5
CONTACT_CARD = "https://example.com/groupbot/on-call.vcf"


@handler("post_update")
async def post_update(ctx: Context) -> dict[str, object]:
    """Remember the update (the last few), and confirm it to the team."""
    updates: list[dict[str, str]] = ctx.state.setdefault("updates", [])
    updates.append({"by": ctx.sender, "text": ctx.match["update"].strip()})
    del updates[:-MAX_UPDATES]
    return {"update": updates[-1], "count": len(updates)}


@handler("recap")
async def recap(ctx: Context) -> str | None:
    """The latest updates, newest last; silence when there are none yet."""
    updates = ctx.state.get("updates", [])
    if not updates:
        return "No updates yet. Post one with: update: <what changed>"
    return ctx.render("recap.txt.j2", updates=updates)


@handler("on_call")
async def on_call(ctx: Context) -> Reply:
    """The on-call contact card, sent only to the member who asked."""
    return Reply.vcard(CONTACT_CARD, caption="On-call engineer", to_sender_only=True)
