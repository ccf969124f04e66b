"""Run the gateway under uvicorn: what ``i2v serve gateway`` does."""

import asyncio
import logging

import uvicorn
from fastapi import FastAPI

from services.config import Settings
from services.gateway.app import build_app

log = logging.getLogger("i2v.gateway")


def uvicorn_server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        # SSE streams stay open; a short keep-alive only concerns idle plain requests.
        timeout_keep_alive=30,
        timeout_graceful_shutdown=5,
        # A thousand followers each hold a connection; uvicorn's default has no cap, state ours.
        limit_concurrency=10_000,
        backlog=4096,
    )
    return uvicorn.Server(config)


async def serve_until_stopped(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; touch ``settings.ready_file`` once the socket accepts."""
    server = uvicorn_server(build_app(settings), settings.gateway_host, settings.gateway_port)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # startup failed: raise its error
            raise RuntimeError("the gateway stopped during startup")
        await asyncio.sleep(0.05)
    log.info("gateway serving http://%s:%d", settings.gateway_host, settings.gateway_port)
    if settings.ready_file is not None:
        settings.ready_file.parent.mkdir(parents=True, exist_ok=True)
        settings.ready_file.write_text("ready\n")
    await task


def serve(settings: Settings) -> int:
    asyncio.run(serve_until_stopped(settings))
    return 0
