"""The event hub's fan-out on a real nats-server: every follower of a job gets each of its events once and in
order, written straight to its wire; a client too far behind is cut off without holding up the others, and
resumes from its last id with nothing lost or repeated; quiet streams get heartbeats."""

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import pytest
from nats.js import JetStreamContext

from contracts.failures import FailureCode
from contracts.messages import Event, JobFailed, JobSpec, StageProgress
from contracts.params import GenerationParams
from contracts.stages import Stage
from services.bus.publishing import route
from services.gateway.events import HEARTBEAT, RETRY, EventHub, chunked

pytestmark = pytest.mark.integration

_ID = re.compile(rb"^id: (\d+)$", re.MULTILINE)


class RecordingWire:
    """A client's socket that keeps what it is sent; past ``room`` writes it reports the client too far behind."""

    def __init__(self, room: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.room = room

    def write(self, chunk: bytes) -> bool:
        if self.room is not None and len(self.chunks) >= self.room:
            return False
        self.chunks.append(chunk)
        return True

    @property
    def ids(self) -> list[int]:
        """The SSE ids it was sent, in order, after checking each chunk's HTTP/1.1 framing."""
        ids: list[int] = []
        for chunk in self.chunks:
            size, _, rest = chunk.partition(b"\r\n")
            assert rest.endswith(b"\r\n") and int(size, 16) == len(rest) - 2, chunk
            ids += [int(n) for n in _ID.findall(rest)]
        return ids


@contextlib.asynccontextmanager
async def started(js: JetStreamContext, heartbeat_s: float) -> AsyncIterator[EventHub]:
    events = EventHub(js, heartbeat_s=heartbeat_s)
    await events.start()
    try:
        yield events
    finally:
        await events.stop()


@pytest.fixture
async def hub(js: JetStreamContext) -> AsyncIterator[EventHub]:
    """A hub on the events stream without heartbeats, so a stream ends for the reason a test means."""
    async with started(js, heartbeat_s=3600) as events:
        yield events


async def publish(js: JetStreamContext, event: Event) -> int:
    where = route(event)
    ack = await js.publish(where.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": where.msg_id})
    return int(ack.seq)


def progress(job_id: str, step: int) -> StageProgress:
    return StageProgress(job_id=job_id, stage=Stage.LATENT, step=step, total=100)


def end(job_id: str) -> JobFailed:
    spec = JobSpec(job_id=job_id, account="acct", params=GenerationParams(duration=2))
    return JobFailed(job=spec, stage=Stage.LATENT, code=FailureCode.INTERNAL, reason="test end")


async def until_followed(hub: EventHub, count: int, live: bool = False) -> None:
    """Until ``count`` followers are registered (``live``: past their history, written to directly)."""
    while (hub.live_followers if live else hub.followers) < count:
        await asyncio.sleep(0.01)


async def test_every_follower_gets_each_event_once_in_order_and_the_stream_ends_with_the_job(
    js: JetStreamContext, hub: EventHub
) -> None:
    before = await publish(js, progress("job-fan", 1))  # history for all of them
    await publish(js, progress("job-other", 1))  # another job's: none of theirs
    wires = [RecordingWire() for _ in range(40)]
    pumps = [asyncio.create_task(hub.pump("job-fan", wire)) for wire in wires]
    # One resumes after the first event, as with Last-Event-ID.
    resumed = RecordingWire()
    pumps.append(asyncio.create_task(hub.pump("job-fan", resumed, after_sequence=before)))
    await until_followed(hub, len(pumps))
    live = [await publish(js, progress("job-fan", step)) for step in range(2, 12)]
    live.append(await publish(js, end("job-fan")))
    await asyncio.wait_for(asyncio.gather(*pumps), 10)
    for wire in wires:
        assert wire.chunks[0] == chunked(RETRY)
        assert wire.ids == [before, *live]
    assert resumed.ids == live
    assert hub.followers == 0


async def test_a_client_too_far_behind_is_cut_off_alone_and_resumes_without_loss_or_duplicates(
    js: JetStreamContext, hub: EventHub
) -> None:
    slow, fast = RecordingWire(room=4), RecordingWire()  # the retry line and three events, then it is full
    pumps = [asyncio.create_task(hub.pump("job-slow", wire)) for wire in (slow, fast)]
    await until_followed(hub, 2, live=True)  # so each event is a write of its own
    published = [await publish(js, progress("job-slow", step)) for step in range(1, 9)]
    # The slow client's stream is over while the job goes on; the other still follows it.
    await asyncio.wait_for(pumps[0], 10)
    assert slow.ids == published[:3] and hub.followers == 1
    resumed = RecordingWire()
    pumps.append(asyncio.create_task(hub.pump("job-slow", resumed, after_sequence=slow.ids[-1])))
    await until_followed(hub, 2)
    published.append(await publish(js, end("job-slow")))
    await asyncio.wait_for(asyncio.gather(*pumps), 10)
    assert fast.ids == published
    assert slow.ids + resumed.ids == published


async def test_quiet_streams_get_heartbeats_and_streams_without_a_wire_get_the_same_events(
    js: JetStreamContext,
) -> None:
    async with started(js, heartbeat_s=0.2) as hub:
        await _heartbeats_and_queued(js, hub)


async def _heartbeats_and_queued(js: JetStreamContext, hub: EventHub) -> None:
    quiet = RecordingWire()
    pump = asyncio.create_task(hub.pump("job-quiet", quiet))
    queued: list[bytes] = []

    async def read() -> None:
        async for piece in hub.stream("job-quiet"):
            queued.append(piece)

    reader = asyncio.create_task(read())
    await until_followed(hub, 2)
    while chunked(HEARTBEAT) not in quiet.chunks or HEARTBEAT not in queued:
        await asyncio.sleep(0.05)
    published = [await publish(js, progress("job-quiet", 1)), await publish(js, end("job-quiet"))]
    await asyncio.wait_for(asyncio.gather(pump, reader), 10)
    assert quiet.ids == published
    assert queued[0] == RETRY
    assert [int(n) for n in _ID.findall(b"".join(queued))] == published
