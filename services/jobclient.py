"""Submitting a job and following its history: what the CLI (and any other front door) does on the bus."""

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
from anyio import to_thread
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from opentelemetry import propagate

from contracts.extension import Extension, extension_params
from contracts.keys import artifact_key, command_key, upload_key
from contracts.messages import DeadLetter, Event, JobSpec, JobSubmitted, parse_event
from contracts.params import GenerationParams
from contracts.refs import ObjectRef
from contracts.stages import Stage
from contracts.subjects import DLQ_STREAM, DLQ_SUBJECTS, EVENTS_STREAM, job_events_filter
from contracts.webhooks import Webhook
from infra.objectstore import ObjectStore
from pipeline.image import content_type_of
from services.bus.connection import nats_options, nats_servers
from services.bus.publishing import Command, StageEvent, route
from services.bus.streams import ensure_streams
from services.config import Settings

log = logging.getLogger("i2v.jobclient")

CONNECT_TIMEOUT_S = 5.0
"""How long a first connection may take before the server is reported unreachable."""
PUBLISH_TIMEOUT_S = 10.0
PUBLISH_ATTEMPTS = 3
"""A stream ack may wait PUBLISH_TIMEOUT_S; an unacked publish is sent again (same Nats-Msg-Id) this often."""


def new_job_id() -> str:
    """Time-ordered, unguessable, and safe as a NATS subject token."""
    return f"j{int(time.time() * 1000):012x}{secrets.token_hex(5)}"


class JobNotFoundError(LookupError):
    """No event of this job is on the bus."""


class JobStateError(RuntimeError):
    """The job is not in a state that allows this (e.g. replaying a job that succeeded)."""


class BusUnreachableError(ConnectionError):
    """No NATS server answered at the URL; the message names it and why, in one line."""


@dataclass(frozen=True)
class Followed:
    """One event of a job with its events-stream sequence (what SSE calls the event id)."""

    sequence: int
    event: Event


@dataclass(frozen=True)
class JobHistory:
    """A job's events folded: the latest generation and how (if) it ended."""

    job_id: str
    events: tuple[Followed, ...]

    @property
    def generation(self) -> int:
        return max((_generation(f.event) for f in self.events), default=0)

    @property
    def terminal(self) -> Event | None:
        from contracts.messages import TERMINAL_TYPES

        current = self.generation
        for item in reversed(self.events):
            if item.event.type in TERMINAL_TYPES and _generation(item.event) == current:
                return item.event
        return None

    @property
    def spec(self) -> JobSpec | None:
        for item in reversed(self.events):
            job = getattr(item.event, "job", None)
            if isinstance(job, JobSpec):
                return job
        return None


def _generation(event: Event) -> int:
    job = getattr(event, "job", None)
    if isinstance(job, JobSpec):
        return job.generation
    return int(getattr(event, "generation", 0))


class JobClient:
    """Talks to the bus for one process; connect with :meth:`connect`, close with :meth:`close`."""

    def __init__(self, nc: Client, store: ObjectStore) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._store = store
        self.publish_timeout_s = PUBLISH_TIMEOUT_S

    def jetstream(self, timeout_s: float = 2.0) -> JetStreamContext:
        """JetStream on this client's connection, for reads of its own (queue positions: services/gateway/eta.py)."""
        return self._nc.jetstream(timeout=timeout_s)

    @classmethod
    async def from_settings(
        cls, settings: Settings, store: ObjectStore, timeout_s: float = CONNECT_TIMEOUT_S
    ) -> "JobClient":
        """:meth:`connect` to ``I2V_NATS_URL`` as ``I2V_NATS_USER`` (see services/bus/connection.py)."""
        return await cls.connect(
            settings.nats_url, store, timeout_s, replicas=settings.stream_replicas, **nats_options(settings)
        )

    @classmethod
    async def connect(
        cls,
        nats_url: str,
        store: ObjectStore,
        timeout_s: float = CONNECT_TIMEOUT_S,
        *,
        replicas: int = 1,
        **options: Any,
    ) -> "JobClient":
        """Connect and declare the streams; BusUnreachableError if that takes longer than ``timeout_s``.

        ``nats_url`` is one server or several separated by commas (a cluster's nodes), ``replicas`` the
        streams' I2V_STREAM_REPLICAS, and ``options`` go to ``nats.connect`` (user, password, inbox prefix).
        Once connected the client reconnects for ever, so a job outlives a restart of nats-server.
        """
        try:
            servers = nats_servers(nats_url)
        except ValueError as exc:
            raise BusUnreachableError(str(exc)) from None
        failed: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
        refused: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            if not failed.done():
                log.debug("NATS at %s: %s", nats_url, exc)
                refused.append(exc)
                # A cluster node that is down is skipped: the connect is over once every server failed.
                if len(refused) >= len(servers):
                    failed.set_result(exc)
            elif "permissions violation" in str(exc):
                # A publish or subscription this user may not make: the call waits for its timeout.
                log.warning("NATS at %s refused: %s", nats_url, str(exc).removeprefix("nats: "))
            else:
                log.debug("NATS at %s: %s", nats_url, exc)

        # Reconnecting for ever would also retry the first connect for ever: the first round of failed
        # attempts (each server refused, or gave no answer within connect_timeout) ends it here.
        connecting = asyncio.ensure_future(
            nats.connect(
                servers,
                connect_timeout=min(2.0, timeout_s),
                max_reconnect_attempts=-1,
                error_cb=on_error,
                **options,
            )
        )
        racing: set[asyncio.Future[Any]] = {connecting, failed}
        done, _ = await asyncio.wait(racing, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if connecting not in done:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connecting
            reason = _reason(failed.result() if failed in done else TimeoutError(), timeout_s)
            raise BusUnreachableError(f"cannot reach NATS at {nats_url or '(no URL)'} ({reason})")
        try:
            nc = connecting.result()
        except (OSError, ValueError, nats.errors.Error) as exc:
            raise BusUnreachableError(
                f"cannot reach NATS at {nats_url or '(no URL)'} ({_reason(exc, timeout_s)})"
            ) from None
        failed.cancel()
        client = cls(nc, store)
        try:
            await asyncio.wait_for(ensure_streams(client._js, replicas), timeout_s)
        except (TimeoutError, nats.errors.Error) as exc:
            await client.close()
            raise BusUnreachableError(
                f"NATS at {nats_url} has no usable JetStream ({_reason(exc, timeout_s)})"
            ) from None
        return client

    async def close(self) -> None:
        await self._nc.drain()

    async def submit(
        self,
        image: bytes,
        params: GenerationParams,
        account: str,
        job_id: str | None = None,
        webhook: Webhook | None = None,
    ) -> JobSpec:
        """Store the upload and publish JobSubmitted; the seed is fixed here so the job is reproducible."""
        job = JobSpec(
            job_id=job_id or new_job_id(), account=account, params=params.with_resolved_seed(), webhook=webhook
        )
        upload = await to_thread.run_sync(self._store.put, upload_key(job.job_id), image, content_type_of(image))
        await self._publish(JobSubmitted(job=job, upload=upload))  # the job's trace starts here
        return job

    async def submit_extension(self, job: JobSpec) -> JobSpec:
        """Publish JobSubmitted for an extension: no upload, the parent's frames by reference (``job.extends``),
        from which ingest takes the last one as the picture."""
        if job.extends is None:
            raise ValueError(f"job {job.job_id} extends no job")
        await self._publish(JobSubmitted(job=job, upload=job.extends.frames))
        return job

    async def extension(
        self, parent_id: str, account: str, changes: Mapping[str, Any], webhook: Webhook | None = None
    ) -> JobSpec:
        """A new job of ``account``'s continuing ``parent_id``'s video from its last frame, parameters as
        :func:`~contracts.extension.extension_params` makes them from ``changes``; not yet queued
        (:meth:`submit_extension` queues it).

        JobStateError (one line) when the parent is another account's, not completed, or its frames are gone;
        ExtensionRefused or pydantic's ValidationError for a parameter the extension cannot take.
        """
        from contracts.messages import JobCompleted

        history = await self.history(parent_id)
        if not history.events:
            raise JobNotFoundError(parent_id)
        spec = history.spec
        if spec is not None and spec.account != account:
            raise JobStateError(f"job {parent_id} is another account's; only {spec.account!r} can extend it")
        terminal = history.terminal
        if not isinstance(terminal, JobCompleted):
            ended = "is still running" if terminal is None else f"ended {terminal.type.removeprefix('Job').lower()}"
            raise JobStateError(f"job {parent_id} {ended}; only a completed job can be extended")
        parent = terminal.job
        frames = await to_thread.run_sync(stored_frames, self._store, parent_id, parent.generation, terminal.frames)
        if frames is None:
            raise JobStateError(f"job {parent_id}'s frames are no longer stored (deleted); it cannot be extended")
        params = extension_params(terminal.job.params, terminal.width, terminal.height, terminal.frame_count, changes)
        extends = Extension(
            job_id=parent_id,
            generation=terminal.job.generation,
            frames=frames,
            frame_count=terminal.frame_count,
            width=terminal.width,
            height=terminal.height,
        )
        return JobSpec(
            job_id=new_job_id(), account=account, params=params.with_resolved_seed(), webhook=webhook, extends=extends
        )

    async def history(self, job_id: str) -> JobHistory:
        """Every event of the job so far (does not wait for more)."""
        sub = await self._js.subscribe(
            job_events_filter(job_id),
            stream=EVENTS_STREAM,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        items: list[Followed] = []
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except TimeoutError:
                    break
                items.append(Followed(sequence=msg.metadata.sequence.stream, event=parse_event(msg.data)))
                if msg.metadata.num_pending == 0:
                    break
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return JobHistory(job_id, tuple(items))

    async def cancel(self, job_id: str, reason: str = "") -> JobHistory:
        """Ask every stage to stop the job's current generation; a finished job is left as it is."""
        from contracts.messages import CancelRequested
        from services.bus.cancellation import request_cancel

        history = await self.history(job_id)
        if not history.events:
            raise JobNotFoundError(job_id)
        if history.terminal is None:
            generation = history.generation
            await request_cancel(self._js, job_id, generation)
            await self._publish(CancelRequested(job_id=job_id, generation=generation, reason=reason))
        return history

    async def replay(self, job_id: str, from_stage: Stage | None = None) -> JobSpec:
        """Run a failed or cancelled job again from ``from_stage`` (default: where it stopped).

        Earlier stages are not recomputed: their outputs stay in the object store and the stored
        command of the stage is sent again under a new generation. Billing reserves again, since the
        failed generation was refunded.
        """
        from contracts.messages import (
            ImagePrepared,
            JobCancelled,
            JobFailed,
            JobRejected,
            ReplayRequested,
        )

        history = await self.history(job_id)
        terminal = history.terminal
        spec = history.spec
        if spec is None:
            raise JobNotFoundError(job_id)
        if terminal is None:
            raise JobStateError(f"job {job_id} is still running; cancel it first or wait for it to end")
        if not isinstance(terminal, JobFailed | JobCancelled | JobRejected):
            raise JobStateError(f"job {job_id} succeeded; there is nothing to replay")
        if from_stage is None:
            if isinstance(terminal, JobFailed):
                from_stage = terminal.stage
            elif isinstance(terminal, JobRejected):
                from_stage = Stage.BILLING
            else:
                from_stage = terminal.stage or Stage.INGEST
        job = spec.model_copy(update={"generation": history.generation + 1})
        stored = await to_thread.run_sync(self._store.head, command_key(job_id, from_stage))
        if stored is None:
            raise JobStateError(f"job {job_id} never reached stage {from_stage}; replay from an earlier stage")
        if from_stage == Stage.INGEST:
            body = await to_thread.run_sync(self._store.get, stored)
            command: Command = JobSubmitted.model_validate_json(body).model_copy(update={"job": job})
        else:
            billing = await to_thread.run_sync(self._store.head, command_key(job_id, Stage.BILLING))
            if billing is None:
                raise JobStateError(f"job {job_id} never reached billing; replay from ingest")
            prepared = ImagePrepared.model_validate_json(await to_thread.run_sync(self._store.get, billing))
            if from_stage == Stage.BILLING:
                command = prepared.model_copy(update={"job": job, "resume": None, "resume_command": None})
            else:
                command = prepared.model_copy(update={"job": job, "resume": from_stage, "resume_command": stored})
        await self._publish(ReplayRequested(job_id=job_id, generation=job.generation, stage=from_stage))
        await self._publish(command)
        return job

    async def dead_letters(self) -> list[tuple[int, DeadLetter]]:
        """Every dead letter with its stream sequence (the id ``i2v dlq`` shows), oldest first."""
        from nats.js.errors import NotFoundError

        try:
            info = await self._js.stream_info(DLQ_STREAM)
        except NotFoundError:
            return []
        if info.state.messages == 0:
            return []
        sub = await self._js.subscribe(
            DLQ_SUBJECTS,
            stream=DLQ_STREAM,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        letters: list[tuple[int, DeadLetter]] = []
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=2.0)
                except TimeoutError:
                    break
                letters.append((msg.metadata.sequence.stream, DeadLetter.model_validate_json(msg.data)))
                if msg.metadata.num_pending == 0:
                    break
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return letters

    async def _publish(self, message: "Command | StageEvent") -> None:
        where = route(message)
        headers = {"Nats-Msg-Id": where.msg_id, "content-type": "application/json"}
        propagate.inject(headers)
        body = message.model_dump_json().encode()
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                await self._js.publish(
                    where.subject, body, stream=where.stream, headers=headers, timeout=self.publish_timeout_s
                )
                return
            except nats.errors.TimeoutError:
                # The stream's ack is late (a busy server), not refused: the same Nats-Msg-Id again is
                # deduplicated by the stream, so asking again cannot store the message twice.
                if attempt == PUBLISH_ATTEMPTS:
                    raise
                log.warning("no ack for %s within %gs; publishing it again", where.msg_id, self.publish_timeout_s)

    async def follow(self, job_id: str, after_sequence: int = 0) -> AsyncIterator[Followed]:
        """Yield the job's events from the start (or after a sequence) until a terminal event."""
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
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()


def stored_frames(store: ObjectStore, job_id: str, generation: int, frames: ObjectRef | None) -> ObjectRef | None:
    """Where a completed job's video frames are now, checked in the store: those its ``JobCompleted`` named, or
    (a job completed before events named them) its decode's output; None once deleted or expired."""
    return store.head(frames.key if frames is not None else artifact_key(job_id, generation, FRAMES_NAME))


FRAMES_NAME = "frames.safetensors"
"""What the decode stage stores a job generation's frames as (``services/decode/stage.py``)."""


def _reason(exc: BaseException, timeout_s: float) -> str:
    """Why a connection failed, in a few words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g}s"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.removeprefix("nats: ")
