"""Live job events for many SSE clients from one JetStream subscription.

One ordered consumer on the whole events stream feeds every client in the process (and the jobs
index), so a thousand followers cost a thousand small in-process records, not a thousand consumers.
Each event is read once and its public projection (:mod:`services.gateway.public_events`) encoded
once, as an SSE frame and as that frame's HTTP/1.1 chunk, bytes that every follower shares. A client
that joins late, or resumes with ``Last-Event-ID``, first reads the job's history from the stream by
sequence, then switches to the live feed; both are keyed by the stream sequence, so nothing is lost or
repeated at the seam.

On the live feed the hub writes each event's chunk straight to each follower's socket (a
:class:`Wire`, which the server hands to the SSE response): no task wakes per client and event, so
delivering one event to N clients is N socket writes. Where there is no wire (another server, an
HTTP/1.0 client), :meth:`EventHub.stream` queues frames for the response to send as usual.

Slow clients: the hub never waits on a client. A wire that holds more than its limit of unsent bytes
(or a queue of :data:`CLIENT_QUEUE_LIMIT` frames) means the client is too far behind: its stream ends
after what it was given, and the browser's EventSource reconnects with ``Last-Event-ID`` and loses
nothing.
"""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, RawStreamMsg
from nats.js.errors import NotFoundError, ServiceUnavailableError
from pydantic import ValidationError
from pydantic_core import to_json

from contracts.messages import Event, is_terminal, parse_event
from contracts.subjects import EVENTS_STREAM, EVENTS_SUBJECTS, job_events_filter
from services.gateway.progress import generation_of
from services.gateway.public_events import public_event

log = logging.getLogger("i2v.gateway.events")

_HISTORY_PATIENCE_S = 30.0  # a JetStream stream re-elects its leader within seconds; longer is an outage

# A client this far behind is cut off; its browser reconnects with Last-Event-ID and loses nothing.
CLIENT_QUEUE_LIMIT = 1024


def chunked(data: bytes) -> bytes:
    """``data`` as one chunk of an HTTP/1.1 chunked body; empty for empty data (an empty chunk ends a body)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


@dataclass(frozen=True, slots=True)
class Frame:
    """One event ready for the wire: its stream sequence, the raw event (for the jobs index), the event
    read, and its public projection as an SSE frame and as an HTTP/1.1 chunk of that frame (both empty
    for an event this gateway cannot read); whether it ends its generation, and which generation."""

    sequence: int
    data: bytes
    event: Event | None
    sse: bytes
    chunk: bytes = b""
    terminal: bool = False
    generation: int = 0


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
    return Frame(sequence, data, event, sse, chunked(sse), is_terminal(event), generation_of(event))


class Wire(Protocol):
    """A streaming client's connection once its SSE response has begun, written to directly."""

    def write(self, chunk: bytes) -> bool:
        """Send ``chunk`` (framed by :func:`chunked`); False once the client is gone or too far behind
        (its unsent bytes over the wire's limit), and nothing more should be written."""
        ...


class ClientTooSlowError(Exception):
    """The client's queue overflowed; the stream ends and the client resumes from its last id."""


RETRY = b"retry: 2000\n\n"
"""The first bytes of every stream: how long a browser waits before it reconnects with Last-Event-ID."""
HEARTBEAT = b": heartbeat\n\n"
_HEARTBEAT_CHUNK = chunked(HEARTBEAT)


class _End:
    """Whether a job's stream is over: after the terminal event of its current generation (``generation``
    or a later one that a replay started)."""

    __slots__ = ("current", "ended")

    def __init__(self, generation: int) -> None:
        self.current, self.ended = generation, False

    def after(self, item: Frame) -> bool:
        generation = item.generation
        if generation > self.current:
            self.current, self.ended = generation, False
        if item.terminal and generation >= self.current:
            self.ended = True
        return self.ended


class _Follower:
    """One client of one job: the last sequence it was given, whether its stream is over, and how the hub
    reaches it. Until its history is read, frames the hub hands over wait in a queue; then, for a client
    with a :class:`Wire`, the hub writes each frame straight to the wire (:meth:`offer`). The hub never
    waits on a follower, so a slow one holds up nobody."""

    __slots__ = ("_finished", "_waiter", "end", "frames", "last", "overflowed", "quiet_ticks", "wire")

    def __init__(self, after_sequence: int, generation: int) -> None:
        self.last = after_sequence
        self.end = _End(generation)
        self.frames: deque[Frame] = deque()
        self.overflowed = False
        self.quiet_ticks = 0
        """Heartbeat ticks since the client was last sent anything (see :meth:`EventHub._tick`)."""
        self.wire: Wire | None = None
        self._finished: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def seen(self, item: Frame) -> None:
        """``item`` was read from history and given to the client."""
        self.last = item.sequence
        self.end.after(item)

    def offer(self, item: Frame) -> None:
        wire = self.wire
        if wire is None:
            if len(self.frames) >= CLIENT_QUEUE_LIMIT:
                self.overflowed = True
            else:
                self.frames.append(item)
            self.wake()
            return
        if item.sequence <= self.last:
            # Before a Last-Event-ID past the stream's end: not sent again, but the job's end ends the stream.
            if self.end.after(item):
                self.finish()
            return
        self.last = item.sequence
        if item.chunk:
            if not wire.write(item.chunk):
                self.finish()
                return
            self.quiet_ticks = 0
        if self.end.after(item):
            self.finish()

    def take(self) -> list[Frame]:
        """The queued frames not given to the client yet, up to the end of its stream."""
        batch: list[Frame] = []
        frames = self.frames
        while frames:
            item = frames.popleft()
            if item.sequence <= self.last:
                # Read from history already, or before a Last-Event-ID past the stream's end: not
                # sent again, but the job's end still ends the stream.
                if self.end.after(item):
                    break
                continue
            self.last = item.sequence
            batch.append(item)
            if self.end.after(item):
                break
        return batch

    def beat(self) -> None:
        """Quiet for a while: a heartbeat comment now (on a wire), or wake the response to send one."""
        if self.wire is None:
            self.wake()
        elif self.wire.write(_HEARTBEAT_CHUNK):
            self.quiet_ticks = 0
        else:
            self.finish()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until a frame is offered or :meth:`wake` is called; at once when frames are waiting."""
        if self.frames or self.overflowed:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def write_through(self, wire: Wire) -> None:
        """From now on the hub writes to ``wire``; returns once the stream is over (its end, the client
        gone or too slow)."""
        self._finished = asyncio.get_running_loop().create_future()
        self.wire = wire
        await self._finished

    def finish(self) -> None:
        self.wire = None
        self.overflowed = True  # nothing more is queued for it either
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)


class EventHub:
    """Fans the events stream out to followers of single jobs, and to one sink (the jobs index).

    ``heartbeat_s``: a streaming client is sent a comment when it has been sent nothing for this long;
    one timer for the hub, not one per client.
    """

    def __init__(
        self, js: JetStreamContext, sink: Callable[[Frame], None] | None = None, heartbeat_s: float = 15.0
    ) -> None:
        self._js = js
        self._sink = sink
        self._heartbeat_s = heartbeat_s
        self._followers: dict[str, set[_Follower]] = {}
        self._streaming: set[_Follower] = set()
        self._sub: Subscription | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def followers(self) -> int:
        return sum(len(f) for f in self._followers.values())

    @property
    def live_followers(self) -> int:
        """Followers past their history that the hub writes to directly (:meth:`pump`)."""
        return sum(1 for f in self._streaming if f.wire is not None)

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
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _tick(self) -> None:
        # Every half heartbeat; a client quiet for two ticks is due one, so none waits longer than heartbeat_s.
        while True:
            await asyncio.sleep(self._heartbeat_s / 2)
            for follower in list(self._streaming):
                follower.quiet_ticks += 1
                if follower.quiet_ticks >= 2:
                    follower.beat()

    async def _on_message(self, msg: Msg) -> None:
        item = frame(msg.metadata.sequence.stream, msg.data)
        if self._sink is not None:
            self._sink(item)
        # Subjects are i2v.events.<job>.<kind>.
        parts = msg.subject.split(".")
        followers = self._followers.get(parts[2]) if len(parts) > 3 else None
        if followers:
            # Nothing here awaits or unregisters: a stream that ends now is removed by its response, later.
            for follower in followers:
                follower.offer(item)

    def _register(self, job_id: str, follower: _Follower) -> None:
        self._followers.setdefault(job_id, set()).add(follower)

    def _unregister(self, job_id: str, follower: _Follower) -> None:
        self._streaming.discard(follower)
        followers = self._followers.get(job_id)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self._followers[job_id]

    async def follow(self, job_id: str, after_sequence: int = 0, generation: int = 0) -> AsyncIterator[Frame]:
        """The job's events after ``after_sequence``: history first, then live, until the terminal
        event of its current generation (``generation`` or a later one that a replay started).

        A terminal event of an older generation does not end the stream: after a cancel or a failure
        comes a replay's ``ReplayRequested``, then the new generation's events.
        Raises :class:`ClientTooSlowError` when the caller falls too far behind the live feed.
        """
        async for batch in self._batches(_Follower(after_sequence, generation), job_id):
            for item in batch:
                yield item

    async def stream(self, job_id: str, after_sequence: int = 0, generation: int = 0) -> AsyncIterator[bytes]:
        """:meth:`follow` as the bytes of an SSE response, for a response without a :class:`Wire`:
        :data:`RETRY` first, then the frames (those waiting together in one piece), with a heartbeat
        comment when nothing was sent for ``heartbeat_s``. A client too slow for the live feed is sent
        what was queued, then the stream ends."""
        follower = _Follower(after_sequence, generation)
        self._streaming.add(follower)
        try:
            yield RETRY
            async for batch in self._batches(follower, job_id):
                follower.quiet_ticks = 0
                if not batch:
                    yield HEARTBEAT
                elif len(batch) == 1:
                    if batch[0].sse:
                        yield batch[0].sse
                else:
                    yield b"".join(item.sse for item in batch)
        except ClientTooSlowError:
            return
        finally:
            self._streaming.discard(follower)

    async def pump(self, job_id: str, wire: Wire, after_sequence: int = 0, generation: int = 0) -> None:
        """:meth:`stream` written to ``wire`` as HTTP/1.1 chunks: the history from here, then the hub
        writes each live event itself. Returns once the stream is over: the job's end, or the wire
        refused a write (the client gone or too slow; it resumes with ``Last-Event-ID``)."""
        follower = _Follower(after_sequence, generation)
        # Register before reading history: whatever is published from now on lands in the queue.
        self._register(job_id, follower)
        try:
            if not wire.write(chunked(RETRY)):
                return
            async for item in self._history(job_id, after_sequence):
                follower.seen(item)
                if item.chunk and not wire.write(item.chunk):
                    return
            # Decided once the whole history is read: a replay may follow a terminal event.
            if follower.end.ended:
                return
            # What came while the history was read, then the switch, with no await between: nothing missed.
            batch = follower.take()
            if batch and not wire.write(b"".join(item.chunk for item in batch)):
                return
            if follower.end.ended or follower.overflowed:
                return
            self._streaming.add(follower)
            await follower.write_through(wire)
        finally:
            follower.finish()
            self._unregister(job_id, follower)

    async def _batches(self, follower: _Follower, job_id: str) -> AsyncIterator[list[Frame]]:
        """The frames of :meth:`follow`, in lists: one per history event, then what waited in the queue
        each time the follower woke; an empty list when it woke for a heartbeat."""
        # Register before reading history: whatever is published from now on lands in the queue.
        self._register(job_id, follower)
        try:
            async for item in self._history(job_id, follower.last):
                follower.seen(item)
                yield [item]
            # Decided once the whole history is read: a replay may follow a terminal event.
            if follower.end.ended:
                return
            while True:
                await follower.wait()
                batch = follower.take()
                ended = follower.end.ended
                if not batch and not ended and follower.overflowed:
                    raise ClientTooSlowError(job_id)  # after every frame it was given
                if batch or not ended:
                    yield batch
                if ended:
                    return
        finally:
            self._unregister(job_id, follower)

    async def _history(self, job_id: str, after_sequence: int) -> AsyncIterator[Frame]:
        subject = job_events_filter(job_id)
        sequence = after_sequence + 1
        while True:
            try:
                raw = await self._next_stored(sequence, subject)
            except NotFoundError:
                return
            if raw.seq is None:
                return
            yield frame(raw.seq, raw.data or b"")
            sequence = raw.seq + 1

    async def _next_stored(self, sequence: int, subject: str) -> RawStreamMsg:
        """The job's first stored event from ``sequence`` on. A stream electing a new leader (its node lost)
        answers nothing for a few seconds: asked again for a while rather than breaking every follower's
        stream, which would send them all back through ``Last-Event-ID`` at once."""
        deadline = asyncio.get_running_loop().time() + _HISTORY_PATIENCE_S
        while True:
            try:
                return await self._js.get_msg(EVENTS_STREAM, seq=sequence, subject=subject, next=True)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError):
                if asyncio.get_running_loop().time() > deadline:
                    raise
                log.warning("the events stream did not answer for sequence %d; asking again", sequence)
                await asyncio.sleep(0.5)
