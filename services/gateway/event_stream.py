"""The SSE response of ``GET /v1/jobs/{id}/events``: the hub writes to the client's socket itself.

The server (:mod:`services.gateway.server`) offers each HTTP/1.1 request a way to reach its socket once
the response has begun, as the ASGI scope extension :data:`WIRE_EXTENSION`. With it, the response
sends its headers through ASGI as any other, then hands the socket to :meth:`EventHub.pump`, which
writes the stream as chunks of the chunked body the headers announced, and ends the body through ASGI
when the stream is over. Without it (another ASGI server, an HTTP/1.0 client), the frames go through
ASGI one send at a time (:meth:`EventHub.stream`).
"""

import asyncio
from collections.abc import Callable

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from services.gateway.events import EventHub, Wire

WIRE_EXTENSION = "i2v.wire"
"""Scope extension: a callable that, once the response's headers are sent, returns the client's
:class:`Wire` (None if the body is not chunked after all)."""


class EventStreamResponse(StreamingResponse):
    """A job's events from ``after_sequence`` on, as ``text/event-stream``."""

    def __init__(
        self, hub: EventHub, job_id: str, after_sequence: int, generation: int, headers: dict[str, str]
    ) -> None:
        frames = hub.stream(job_id, after_sequence, generation)
        super().__init__(frames, media_type="text/event-stream", headers=headers)
        self._hub, self._job_id, self._after, self._generation = hub, job_id, after_sequence, generation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        open_wire: Callable[[], Wire | None] | None = scope.get("extensions", {}).get(WIRE_EXTENSION)
        # The chunked framing the wire writes is HTTP/1.1's, for a body (not HEAD).
        if open_wire is None or scope.get("http_version") != "1.1" or scope.get("method") != "GET":
            await super().__call__(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        wire = open_wire()
        if wire is None:
            await self.stream_response_body(send)
            return
        pump = asyncio.ensure_future(self._hub.pump(self._job_id, wire, self._after, self._generation))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            done, _ = await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone):
                task.cancel()
            await asyncio.gather(pump, gone, return_exceptions=True)
        await _close(self.body_iterator)  # never started; closed all the same
        if gone in done:
            return
        pump.result()  # an error while streaming is the app's error, as with any response
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def stream_response_body(self, send: Send) -> None:
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _close(iterator: object) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
