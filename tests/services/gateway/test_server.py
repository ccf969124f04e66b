"""The HTTP server's own limits against slow clients: half-open requests and idle keep-alive connections; and
SSE bodies, which the event hub writes to the socket itself, framed for the client's HTTP version."""

import asyncio
import re
import time

from infra.ports import LOOPBACK
from services.gateway.server import HEADER_TIMEOUT_S, KEEP_ALIVE_S
from tests.services.gateway.conftest import RunningGateway
from tests.services.gateway.test_api import complete, submit


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


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """An HTTP/1.1 chunked body, to its last chunk."""
    body = b""
    while size := int((await reader.readline()).strip(), 16):
        body += await reader.readexactly(size)
        assert await reader.readexactly(2) == b"\r\n"
    assert await reader.readexactly(2) == b"\r\n"
    return body


async def test_sse_over_http_1_1_is_chunked_and_the_connection_serves_on_and_http_1_0_gets_the_same(
    gateway: RunningGateway,
) -> None:
    port = int(gateway.url.rsplit(":", 1)[1])
    name, key = gateway.account(100)
    async with gateway.client(key) as client:
        job = (await submit(client)).json()
    request = f"GET {job['links']['events']} HTTP/%s\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
    streams = {version: await asyncio.open_connection(LOOPBACK, port) for version in ("1.0", "1.1")}
    heads = {}
    for version, (reader, writer) in streams.items():
        writer.write((request % version).encode())
        heads[version] = (await reader.readuntil(b"\r\n\r\n")).lower()
    assert b"transfer-encoding: chunked" in heads["1.1"] and b"transfer-encoding" not in heads["1.0"]
    for head in heads.values():  # the headers went through the app's middleware as any answer's do
        assert b"content-type: text/event-stream" in head and b"content-security-policy: " in head
    await complete(gateway, job, name, b"fake mp4")
    old_reader, old_writer = streams["1.0"]
    old = await asyncio.wait_for(old_reader.read(), 10)  # to the end: the server closes an HTTP/1.0 answer
    reader, writer = streams["1.1"]
    body = await asyncio.wait_for(read_chunked(reader), 10)
    ids = re.findall(rb"^id: (\d+)$", body, re.MULTILINE)
    assert body.startswith(b"retry: ") and body.count(b"event: JobCompleted") == 1
    assert ids and ids == re.findall(rb"^id: (\d+)$", old, re.MULTILINE), (body, old)
    # The body ended where the server's HTTP state says it did: the same connection answers the next request.
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200")
    for _, w in (streams["1.1"], (old_reader, old_writer)):
        w.close()
