"""The small HTTP server every process runs on ``I2V_METRICS_PORT``: ``/healthz``, ``/readyz``, ``/metrics``.

It is a Starlette app under uvicorn on the process's own event loop, not prometheus-client's server
(which answers from a thread of its own): so ``/healthz`` answering means the loop that acks, heartbeats
and pings is turning, and ``/readyz`` and ``/metrics`` can ask NATS with the process's own connection.
"""

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

Readiness = Callable[[], Awaitable[str | None]]
"""Why the process is not ready, or None when it is."""
Refresh = Callable[[], Awaitable[None]]
"""Reads what a scrape reports but nothing updates as it happens (queue depths)."""


def health_app(readiness: Readiness, refresh: Refresh | None = None) -> Starlette:
    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_request: Request) -> Response:
        why = await readiness()
        if why is None:
            return PlainTextResponse("ready\n")
        return PlainTextResponse(f"not ready: {why}\n", status_code=503)

    async def metrics(request: Request) -> Response:
        if refresh is not None:
            await refresh()
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(REGISTRY), media_type=content_type)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: SIGINT and SIGTERM belong to the service it runs beside."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HealthServer:
    """Start with :meth:`start` inside the process's event loop, stop with :meth:`stop`."""

    def __init__(self, host: str, port: int, readiness: Readiness, refresh: Refresh | None = None) -> None:
        self._host = host
        self._port = port
        self._app = health_app(readiness, refresh)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the system's choice for 0) once started."""
        return self._port

    async def start(self) -> None:
        # Bound here, not by uvicorn, so a taken port is an OSError naming it rather than uvicorn's exit.
        try:
            sock = socket.create_server((self._host, self._port))
        except OSError as exc:
            raise OSError(f"metrics port {self._host}:{self._port}: {exc.strerror or exc}") from exc
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,  # the service's logging stays as it configured it
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError("the metrics server stopped during startup")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None
