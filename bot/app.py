"""The aiohttp application: endpoints, and a lifecycle that owns the store, provider and workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot import admin, openapi, webhooks
from bot.core import Bot
from bot.http import RUNTIME, problem
from bot.runtime import STORE_WAIT_SECONDS, running
from bot.simulator import web as simulator_web

log = structlog.get_logger("groupbot.app")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app.get(RUNTIME)
    if runtime is None:
        return problem(503, "Not ready", "starting")
    if runtime.draining:
        return problem(503, "Not ready", "draining")
    if not runtime.alive:
        return problem(503, "Not ready", "a worker has stopped")
    try:
        await runtime.store.ping()
    except Exception as exc:
        return problem(503, "Not ready", f"store: {type(exc).__name__}")
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    store, now = runtime.store, time.time()
    try:
        async with asyncio.timeout(STORE_WAIT_SECONDS):
            oldest = await store.oldest(now)
            depths = await store.depths()
    except Exception as exc:  # the store away is when the counters matter most: still served
        log.warning("metrics_store_failed", error=f"{type(exc).__name__}: {exc}")
        runtime.metrics.store_up.set(0)
    else:
        runtime.metrics.store_up.set(1)
        for queue, depth in depths.items():
            runtime.metrics.queue_depth.labels(queue).set(depth)
            age = max(0.0, now - oldest.get(queue, now))
            runtime.metrics.oldest_seconds.labels(queue).set(age)
    return web.Response(
        body=runtime.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def create_app(bot: Bot) -> web.Application:
    description = openapi.document(simulator=bot.config.provider.kind == "simulator")

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(description)

    app = web.Application(client_max_size=bot.config.server.max_body_bytes)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with running(bot) as runtime:
            app[RUNTIME] = runtime
            log.info(
                "bot_started",
                number=bot.config.bot.number,
                provider=bot.config.provider.kind,
                routes=len(bot.router.routes),
                queued=await runtime.store.depths(),  # what a last stop left, taken up now
            )
            yield
            log.info("bot_stopping")

    app.cleanup_ctx.append(lifecycle)

    async def draining(app: web.Application) -> None:
        # Shutdown has begun (SIGTERM): load balancers stop sending before the drain ends.
        if (runtime := app.get(RUNTIME)) is not None:
            runtime.draining = True

    app.on_shutdown.append(draining)
    app.router.add_post("/webhooks/inbound", webhooks.inbound)
    app.router.add_post("/webhooks/status", webhooks.status)
    app.router.add_post("/api/messages", admin.send_message)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/metrics", metrics)
    if bot.config.provider.kind == "simulator":
        simulator_web.add_routes(app)
    return app
