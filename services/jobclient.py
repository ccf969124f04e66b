"""Submitting a job and following its history: what the CLI (and any other front door) does on the bus."""

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy
from opentelemetry import propagate

from contracts.messages import Event, JobSpec, JobSubmitted, parse_event
from contracts.params import GenerationParams
from contracts.refs import artifact_key
from contracts.subjects import EVENTS_STREAM, WORK_STREAM, job_events_filter
from infra.objectstore import ObjectStore
from services.bus.publishing import route
from services.bus.streams import ensure_streams

_SNIFF = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
)


def new_job_id() -> str:
    """Time-ordered, unguessable, and safe as a NATS subject token."""
    return f"j{int(time.time() * 1000):012x}{secrets.token_hex(5)}"


def sniff_content_type(data: bytes) -> str:
    for magic, content_type in _SNIFF:
        if data.startswith(magic):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


@dataclass(frozen=True)
class Followed:
    """One event of a job with its events-stream sequence (what SSE calls the event id)."""

    sequence: int
    event: Event


class JobClient:
    """Talks to the bus for one process; connect with :meth:`connect`, close with :meth:`close`."""

    def __init__(self, nc: Client, store: ObjectStore) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._store = store

    @classmethod
    async def connect(cls, nats_url: str, store: ObjectStore) -> "JobClient":
        nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=-1)
        client = cls(nc, store)
        await ensure_streams(client._js)
        return client

    async def close(self) -> None:
        await self._nc.drain()

    async def submit(self, image: bytes, params: GenerationParams, account: str, job_id: str | None = None) -> JobSpec:
        """Store the upload and publish JobSubmitted; the seed is fixed here so the job is reproducible."""
        job = JobSpec(job_id=job_id or new_job_id(), account=account, params=params.with_resolved_seed())
        upload = self._store.put(artifact_key(job.job_id, "upload"), image, sniff_content_type(image))
        command = JobSubmitted(job=job, upload=upload)
        where = route(command)
        headers = {"Nats-Msg-Id": where.msg_id, "content-type": "application/json"}
        propagate.inject(headers)  # the job's trace starts here
        await self._js.publish(where.subject, command.model_dump_json().encode(), stream=WORK_STREAM, headers=headers)
        return job

    async def follow(self, job_id: str, after_sequence: int = 0) -> AsyncIterator[Followed]:
        """Yield the job's events from the start (or after a sequence) until its terminal event."""
        from contracts.messages import TERMINAL_TYPES

        start = (
            ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_sequence + 1)
            if after_sequence
            else ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        sub = await self._js.subscribe(
            job_events_filter(job_id), stream=EVENTS_STREAM, ordered_consumer=True, config=start
        )
        try:
            async for msg in sub.messages:
                event = parse_event(msg.data)
                yield Followed(sequence=msg.metadata.sequence.stream, event=event)
                if event.type in TERMINAL_TYPES:
                    return
        finally:
            await sub.unsubscribe()
