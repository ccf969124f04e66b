"""What the gateway's routes work with at run time: its adapters, the bus connection, the live feed.

Built by :func:`services.gateway.app.build_app`; connected and disconnected by the app's lifespan.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio.to_thread
import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from contracts.subjects import EVENTS_STREAM
from infra.objectstore import ObjectStore
from pipeline.image import header_pixels
from services.billing.ledger import Ledger
from services.bus.connection import nats_options, nats_servers
from services.bus.streams import ensure_streams_patiently
from services.config import Settings
from services.gateway.auth import TokenSigner
from services.gateway.errors import ApiError
from services.gateway.eta import Estimator, WorkQueues
from services.gateway.events import EventHub, Frame
from services.gateway.jobs_index import JobsIndex
from services.gateway.media import MediaCache
from services.gateway.model_sizes import ModelSizes
from services.jobclient import JobClient

log = logging.getLogger("i2v.gateway")

DECODE_SLOTS = 2
"""Uploads decoded at once."""
LARGE_DECODE_PIXELS = 16_000_000
"""Pictures of this many pixels or more (64 MB and up decoded, as RGBA) decode one at a time: a 40-megapixel
PNG decodes to 160 MB, and two of them at once, with what the allocator has not yet handed back, took the
process to its 600 MB goal (bench/upload_memory.py)."""


class DecodeSlots:
    """Uploads being decoded at once: :data:`DECODE_SLOTS`, of which one at most is a large picture; the
    others wait their turn. A picture whose size its header does not give counts as large."""

    def __init__(self) -> None:
        self._any = asyncio.Semaphore(DECODE_SLOTS)
        self._large = asyncio.Semaphore(1)

    @contextlib.asynccontextmanager
    async def slot(self, image: bytes) -> AsyncIterator[None]:
        pixels = header_pixels(image)
        async with contextlib.AsyncExitStack() as held:
            if pixels is None or pixels >= LARGE_DECODE_PIXELS:
                await held.enter_async_context(self._large)
            await held.enter_async_context(self._any)
            yield


_INDEX_BATCH = 512
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 5.0


class IndexWriter:
    """Folds live events into the jobs index in batches, off the event loop.

    A batch that fails to fold is kept and tried again with backoff; nothing after it is folded
    before it is, so the checkpoint never passes an event the index does not hold.
    """

    def __init__(self, index: JobsIndex, *, retry_max_s: float = _RETRY_MAX_S) -> None:
        self._index = index
        self._retry_max_s = retry_max_s
        self._queue: asyncio.Queue[Frame] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.folded_sequence = 0
        self.error: str | None = None
        """Why the last fold failed, while the index is behind; None when it is current."""
        self._changed = asyncio.Event()

    def offer(self, item: Frame) -> None:
        self._queue.put_nowait(item)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_for(self, sequence: int, timeout_s: float) -> bool:
        """Wait until events up to ``sequence`` are folded in (for a read right after an event);
        False when they are not within ``timeout_s``, e.g. while folding fails."""
        deadline = time.monotonic() + timeout_s
        while self.folded_sequence < sequence:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    async def _run(self) -> None:
        batch: list[Frame] = []
        delay = 0.0
        while True:
            if not batch:
                batch.append(await self._queue.get())
            while not self._queue.empty() and len(batch) < _INDEX_BATCH:
                batch.append(self._queue.get_nowait())
            try:
                await anyio.to_thread.run_sync(self._index.fold, [(f.sequence, f.data) for f in batch])
            except Exception as exc:
                delay = min(max(delay * 2, _RETRY_FIRST_S), self._retry_max_s)
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception(
                    "folding %d events (up to sequence %d) into the jobs index failed; the index is behind,"
                    " retrying in %.1f s",
                    len(batch),
                    batch[-1].sequence,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            if self.error is not None:
                log.info("the jobs index caught up to sequence %d", batch[-1].sequence)
            self.error, delay = None, 0.0
            self.folded_sequence = max(self.folded_sequence, batch[-1].sequence)
            batch = []
            self._changed.set()


@dataclass
class Gateway:
    """What the routes use; built by :func:`build_app`, connected by its lifespan."""

    settings: Settings
    ledger: Ledger
    store: ObjectStore
    index: JobsIndex
    signer: TokenSigner
    media: MediaCache
    model_size: ModelSizes
    heartbeat_s: float = 15.0
    max_upload_bytes: int = 25 * 2**20
    nc: Client | None = None
    client: JobClient | None = None
    hub: EventHub | None = None
    writer: IndexWriter | None = None
    estimator: Estimator | None = None
    """Queue positions and ETAs (services/gateway/eta.py); learns stage times from the live feed."""
    replaying: set[str] = field(default_factory=set)
    """Jobs with a replay under way in this process."""
    decodes: DecodeSlots = field(default_factory=DecodeSlots)
    """Uploads being decoded at once; the others wait their turn."""

    def bus(self) -> JobClient:
        if self.client is None:
            raise RuntimeError("the gateway is not connected to NATS")
        return self.client

    def jetstream(self) -> JetStreamContext:
        if self.nc is None:
            raise RuntimeError("the gateway is not connected to NATS")
        return self.nc.jetstream()

    def events(self) -> EventHub:
        if self.hub is None:
            raise RuntimeError("the gateway is not connected to NATS")
        return self.hub


async def connect(gateway: Gateway) -> None:
    """Connect to NATS, catch the jobs index up from its checkpoint and start the live feed."""
    settings = gateway.settings
    # The first look-up of a model's size imports the pipeline's model module: now, not in an upload.
    with contextlib.suppress(ApiError):
        await anyio.to_thread.run_sync(gateway.model_size, settings.model)
    nc = await nats.connect(
        nats_servers(settings.nats_url), connect_timeout=5, max_reconnect_attempts=-1, **nats_options(settings)
    )
    js = nc.jetstream()
    await ensure_streams_patiently(js, settings.stream_replicas)
    gateway.nc = nc
    gateway.client = JobClient(nc, gateway.store)
    writer = IndexWriter(gateway.index)
    checkpoint = await anyio.to_thread.run_sync(gateway.index.checkpoint)
    info = await js.stream_info(EVENTS_STREAM)
    # A fresh NATS with an old index would start past the stream's end and miss everything.
    start = checkpoint if checkpoint <= info.state.last_seq else 0
    writer.folded_sequence = start
    index = gateway.index
    # A short timeout: a GET of a job waits on these reads.
    estimator = Estimator(
        WorkQueues(nc.jetstream(timeout=2.0)), lambda job_id: view.params if (view := index.get(job_id)) else None
    )

    def sink(item: Frame) -> None:
        writer.offer(item)
        estimator.offer(item)

    hub = EventHub(js, sink=sink, heartbeat_s=gateway.heartbeat_s)
    writer.start()
    await hub.start(after_sequence=start)
    gateway.writer, gateway.hub, gateway.estimator = writer, hub, estimator
    log.info("gateway connected to %s; jobs index from sequence %d", settings.nats_url, start + 1)


async def disconnect(gateway: Gateway) -> None:
    if gateway.hub is not None:
        with contextlib.suppress(Exception):
            await gateway.hub.stop()
    if gateway.writer is not None:
        await gateway.writer.stop()
    if gateway.nc is not None:
        with contextlib.suppress(Exception):
            await gateway.nc.drain()
    gateway.hub = gateway.writer = gateway.client = gateway.nc = gateway.estimator = None
