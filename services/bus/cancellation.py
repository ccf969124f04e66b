"""Cancellation: a job id -> cancelled generation map in a JetStream key-value bucket, watched by every stage.

A stage checks the bucket before it starts a command (a queued job never starts) and the latent stage
checks the watched copy between denoising steps (a running job stops within one step).
"""

import asyncio
import logging
import threading

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from contracts.subjects import CANCEL_BUCKET

log = logging.getLogger("i2v.cancel")

_KEEP_S = 30 * 24 * 3600.0


async def cancel_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    """The cancel bucket, created on first use on ``replicas`` nodes (ensure_streams changes an existing
    bucket's count)."""
    try:
        return await js.key_value(CANCEL_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(bucket=CANCEL_BUCKET, history=1, ttl=_KEEP_S, storage=StorageType.FILE, replicas=replicas)
        )


async def request_cancel(js: JetStreamContext, job_id: str, generation: int) -> None:
    kv = await cancel_bucket(js)
    await kv.put(job_id, str(generation).encode())


class CancelRegistry:
    """Which job generations are cancelled; safe to ask from worker threads."""

    def __init__(self) -> None:
        self._cancelled: dict[str, int] = {}
        self._lock = threading.Lock()
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, js: JetStreamContext) -> None:
        self._kv = await cancel_bucket(js)
        watcher = await self._kv.watchall()

        async def follow() -> None:
            async for entry in watcher:
                if entry is None or entry.value is None:
                    continue
                try:
                    generation = int(entry.value.decode())
                except ValueError:
                    continue
                with self._lock:
                    self._cancelled[entry.key] = max(generation, self._cancelled.get(entry.key, -1))

        self._task = asyncio.create_task(follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def is_cancelled(self, job_id: str, generation: int) -> bool:
        """Fast check from the watched copy (may lag the bucket by a moment)."""
        with self._lock:
            return self._cancelled.get(job_id, -1) >= generation

    async def check(self, job_id: str, generation: int) -> bool:
        """Authoritative check against the bucket."""
        if self.is_cancelled(job_id, generation):
            return True
        if self._kv is None:
            return False
        try:
            entry = await self._kv.get(job_id)
        except KeyNotFoundError:
            return False
        return entry.value is not None and int(entry.value.decode()) >= generation
