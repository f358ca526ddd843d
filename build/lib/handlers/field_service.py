"""A service provider keeping a client and a field technician in the same thread."""

from __future__ import annotations

import re

from bot import Context, Reply, handler

VAN_PHOTO = "https://example.com/groupbot/van.jpg"


@handler("status")
async def status(ctx: Context) -> dict[str, object]:
    """Where the visit stands, for status.txt.j2: arrived, or on the way."""
    visit = ctx.state.get("visit", {})
    return {"arrived": visit.get("arrived_at"), "technician": visit.get("technician")}


@handler("arrived")
async def arrived(ctx: Context) -> str:
    """The technician says they are on site: remember it, tell everyone."""
    ctx.state["visit"] = {"arrived_at": ctx.message.timestamp.isoformat(), "technician": ctx.sender}
    return (
        f"The technician (ending {ctx.sender[-4:]}) is on site. We'll confirm when the job is done."
    )


@handler("van_photo")
async def van_photo(ctx: Context) -> Reply:
    """A picture of the van, so the client knows whom to let in."""
    return Reply.image(VAN_PHOTO, caption="This is our van. The technician will show an ID badge.")


DAY = re.compile(
    r"\b(today|tomorrow|monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b", re.I
)


@handler(
    "book",
    examples=[
        "can the technician come tomorrow",
        "can the tech come by tomorrow morning",
        "could someone come out to fix it",
        "we need someone to take a look",
        "when can you send someone",
        "i'd like to schedule a repair",
        "book a visit",
        "please schedule a technician",
    ],
)
async def book(ctx: Context) -> str | None:
    """Book a visit: ask for the day if the message does not say, and take the next
    message of the group as the answer (ctx.expect)."""
    day = DAY.search(ctx.text)
    if day is None:
        if ctx.match.get("expected"):
            return None  # the next line was not a day after all: ask once, then let it be
        ctx.expect("book", within_seconds=600)
        return "Happy to book a visit. Which day suits you?"
    when = day.group(1).lower()
    ctx.state["booking"] = {"day": when, "by": ctx.sender}
    on = when if when in ("today", "tomorrow") else f"on {when.capitalize()}"
    return f'Booked: the technician comes {on}. Reply "status" any time.'
