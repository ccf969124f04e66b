"""Building blocks of a service's composition root: broker, runner, work subscriber, app lifecycle."""

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import nats
from faststream import FastStream
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy, BaseMiddleware
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.specification import AsyncAPI
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig
from opentelemetry.sdk.trace import TracerProvider
from pydantic import ValidationError

from contracts.failures import FailureCode
from contracts.messages import DeadLetter, JobFailed, JobSpec
from contracts.stages import Stage
from contracts.subjects import WORK_STREAM, durable_name, work_subject
from infra.objectstore import ObjectStore
from services.bus.cancellation import CancelRegistry
from services.bus.runner import BrokerPublisher, Publisher, StageRunner, delivery_count
from services.bus.streams import ensure_streams
from services.config import Settings
from services.telemetry import tracer_provider

log = logging.getLogger("i2v.service")


@dataclass
class ServiceKit:
    """What a service's handlers need, built once per process from settings."""

    name: str
    settings: Settings
    broker: NatsBroker
    publisher: Publisher
    tracing: TracerProvider
    cancels: CancelRegistry

    def runner(self, stage: Stage, store: ObjectStore | None) -> StageRunner:
        """``store`` keeps each command so the stage can be replayed; None only in tests without one."""
        return StageRunner(stage, self.publisher, self.settings, self.cancels, store)

    def work_subscriber(self, stage: Stage, *, description: str) -> Callable[[Any], Any]:
        """A durable pull consumer of the stage's work subject shared by all replicas; acks are ours."""
        return self.broker.subscriber(
            work_subject(stage),
            stream=JStream(WORK_STREAM, declare=False),
            durable=durable_name(stage),
            pull_sub=PullSub(batch_size=1, timeout=5.0),
            config=ConsumerConfig(
                ack_policy=JsAckPolicy.EXPLICIT,
                ack_wait=self.settings.ack_wait_s,
                # The runner gives up after max_deliver; the server limit is only a backstop for a
                # message that crashes its process every time.
                max_deliver=self.settings.max_deliver * 2,
            ),
            ack_policy=AckPolicy.MANUAL,
            description=description,
        )

    def app(self, *, on_startup: Callable[[], Awaitable[None]] | None = None) -> FastStream:
        app = FastStream(
            self.broker,
            specification=AsyncAPI(title=f"i2v {self.name}", version="1", description=f"The {self.name} service"),
        )
        settings = self.settings

        connections: list[NatsClient] = []

        @app.on_startup
        async def _streams() -> None:
            nc = await nats.connect(settings.nats_url, connect_timeout=5, max_reconnect_attempts=-1)
            connections.append(nc)
            await ensure_streams(nc.jetstream())
            await self.cancels.start(nc.jetstream())
            if on_startup is not None:
                await on_startup()

        @app.on_shutdown
        async def _close() -> None:
            await self.cancels.stop()
            for nc in connections:
                await nc.close()

        @app.after_startup
        async def _ready() -> None:
            log.info("%s consuming from %s", self.name, settings.nats_url)
            if settings.ready_file is not None:
                settings.ready_file.parent.mkdir(parents=True, exist_ok=True)
                settings.ready_file.write_text("ready\n")

        @app.after_shutdown
        async def _flush() -> None:
            self.tracing.shutdown()

        return app


def service_kit(name: str, settings: Settings) -> ServiceKit:
    settings.require_connections()
    tracing = tracer_provider(name, settings.trace_file)
    holder: list[ServiceKit] = []
    broker = NatsBroker(
        settings.nats_url,
        middlewares=[
            NatsTelemetryMiddleware(tracer_provider=tracing),
            partial(PoisonMiddleware, kit=holder),
        ],
        connect_timeout=5,
        max_reconnect_attempts=-1,
    )
    kit = ServiceKit(name, settings, broker, BrokerPublisher(broker), tracing, CancelRegistry())
    holder.append(kit)
    return kit


class PoisonMiddleware(BaseMiddleware):
    """A message no handler can read (not JSON, wrong schema) goes to the dead-letter stream, not a loop."""

    def __init__(self, msg: Any, /, *, context: Any, kit: list[ServiceKit]) -> None:
        super().__init__(msg, context=context)
        self._kit = kit[0]

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        try:
            return await call_next(msg)
        except ValidationError as exc:
            stage = _work_stage(msg)
            if stage is None:
                raise
            await self._dead_letter(stage, msg, exc)
            return None

    async def _dead_letter(self, stage: Stage, msg: StreamMessage[Any], exc: ValidationError) -> None:
        body = msg.body if isinstance(msg.body, bytes) else str(msg.body).encode()
        try:
            document: object = json.loads(body)
            code = FailureCode.SCHEMA_VIOLATION
        except ValueError:
            document, code = None, FailureCode.NOT_JSON
        job = _salvage_job(document)
        reason = f"unreadable {stage} command: {_summarize(exc)}"
        log.error("%s: dead-lettering a message: %s", stage, reason)
        publisher = self._kit.publisher
        await publisher.publish(
            DeadLetter(
                stage=stage,
                subject=work_subject(stage),
                body=body.decode("utf-8", "backslashreplace")[:65536],
                code=code,
                error=reason,
                attempts=delivery_count(msg),  # type: ignore[arg-type]
                job_id=job.job_id if job else None,
            )
        )
        if job is not None:
            await publisher.publish(JobFailed(job=job, stage=stage, code=code, reason=reason))
        await msg.reject()


def _work_stage(msg: StreamMessage[Any]) -> Stage | None:
    """The stage whose work subject this message came from, or None for anything else."""
    subject = getattr(msg.raw_message, "subject", "")
    prefix = "i2v.work."
    if not subject.startswith(prefix):
        return None
    try:
        return Stage(subject[len(prefix) :])
    except ValueError:
        return None


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
