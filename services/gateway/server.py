"""Run the gateway under uvicorn: what ``i2v serve gateway`` does."""

import asyncio
import logging
from typing import cast

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from services.config import Settings
from services.gateway.app import build_app
from services.gateway.event_stream import WIRE_EXTENSION
from services.gateway.events import Wire
from services.gateway.runtime import Gateway
from services.health import HealthServer

log = logging.getLogger("i2v.gateway")


HEADER_TIMEOUT_S = 10.0
"""A request's line and headers must arrive within this long of the connection being ready for them."""
KEEP_ALIVE_S = 5
"""An idle keep-alive connection is closed after this long without a new request."""
WIRE_LIMIT = 256 * 1024
"""Unsent bytes an SSE client may fall behind by (past the kernel's socket buffer) before it is cut off;
it resumes with Last-Event-ID (services/gateway/events.py)."""


class ChunkedWire:
    """An SSE response's socket, for :meth:`EventHub.pump` to write chunks of the body to directly."""

    __slots__ = ("_transport",)

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, chunk: bytes) -> bool:
        transport = self._transport
        if transport.is_closing():
            return False
        transport.write(chunk)
        return transport.get_write_buffer_size() <= WIRE_LIMIT


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's headers.

    uvicorn times out an idle keep-alive connection, but not a connection that never completes its
    headers: one byte now and then (or nothing at all after connecting) held it for ever. Here the
    deadline runs from the connection being made, and again from each response, until the request's
    headers are complete; a body then streams at the client's pace (SSE answers stay open).
    """

    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_deadline()  # the request's headers are in
        if self.cycle is not cycle and self.cycle is not None:
            # A new request, its app not started yet: offer it the socket for an SSE body.
            extensions = cast(dict[str, object], self.cycle.scope.setdefault("extensions", {}))
            extensions[WIRE_EXTENSION] = self._open_wire

    def _open_wire(self) -> Wire | None:
        """The socket, once the response's headers are out and its body is chunked (an HTTP/1.1 client)."""
        if self.conn.our_state is not h11.SEND_BODY or self.conn.their_http_version != b"1.1":
            return None
        return ChunkedWire(self.transport)

    def on_response_complete(self) -> None:
        self._arm_header_deadline()  # first: a pipelined request's headers may be read right away
        super().on_response_complete()

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def uvicorn_server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=HeaderDeadlineProtocol,
        # Idle keep-alive connections go soon; SSE streams are answers in progress, not idle.
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=5,
        # Request line and headers together: h11's default allows 16 KiB.
        h11_max_incomplete_event_size=16 * 1024,
        # A thousand followers each hold a connection; uvicorn's default has no cap, state ours.
        limit_concurrency=10_000,
        backlog=4096,
    )
    return uvicorn.Server(config)


async def serve_until_stopped(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; touch ``settings.ready_file`` once the socket accepts. With
    ``settings.metrics_port``, /healthz, /readyz and /metrics answer there from before the app starts."""
    app = build_app(settings)
    app.state.gateway.index.claim()  # a SQLite index serves one gateway: refuse a second one here
    server = uvicorn_server(app, settings.gateway_host, settings.gateway_port)
    health = None
    if settings.metrics_port is not None:
        health = HealthServer(
            settings.metrics_host, settings.metrics_port, lambda: _not_ready(server, app.state.gateway)
        )
        await health.start()
    try:
        await _serve(server, settings)
    finally:
        if health is not None:
            await health.stop()


async def _not_ready(server: uvicorn.Server, gateway: Gateway) -> str | None:
    """Ready once serving, connected to NATS and folding events into the jobs index without error."""
    if not server.started:
        return "starting"
    if gateway.nc is None or not gateway.nc.is_connected:
        return "not connected to NATS"
    if gateway.writer is None or gateway.writer.error is not None:
        return f"jobs index: {gateway.writer.error if gateway.writer is not None else 'not started'}"
    return None


async def _serve(server: uvicorn.Server, settings: Settings) -> None:
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
