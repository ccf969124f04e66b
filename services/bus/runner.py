"""How every stage handles one command: heartbeats, progress, the ack decision, retries, dead letters.

Handlers stay thin: they validate the contract and hand :meth:`StageRunner.run` a blocking function that
does the work and returns the next message. The runner runs it in a worker thread so acks, heartbeats
and pings keep flowing on the event loop.
"""

import asyncio
import concurrent.futures
import contextvars
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import anyio.to_thread
from faststream.nats import NatsBroker
from faststream.nats.message import NatsMessage

from contracts.keys import command_key
from contracts.messages import (
    DeadLetter,
    JobCancelled,
    JobFailed,
    JobSpec,
    StageFinished,
    StageProgress,
    StageStarted,
    Terminal,
)
from contracts.stages import Stage
from infra.objectstore import ObjectStore
from services.bus import failpoints
from services.bus.cancellation import CancelRegistry
from services.bus.faults import Fault, JobCancelledError, classify
from services.bus.publishing import Command, StageEvent, route
from services.config import Settings

log = logging.getLogger("i2v.runner")

Progress = Callable[[int, int], None]
"""Called from the worker thread as ``progress(step, total)``; thread-safe."""
Work = Callable[[Progress], Command | Terminal | None]
"""Returns the next message; None when the generation already ended and nothing is to be forwarded."""


class Publisher(Protocol):
    async def publish(self, message: Command | Terminal | StageEvent | DeadLetter) -> None: ...


class BrokerPublisher:
    """Publishes contracts where :func:`route` says, with their Nats-Msg-Id, awaiting the stream's ack."""

    def __init__(self, broker: NatsBroker) -> None:
        self._broker = broker

    async def publish(self, message: Command | Terminal | StageEvent | DeadLetter) -> None:
        where = route(message)
        await self._broker.publish(
            message,
            where.subject,
            headers={"Nats-Msg-Id": where.msg_id},
            stream=where.stream,
            timeout=10.0,
        )


def delivery_count(msg: NatsMessage) -> int:
    """How many times JetStream has delivered this message, this one included."""
    metadata = msg.raw_message.metadata
    return int(metadata.num_delivered) if metadata else 1


class StageRunner:
    """Runs one stage's work for a command and decides ack, retry or failure."""

    def __init__(
        self,
        stage: Stage,
        publisher: Publisher,
        settings: Settings,
        cancels: CancelRegistry,
        store: ObjectStore | None,
    ) -> None:
        self.stage = stage
        self._publisher = publisher
        self._settings = settings
        self._cancels = cancels
        self._store = store

    async def run(self, msg: NatsMessage, job: JobSpec, work: Work) -> None:
        attempt = delivery_count(msg)
        started = time.perf_counter()
        # 1. Keep the command itself so this stage can be replayed later without the stages before it
        #    (even a cancelled one: a cancelled job may be replayed from here).
        if self._store is not None and attempt == 1:
            try:
                await anyio.to_thread.run_sync(self._keep_command, job, msg.body)
            except Exception as exc:
                await self._fail(msg, job, attempt, classify(exc))
                return
        # 2. A cancelled job goes no further: nothing after the cancel runs.
        if await self._cancels.check(job.job_id, job.generation):
            await self._publisher.publish(JobCancelled(job=job, stage=self.stage))
            await msg.ack()
            return
        await self._publisher.publish(
            StageStarted(job_id=job.job_id, stage=self.stage, generation=job.generation, attempt=attempt)
        )
        progress = self._thread_progress(job, attempt)
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        try:
            result = await anyio.to_thread.run_sync(work, progress)
        except JobCancelledError:
            heartbeat.cancel()
            await self._publisher.publish(JobCancelled(job=job, stage=self.stage))
            await msg.ack()
            return
        except Exception as exc:
            heartbeat.cancel()
            await self._fail(msg, job, attempt, classify(exc))
            return
        heartbeat.cancel()
        await self._publisher.publish(
            StageFinished(
                job_id=job.job_id,
                stage=self.stage,
                generation=job.generation,
                seconds=round(time.perf_counter() - started, 4),
            )
        )
        # Publish before ack: a crash in between redelivers, the stage reuses its stored output and
        # the republish is dropped by Nats-Msg-Id. The reverse order could lose the job.
        if result is not None:
            await self._publisher.publish(result)
        failpoints.hit(f"{self.stage}.before_ack")
        await msg.ack()

    def _keep_command(self, job: JobSpec, body: bytes) -> None:
        assert self._store is not None
        self._store.put(command_key(job.job_id, self.stage), body, "application/json")

    async def _fail(self, msg: NatsMessage, job: JobSpec, attempt: int, fault: Fault) -> None:
        if fault.transient and attempt < self._settings.max_deliver:
            backoff = self._settings.retry_backoff_s
            delay = backoff[min(attempt - 1, len(backoff) - 1)]
            log.warning(
                "%s: job %s attempt %d failed (%s: %s); retrying in %.1fs",
                self.stage,
                job.job_id,
                attempt,
                fault.code,
                fault.message,
                delay,
            )
            await msg.nack(delay=delay)
            return
        log.error("%s: job %s failed for good (%s: %s)", self.stage, job.job_id, fault.code, fault.message)
        if fault.transient:
            await self._publisher.publish(
                DeadLetter(
                    stage=self.stage,
                    subject=msg.raw_message.subject,
                    body=msg.body.decode("utf-8", "backslashreplace"),
                    code=fault.code,
                    error=fault.message,
                    attempts=attempt,
                    job_id=job.job_id,
                )
            )
        await self._publisher.publish(JobFailed(job=job, stage=self.stage, code=fault.code, reason=fault.message))
        await msg.reject()

    async def _heartbeat(self, msg: NatsMessage) -> None:
        # in_progress() resets the ack deadline; without it a long denoise would be redelivered mid-run.
        while True:
            await asyncio.sleep(self._settings.heartbeat_s)
            try:
                await msg.in_progress()
            except Exception:  # a missed heartbeat only risks a redelivery, which is idempotent
                log.exception("heartbeat failed")

    def _thread_progress(self, job: JobSpec, attempt: int) -> Progress:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # keeps the job's trace on progress events

        def progress(step: int, total: int) -> None:
            event = StageProgress(
                job_id=job.job_id,
                stage=self.stage,
                generation=job.generation,
                attempt=attempt,
                step=step,
                total=total,
            )
            _call_in_loop(loop, context, self._publisher.publish(event)).result(timeout=30)

        return progress


def _call_in_loop(
    loop: asyncio.AbstractEventLoop, context: contextvars.Context, coro: Coroutine[Any, Any, None]
) -> concurrent.futures.Future[None]:
    """Schedule ``coro`` on ``loop`` from another thread inside ``context``; return a concurrent future."""
    done: concurrent.futures.Future[None] = concurrent.futures.Future()

    def start() -> None:
        task = loop.create_task(coro, context=context.copy())

        def finish(t: "asyncio.Task[None]") -> None:
            if t.cancelled():
                done.cancel()
            elif (exc := t.exception()) is not None:
                done.set_exception(exc)
            else:
                done.set_result(None)

        task.add_done_callback(finish)

    loop.call_soon_threadsafe(start)
    return done
