"""How a stage handles one delivery: heartbeats, progress, and the decision to ack, retry or give up.

Handlers stay thin: they validate the contract and hand :meth:`StageRunner.run` a blocking function that
does the work and returns the next message. The runner runs it in a worker thread so acks, heartbeats
and pings keep flowing on the event loop. Every path through :meth:`StageRunner.run` ends in an ack,
a nack with backoff, or a terminal event (with a dead letter when the retries ran out): anything that
raises, inside the work or around it, goes through the same fault decision.

The runner sees the bus only through :mod:`services.bus.ports`; it imports no NATS.
"""

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio.to_thread
from pydantic import ValidationError

from contracts.failures import FailureCode
from contracts.keys import command_key
from contracts.messages import (
    Command,
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
from services.bus.faults import Fault, JobCancelledError, classify
from services.bus.ports import CancelCheck, Delivery, Progress, Publisher
from services.config import Settings
from services.metrics import count_stage_error, observe_stage

log = logging.getLogger("i2v.runner")

Work = Callable[[Progress], Command | Terminal | None]
"""Returns the next message; None when the generation already ended and nothing is to be forwarded."""

_BODY_LIMIT = 65536
"""Characters of an unreadable body kept in its dead letter (a dead letter is a message too)."""


class _CommandNotKeptError(Exception):
    """The command could not be stored for replay; always retried, whatever the cause."""


class StageRunner:
    """Runs one stage's work for a command and decides ack, retry or failure."""

    def __init__(
        self,
        stage: Stage,
        publisher: Publisher,
        settings: Settings,
        cancels: CancelCheck,
        store: ObjectStore | None,
        *,
        prefetch: bool = False,
    ) -> None:
        self.stage = stage
        self._publisher = publisher
        self._settings = settings
        self._cancels = cancels
        self._store = store
        # One command's work at a time: a second delivery held (prefetch) waits its turn here.
        self._turn = asyncio.Lock()
        self._hold = 2 if prefetch else 1
        self._held: set[asyncio.Task[None]] = set()

    async def run(self, delivery: Delivery, job: JobSpec, work: Work) -> None:
        """Handle one delivery of a command for ``job``; never raises.

        With ``prefetch`` the delivery is handled in a task of its own and this returns as soon as the
        runner holds fewer than two, so the subscriber (which fetches one command at a time, after its
        handler returns) takes the next command while this one works. Every command fetched is then in a
        runner's hands, heartbeating. (FastStream's own ``max_workers=2`` fetched a third while two were
        held and kept it, without heartbeats, until a worker was free: past its ack deadline it was
        redelivered to another replica and both ran it.)
        """
        if self._hold == 1:
            await self._handle(delivery, job, work)
            return
        task = asyncio.create_task(self._handle(delivery, job, work))
        self._held.add(task)
        task.add_done_callback(self._held.discard)
        while len(self._held) >= self._hold:
            await asyncio.wait(set(self._held), return_when=asyncio.FIRST_COMPLETED)

    async def abandon(self) -> None:
        """Stop handling the deliveries held (at shutdown): unacknowledged, they come back after their
        ack deadline, as those of a killed process do."""
        for task in self._held:
            task.cancel()
        await asyncio.gather(*self._held, return_exceptions=True)

    async def _handle(self, delivery: Delivery, job: JobSpec, work: Work) -> None:
        try:
            await self._attempt(delivery, job, work)
        except _CommandNotKeptError as exc:
            cause = classify(exc.__cause__ or exc)
            message = f"could not keep the command for replay: {cause.message}"
            await self._fail(delivery, job, dataclasses.replace(cause, transient=True, message=message))
        except Exception as exc:
            await self._fail(delivery, job, classify(exc))

    async def handle_event(self, delivery: Delivery, work: Callable[[], None]) -> None:
        """Apply an event this stage follows (billing's settlement); never raises.

        Done: ack. A transient fault: nack with backoff, up to ``event_max_deliver`` deliveries. Then, or
        at once for a permanent fault, the event is dead-lettered and terminated: the job has already
        ended, so nothing else is published for it.
        """
        attempt = delivery.attempt
        try:
            await anyio.to_thread.run_sync(work)
            await delivery.ack()
            return
        except Exception as exc:
            fault = classify(exc)
        count_stage_error(self.stage, fault.code)
        if fault.transient and attempt < self._settings.event_max_deliver:
            await self._retry(delivery, f"event on {delivery.subject}", attempt, fault)
            return
        log.error("%s: giving up on an event on %s (%s: %s)", self.stage, delivery.subject, fault.code, fault.message)
        letter = self._dead_letter(delivery, fault.code, fault.message, job_id=None)
        await self._give_up(delivery, letter)

    async def _attempt(self, delivery: Delivery, job: JobSpec, work: Work) -> None:
        attempt = delivery.attempt
        started = time.perf_counter()
        heartbeat = asyncio.create_task(self._heartbeat(delivery))
        try:
            # 1. Keep the command so this stage can be replayed without the stages before it (even a
            #    cancelled one). On every delivery, not only the first: the first may have found the store
            #    down or died before storing it. Same key, same bytes: idempotent.
            if self._store is not None:
                try:
                    await anyio.to_thread.run_sync(self._keep_command, job, delivery.body)
                except Exception as exc:
                    raise _CommandNotKeptError(str(exc)) from exc
            # 2. Its turn (heartbeating meanwhile; the previous command's publishes and ack overlap the
            #    wait), then a cancelled job goes no further: nothing after the cancel runs.
            async with self._turn:
                started = time.perf_counter()
                if await self._cancels.check(job.job_id, job.generation):
                    await self._publisher.publish(JobCancelled(job=job, stage=self.stage))
                    await delivery.ack()
                    return
                # Which process took it: with replicas each has its own log.
                log.info("%s: job %s attempt %d started", self.stage, job.job_id, attempt)
                await self._publisher.publish(
                    StageStarted(job_id=job.job_id, stage=self.stage, generation=job.generation, attempt=attempt)
                )
                # 3. The work, in a worker thread.
                try:
                    result = await anyio.to_thread.run_sync(work, self._thread_progress(job, attempt))
                except JobCancelledError:
                    await self._publisher.publish(JobCancelled(job=job, stage=self.stage))
                    await delivery.ack()
                    return
        finally:
            heartbeat.cancel()
        seconds = time.perf_counter() - started
        observe_stage(self.stage, seconds)
        await self._publisher.publish(
            StageFinished(job_id=job.job_id, stage=self.stage, generation=job.generation, seconds=round(seconds, 4))
        )
        # 4. Publish before ack: a crash in between redelivers, the stage reuses its stored output and the
        #    republish is dropped by Nats-Msg-Id. The reverse order could lose the job.
        if result is not None:
            await self._publisher.publish(result)
        failpoints.hit(f"{self.stage}.before_ack")
        await delivery.ack()

    def _keep_command(self, job: JobSpec, body: bytes) -> None:
        assert self._store is not None
        self._store.put(command_key(job.job_id, self.stage), body, "application/json")

    async def _fail(self, delivery: Delivery, job: JobSpec, fault: Fault) -> None:
        attempt = delivery.attempt
        count_stage_error(self.stage, fault.code)
        if fault.transient and attempt < self._settings.max_deliver:
            await self._retry(delivery, f"job {job.job_id}", attempt, fault)
            return
        log.error("%s: job %s failed for good (%s: %s)", self.stage, job.job_id, fault.code, fault.message)
        letter = self._dead_letter(delivery, fault.code, fault.message, job.job_id) if fault.transient else None
        failed = JobFailed(job=job, stage=self.stage, code=fault.code, reason=fault.message)
        await self._give_up(delivery, letter, failed)

    async def _retry(self, delivery: Delivery, what: str, attempt: int, fault: Fault) -> None:
        delay = self._backoff(attempt)
        log.warning(
            "%s: %s attempt %d failed (%s: %s); retrying in %.1fs",
            self.stage,
            what,
            attempt,
            fault.code,
            fault.message,
            delay,
        )
        await _quietly(delivery.nack(delay), "nack")

    async def _give_up(self, delivery: Delivery, *verdict: DeadLetter | JobFailed | None) -> None:
        """Publish the verdict, then terminate the delivery. If the bus refuses the verdict, the delivery
        comes back after a backoff to try again: it is never terminated with nobody told."""
        try:
            for message in verdict:
                if message is not None:
                    await self._publisher.publish(message)
        except Exception:
            log.exception("%s: could not publish the verdict on %s; it will come back", self.stage, delivery.subject)
            await _quietly(delivery.nack(self._backoff(delivery.attempt)), "nack")
            return
        await _quietly(delivery.reject(), "reject")

    def _backoff(self, attempt: int) -> float:
        backoff = self._settings.retry_backoff_s
        return backoff[min(attempt - 1, len(backoff) - 1)]

    def _dead_letter(self, delivery: Delivery, code: FailureCode, error: str, job_id: str | None) -> DeadLetter:
        return DeadLetter(
            stage=self.stage,
            subject=delivery.subject,
            body=delivery.body.decode("utf-8", "backslashreplace"),
            code=code,
            error=error,
            attempts=delivery.attempt,
            job_id=job_id,
        )

    async def _heartbeat(self, delivery: Delivery) -> None:
        # in_progress() resets the ack deadline; without it a long denoise would be redelivered mid-run.
        while True:
            await asyncio.sleep(self._settings.heartbeat_s)
            try:
                await delivery.in_progress()
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
            call_in_loop(loop, context, self._publisher.publish(event)).result(timeout=30)

        return progress


async def dead_letter_unreadable(
    publisher: Publisher,
    delivery: Delivery,
    stage: Stage | None,
    exc: ValidationError,
    *,
    fail_job: bool,
) -> None:
    """A message nobody can read (not JSON, another schema version, wrong fields, a bad object key):
    dead-letter it and terminate it at once, since no retry can make it readable. With ``fail_job``
    (a command) and a readable ``job`` part, the job is failed too, so nobody waits on it forever."""
    body = delivery.body
    try:
        document: object = json.loads(body)
        code = FailureCode.SCHEMA_VIOLATION
    except ValueError:
        document, code = None, FailureCode.NOT_JSON
    job = _salvage_job(document) if fail_job else None
    count_stage_error(stage, code)
    reason = f"unreadable message on {delivery.subject}: {_summarize(exc)}"
    log.error("%s: dead-lettering: %s", stage or "no stage", reason)
    letter = DeadLetter(
        stage=stage,
        subject=delivery.subject,
        body=body.decode("utf-8", "backslashreplace")[:_BODY_LIMIT],
        code=code,
        error=reason,
        attempts=delivery.attempt,
        job_id=job.job_id if job else None,
    )
    try:
        await publisher.publish(letter)
        if job is not None and stage is not None:
            await publisher.publish(JobFailed(job=job, stage=stage, code=code, reason=reason))
    except Exception:
        log.exception("could not dead-letter an unreadable message on %s; it will come back", delivery.subject)
        return  # not settled: JetStream redelivers it after its ack deadline, up to the consumer's limit
    await _quietly(delivery.reject(), "reject")


def _salvage_job(document: object) -> JobSpec | None:
    """The job a broken message belongs to, when at least that part is readable, so it can be failed."""
    if not isinstance(document, dict):
        return None
    try:
        return JobSpec.model_validate(document.get("job"))
    except ValidationError:
        return None


def _summarize(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']} ({exc.error_count()} error(s))"


async def _quietly(settling: Coroutine[Any, Any, None], what: str) -> None:
    """Settle a delivery; if the connection is gone, JetStream redelivers it after its ack deadline."""
    try:
        await settling
    except Exception:
        log.exception("%s failed; the message will be redelivered after its ack deadline", what)


def call_in_loop(
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
