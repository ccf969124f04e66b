"""Live job events for many SSE clients from one JetStream subscription.

One ordered consumer on the whole events stream feeds every client in the process (and the jobs
index), so a thousand followers cost a thousand in-process queues, not a thousand consumers. Each
event is read once and its public projection (:mod:`services.gateway.public_events`) encoded once as
an SSE frame that every follower shares. A client that joins late, or resumes with
``Last-Event-ID``, first reads the job's history from the stream by sequence, then switches to the
live feed; both are keyed by the stream sequence, so nothing is lost or repeated at the seam.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import ValidationError
from pydantic_core import to_json

from contracts.messages import Event, is_terminal, parse_event
from contracts.subjects import EVENTS_STREAM, EVENTS_SUBJECTS, job_events_filter
from services.gateway.progress import generation_of
from services.gateway.public_events import public_event

log = logging.getLogger("i2v.gateway.events")

# A client this far behind is cut off; its browser reconnects with Last-Event-ID and loses nothing.
CLIENT_QUEUE_LIMIT = 1024


@dataclass(frozen=True)
class Frame:
    """One event ready for the wire: its stream sequence, the raw event (for the jobs index), the event
    read, and its public projection as an SSE frame (empty for an event this gateway cannot read)."""

    sequence: int
    data: bytes
    event: Event | None
    sse: bytes

    @property
    def terminal(self) -> bool:
        return is_terminal(self.event)

    @property
    def generation(self) -> int:
        return generation_of(self.event) if self.event is not None else 0


def frame(sequence: int, data: bytes) -> Frame:
    """Read one event and encode its public projection as an SSE frame: ``id`` is the stream
    sequence, ``event`` the contract type, ``data`` what :func:`public_event` shows of it."""
    try:
        event = parse_event(data)
    except ValidationError:
        # A newer schema or a stray message: the index skips it, and clients are shown nothing.
        return Frame(sequence, data, None, b"")
    shown = public_event(event)
    sse = b"id: %d\nevent: %s\ndata: %s\n\n" % (sequence, event.type.encode(), to_json(shown))
    return Frame(sequence, data, event, sse)


class ClientTooSlowError(Exception):
    """The client's queue overflowed; the stream ends and the client resumes from its last id."""


class _Client:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Frame] = asyncio.Queue(CLIENT_QUEUE_LIMIT)
        self.overflowed = False

    def offer(self, item: Frame) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True


class EventHub:
    """Fans the events stream out to followers of single jobs, and to one sink (the jobs index)."""

    def __init__(self, js: JetStreamContext, sink: Callable[[Frame], None] | None = None) -> None:
        self._js = js
        self._sink = sink
        self._clients: dict[str, set[_Client]] = {}
        self._sub: Subscription | None = None

    @property
    def followers(self) -> int:
        return sum(len(c) for c in self._clients.values())

    async def start(self, after_sequence: int = 0) -> None:
        """Subscribe from ``after_sequence + 1`` (the sink's checkpoint), or from now when 0."""
        config = (
            ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_sequence + 1)
            if after_sequence
            else ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        self._sub = await self._js.subscribe(
            EVENTS_SUBJECTS, stream=EVENTS_STREAM, ordered_consumer=True, config=config, cb=self._on_message
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_message(self, msg: Msg) -> None:
        item = frame(msg.metadata.sequence.stream, msg.data)
        if self._sink is not None:
            self._sink(item)
        # Subjects are i2v.events.<job>.<kind>.
        parts = msg.subject.split(".")
        clients = self._clients.get(parts[2]) if len(parts) > 3 else None
        if clients:
            for client in clients:
                client.offer(item)

    async def follow(self, job_id: str, after_sequence: int = 0, generation: int = 0) -> AsyncIterator[Frame]:
        """The job's events after ``after_sequence``: history first, then live, until the terminal
        event of its current generation (``generation`` or a later one that a replay started).

        A terminal event of an older generation does not end the stream: after a cancel or a failure
        comes a replay's ``ReplayRequested``, then the new generation's events.
        Raises :class:`ClientTooSlowError` when the caller falls too far behind the live feed.
        """
        client = _Client()
        # Register before reading history: whatever is published from now on lands in the queue.
        self._clients.setdefault(job_id, set()).add(client)
        current, ended = generation, False

        def ends(item: Frame) -> bool:
            nonlocal current, ended
            if item.generation > current:
                current, ended = item.generation, False
            if item.terminal and item.generation >= current:
                ended = True
            return ended

        try:
            last = after_sequence
            async for item in self._history(job_id, after_sequence):
                last = item.sequence
                ends(item)
                yield item
            # Decided once the whole history is read: a replay may follow a terminal event.
            if ended:
                return
            while True:
                if client.overflowed and client.queue.empty():
                    raise ClientTooSlowError(job_id)
                item = await client.queue.get()
                if item.sequence <= last:
                    # Read from history already, or before a Last-Event-ID past the stream's end: not
                    # sent again, but the job's end still ends the stream.
                    if ends(item):
                        return
                    continue
                last = item.sequence
                yield item
                if ends(item):
                    return
        finally:
            followers = self._clients.get(job_id)
            if followers is not None:
                followers.discard(client)
                if not followers:
                    del self._clients[job_id]

    async def _history(self, job_id: str, after_sequence: int) -> AsyncIterator[Frame]:
        subject = job_events_filter(job_id)
        sequence = after_sequence + 1
        while True:
            try:
                raw = await self._js.get_msg(EVENTS_STREAM, seq=sequence, subject=subject, next=True)
            except NotFoundError:
                return
            if raw.seq is None:
                return
            yield frame(raw.seq, raw.data or b"")
            sequence = raw.seq + 1


async def frames_with_heartbeats(frames: AsyncIterator[Frame], every_s: float) -> AsyncIterator[bytes]:
    """SSE bytes of ``frames`` with a comment line whenever ``every_s`` passes without an event,
    so proxies and browsers keep an idle stream open."""
    iterator = frames.__aiter__()
    pending: asyncio.Task[Frame] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if not done:
                yield b": heartbeat\n\n"
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            if item.sse:
                yield item.sse
    finally:
        if pending is not None:
            pending.cancel()
            # The generator must stop running before it can be closed.
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                await pending
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
