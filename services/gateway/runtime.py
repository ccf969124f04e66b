"""What the gateway's routes work with at run time: its adapters, the bus connection, the live feed.

Built by :func:`services.gateway.app.build_app`; connected and disconnected by the app's lifespan.
"""

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field

import anyio.to_thread
import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from contracts.refs import ObjectRef
from contracts.subjects import EVENTS_STREAM
from infra.objectstore import ObjectStore
from services.billing.ledger import Ledger
from services.bus.streams import ensure_streams
from services.config import Settings
from services.gateway.auth import TokenSigner
from services.gateway.events import EventHub, Frame
from services.gateway.jobs_index import JobsIndex
from services.gateway.media import MediaCache
from services.jobclient import JobClient

log = logging.getLogger("i2v.gateway")

_INDEX_BATCH = 512


class PreStoredUploads:
    """The object store as JobClient sees it: an upload the gateway already stored (off the event
    loop) is handed back instead of being written again on the loop."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self.bucket = store.bucket
        self._ready: dict[str, ObjectRef] = {}
        self._lock = threading.Lock()

    def stored(self, ref: ObjectRef) -> None:
        with self._lock:
            self._ready[ref.key] = ref

    def put(self, key: str, data: bytes, content_type: str) -> ObjectRef:
        with self._lock:
            ref = self._ready.pop(key, None)
        if ref is not None and ref.size == len(data):
            return ref
        return self._store.put(key, data, content_type)

    def get(self, ref: ObjectRef) -> bytes:
        return self._store.get(ref)

    def head(self, key: str) -> ObjectRef | None:
        return self._store.head(key)

    def delete_prefix(self, prefix: str) -> int:
        return self._store.delete_prefix(prefix)

    def presigned_get_url(self, ref: ObjectRef, expires_s: int) -> str:
        return self._store.presigned_get_url(ref, expires_s)


class IndexWriter:
    """Folds live events into the jobs index in batches, off the event loop."""

    def __init__(self, index: JobsIndex) -> None:
        self._index = index
        self._queue: asyncio.Queue[Frame] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.folded_sequence = 0
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
        """Wait until events up to ``sequence`` are folded in (for a read right after an event)."""
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
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < _INDEX_BATCH:
                batch.append(self._queue.get_nowait())
            events = [(f.sequence, f.data) for f in batch]
            try:
                await anyio.to_thread.run_sync(self._index.fold, events)
            except Exception:
                log.exception("folding %d events into the jobs index failed", len(events))
            self.folded_sequence = max(self.folded_sequence, batch[-1].sequence)
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
    heartbeat_s: float = 15.0
    max_upload_bytes: int = 25 * 2**20
    uploads: PreStoredUploads | None = None
    nc: Client | None = None
    client: JobClient | None = None
    hub: EventHub | None = None
    writer: IndexWriter | None = None
    key_cache: dict[str, tuple[str, float]] = field(default_factory=dict)

    def bus(self) -> JobClient:
        if self.client is None:
            raise RuntimeError("the gateway is not connected to NATS")
        return self.client

    def jetstream(self) -> JetStreamContext:
        if self.nc is None:
            raise RuntimeError("the gateway is not connected to NATS")
        return self.nc.jetstream()

    def uploaded(self, ref: ObjectRef) -> None:
        """Tell the bus client an upload is already stored."""
        if self.uploads is not None:
            self.uploads.stored(ref)

    def events(self) -> EventHub:
        if self.hub is None:
            raise RuntimeError("the gateway is not connected to NATS")
        return self.hub


async def connect(gateway: Gateway) -> None:
    settings = gateway.settings
    nc = await nats.connect(settings.nats_url, connect_timeout=5, max_reconnect_attempts=-1)
    js = nc.jetstream()
    await ensure_streams(js)
    gateway.nc = nc
    gateway.uploads = PreStoredUploads(gateway.store)
    gateway.client = JobClient(nc, gateway.uploads)
    writer = IndexWriter(gateway.index)
    checkpoint = await anyio.to_thread.run_sync(gateway.index.checkpoint)
    info = await js.stream_info(EVENTS_STREAM)
    # A fresh NATS with an old index would start past the stream's end and miss everything.
    start = checkpoint if checkpoint <= info.state.last_seq else 0
    writer.folded_sequence = start
    hub = EventHub(js, sink=writer.offer)
    writer.start()
    await hub.start(after_sequence=start)
    gateway.writer, gateway.hub = writer, hub
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
    gateway.hub = gateway.writer = gateway.client = gateway.nc = None
