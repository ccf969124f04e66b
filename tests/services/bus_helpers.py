"""Helpers for the tests that run services on a real nats-server: a fresh bus, a tail of a subject,
conditions to wait on, a drained consumer and the settings for a service on that server."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from nats.js.errors import BucketNotFoundError, NotFoundError, ServerError

from contracts.messages import Event, parse_event
from contracts.stages import Stage
from contracts.subjects import CANCEL_BUCKET, DLQ_STREAM, EVENTS_STREAM, WORK_STREAM, durable_name
from infra.nats_server import NatsServer
from infra.process import log_tail
from services.bus.streams import ensure_streams
from services.config import Settings

TIMEOUT_S = 20.0


@contextlib.asynccontextmanager
async def fresh_bus(server: NatsServer) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on streams emptied of every earlier test's messages and consumers."""
    nc: NatsClient = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        await _declared_afresh(js, server)
        yield js
    finally:
        await nc.close()


async def _declared_afresh(js: JetStreamContext, server: NatsServer, attempts: int = 3) -> None:
    """Delete the streams and the cancel bucket and declare them again.

    nats-server deletes a stream by renaming its folder to ``.<name>`` and removing that in the
    background; deleting the same name again before that removal ends fails half-way, and the stream
    declared after it cannot create its store ("error creating store for stream"). So each deletion
    starts only once the previous one's folders are gone. Should the declaration still be refused, it is
    asked again from a clean start, and the last refusal names the server's last log lines.
    """
    for attempt in range(1, attempts + 1):
        await _removals_finished(server)
        for name in (WORK_STREAM, EVENTS_STREAM, DLQ_STREAM):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
        with contextlib.suppress(BucketNotFoundError, NotFoundError):
            await js.delete_key_value(CANCEL_BUCKET)
        await _removals_finished(server)
        try:
            await ensure_streams(js)
            return
        except ServerError as exc:
            if attempt == attempts:
                raise AssertionError(f"{exc}; {server.log_path}: {log_tail(server.log_path, 8)}") from exc


async def _removals_finished(server: NatsServer, timeout: float = TIMEOUT_S) -> None:
    """Wait until no deleted stream's folder (``.<name>`` beside the live ones) is left on disk."""
    deadline = time.monotonic() + timeout
    while leftovers := list(server.state_dir.glob("jetstream/*/streams/.*")):
        if time.monotonic() > deadline:
            raise AssertionError(f"deleted streams still on disk after {timeout:.0f} s: {leftovers}")
        await asyncio.sleep(0.05)


class Tail:
    """Every message on a subject, from the stream's start, as it arrives (an ordered consumer)."""

    def __init__(self, sub: JetStreamContext.PushSubscription) -> None:
        self._sub = sub
        self.messages: list[Msg] = []

    @classmethod
    async def open(cls, js: JetStreamContext, subject: str) -> "Tail":
        return cls(await js.subscribe(subject, ordered_consumer=True))

    async def until(self, done: Callable[[list[Msg]], bool], timeout: float = TIMEOUT_S) -> list[Msg]:
        """Read on until ``done(messages)``; fail the test naming what arrived if it never is."""
        deadline = time.monotonic() + timeout
        while not done(self.messages):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; got {[m.data[:200] for m in self.messages]}")
            with contextlib.suppress(TimeoutError):
                self.messages.append(await self._sub.next_msg(timeout=min(remaining, 0.5)))
        return self.messages

    async def quiet(self, seconds: float) -> list[Msg]:
        """Read whatever else arrives within ``seconds``."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                self.messages.append(await self._sub.next_msg(timeout=remaining))
        return self.messages

    def events(self) -> list[Event]:
        return [parse_event(m.data) for m in self.messages]


def has(kind: type, count: int = 1) -> Callable[[list[Msg]], bool]:
    """``Tail.until`` condition: at least ``count`` events of type ``kind`` arrived."""
    return lambda messages: sum(isinstance(parse_event(m.data), kind) for m in messages) >= count


def at_least(count: int) -> Callable[[list[Msg]], bool]:
    """``Tail.until`` condition: at least ``count`` messages of any kind arrived."""
    return lambda messages: len(messages) >= count


async def consumer_drained(js: JetStreamContext, stage: Stage, timeout: float = 10.0) -> ConsumerInfo:
    """The stage's durable once nothing is pending or unacked; fails if that never happens."""
    return await consumer_settled(js, WORK_STREAM, durable_name(stage), timeout)


async def consumer_settled(js: JetStreamContext, stream: str, durable: str, timeout: float = 10.0) -> ConsumerInfo:
    """The durable ``durable`` on ``stream`` once nothing is pending or unacked; fails if that never happens."""
    deadline = time.monotonic() + timeout
    while True:
        info: ConsumerInfo = await js.consumer_info(stream, durable)
        if info.num_ack_pending == 0 and info.num_pending == 0:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"{durable} never drained: {info}")
        await asyncio.sleep(0.05)


TEST_BILLING_SECRET = "the tests' billing secret"
"""Billing's seal key in :func:`settings_for`: given, so no test writes one into the working directory."""


def settings_for(server: NatsServer, **overrides: object) -> Settings:
    """Settings for a service on ``server`` with quick retries; ``overrides`` replace any field."""
    values: dict[str, object] = {
        "nats_url": server.url,
        "s3_endpoint": "http://127.0.0.1:9",  # required by the kit; the probe never touches a store
        "max_deliver": 3,
        "retry_backoff_s": (0.1,),
        "billing_secret": TEST_BILLING_SECRET,
    }
    values.update(overrides)
    return Settings.model_validate(values)
