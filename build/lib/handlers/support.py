"""A support agent coordinating with a customer and a specialist in one thread."""

from __future__ import annotations

from bot import Context, Reply, handler


@handler("escalate")
async def escalate(ctx: Context) -> Reply:
    """Bring the specialist in: remember who asked and when, and tell the whole group."""
    escalations = ctx.state.setdefault("escalations", [])
    escalations.append({"by": ctx.sender, "at": ctx.message.timestamp.isoformat()})
    return Reply(ctx.render("escalated.txt.j2", count=len(escalations)))


@handler("case_status")
async def case_status(ctx: Context) -> dict[str, object]:
    """Variables for the route's template: how often this case was escalated."""
    return {"escalations": len(ctx.state.get("escalations", []))}
