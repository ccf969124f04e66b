"""The HTTP server's own limits against slow clients: half-open requests and idle keep-alive connections."""

import asyncio
import time

from infra.ports import LOOPBACK
from services.gateway.server import HEADER_TIMEOUT_S, KEEP_ALIVE_S
from tests.services.gateway.conftest import RunningGateway
from tests.services.gateway.test_api import submit


async def closed_after(reader: asyncio.StreamReader, limit_s: float) -> float:
    """Seconds until the server closes the connection (reading what it sends); fails past ``limit_s``."""
    started = time.monotonic()
    try:
        while await asyncio.wait_for(reader.read(4096), limit_s - (time.monotonic() - started)):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


async def test_half_open_requests_are_closed_within_the_header_timeout(gateway: RunningGateway) -> None:
    port = int(gateway.url.rsplit(":", 1)[1])
    connections = [await asyncio.open_connection(LOOPBACK, port) for _ in range(30)]
    for i, (_reader, writer) in enumerate(connections):
        if i % 3 == 1:  # a request line and part of the headers, then nothing
            writer.write(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        elif i % 3 == 2:  # the request line only
            writer.write(b"POST /v1/jobs HTTP/1.1\r\n")
        await writer.drain()  # i % 3 == 0: nothing at all after connecting

    async def trickle() -> float:
        """One header byte a second: the data keeps coming, the headers never end."""
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

        async def drip() -> None:
            while not writer.is_closing():
                writer.write(b"a")
                await asyncio.sleep(1)

        dripping = asyncio.create_task(drip())
        try:
            return await closed_after(reader, HEADER_TIMEOUT_S + 5)
        finally:
            dripping.cancel()
            writer.close()

    waits = await asyncio.gather(trickle(), *(closed_after(r, HEADER_TIMEOUT_S + 5) for r, _ in connections))
    assert max(waits) <= HEADER_TIMEOUT_S + 2, waits
    for _reader, writer in connections:
        writer.close()
    async with gateway.client() as client:  # and the server goes on serving
        assert (await client.get("/healthz")).status_code == 200


async def test_an_idle_keep_alive_connection_is_closed_and_a_slow_answer_is_not(gateway: RunningGateway) -> None:
    port = int(gateway.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    waited = await closed_after(reader, KEEP_ALIVE_S + 5)
    assert KEEP_ALIVE_S - 1 <= waited <= KEEP_ALIVE_S + 2
    writer.close()
    # An answer in progress (an SSE stream with heartbeats) outlives both limits.
    _name, key = gateway.account(100)
    async with gateway.client(key) as client:
        job = (await submit(client)).json()
        started = time.monotonic()
        async with client.stream("GET", job["links"]["events"]) as stream:
            async for _line in stream.aiter_lines():
                if time.monotonic() - started > HEADER_TIMEOUT_S + 1:
                    break
        assert time.monotonic() - started > HEADER_TIMEOUT_S + 1, "the stream ended early"
