"""A service provider keeping a client and a field technician in the same thread."""

from __future__ import annotations

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
