"""Building blocks of a service's composition root: broker, runner, work subscriber, app lifecycle."""

import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import anyio.to_thread
import nats
from faststream import FastStream
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy, BaseMiddleware
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsMessage
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.schemas.js_stream import is_subject_match_wildcard
from faststream.specification import AsyncAPI
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy
from opentelemetry.sdk.trace import TracerProvider
from pydantic import ValidationError

from contracts.stages import Stage
from contracts.subjects import EVENTS_STREAM, WORK_STREAM, durable_name, work_subject
from infra.objectstore import ObjectStore
from services.bus.adapters import BrokerPublisher, NatsDelivery
from services.bus.cancellation import CancelRegistry
from services.bus.connection import broker_options, nats_options, nats_servers, subscriber_inbox
from services.bus.ports import Publisher
from services.bus.runner import StageRunner, dead_letter_unreadable
from services.bus.streams import ensure_streams_patiently
from services.config import Settings
from services.health import HealthServer
from services.metrics import set_queue_pending
from services.telemetry import tracer_provider

log = logging.getLogger("i2v.service")

T = TypeVar("T")


class Deferred(Generic[T]):
    """An adapter a service builds when it starts (or on first use), never when its app is built: building
    an app, e.g. for its AsyncAPI document, opens no ledger and no connection."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._value: list[T] = []

    def __call__(self) -> T:
        with self._lock:
            if not self._value:
                self._value.append(self._build())
            return self._value[0]


@dataclass
class ServiceKit:
    """What a service's handlers need, built once per process from settings."""

    name: str
    settings: Settings
    broker: NatsBroker
    publisher: Publisher
    tracing: TracerProvider
    cancels: CancelRegistry
    _deferred: list[Deferred[Any]] = field(default_factory=list)
    _event_stages: list[tuple[str, Stage]] = field(default_factory=list)
    _consumers: list[tuple[Stage, str, str]] = field(default_factory=list)
    """(stage, stream, durable) of each durable consumer: what /readyz and the queue gauge read."""
    _runners: list[StageRunner] = field(default_factory=list)

    def deferred(self, build: Callable[[], T]) -> Deferred[T]:
        """``build`` runs once when the app starts (in a worker thread: it may block), before any message."""
        item = Deferred(build)
        self._deferred.append(item)
        return item

    def runner(self, stage: Stage, store: ObjectStore | None, *, prefetch: bool = False) -> StageRunner:
        """``store`` keeps each command so the stage can be replayed; None only in tests without one.

        With ``prefetch`` the runner holds a second delivery while one is worked on: it keeps its command and
        waits its turn, heartbeating, so the stage never idles on a fetch and the first one's publishes and
        ack overlap the second one's work (:meth:`StageRunner.run`; one command's work at a time).
        """
        runner = StageRunner(stage, self.publisher, self.settings, self.cancels, store, prefetch=prefetch)
        self._runners.append(runner)
        return runner

    def work_subscriber(self, stage: Stage, *, description: str) -> Callable[[Any], Any]:
        """A durable pull consumer of the stage's work subject shared by all replicas; acks are ours. It
        fetches one command at a time, the next once its handler returns (a prefetching runner returns while
        the command works: see :meth:`runner`)."""
        self._consumers.append((stage, WORK_STREAM, durable_name(stage)))
        return self._durable_pull(
            work_subject(stage),
            WORK_STREAM,
            durable_name(stage),
            ConsumerConfig(
                ack_policy=JsAckPolicy.EXPLICIT,
                ack_wait=self.settings.ack_wait_s,
                # The runner gives up after max_deliver; the server limit is only a backstop for a
                # message that crashes its process every time.
                max_deliver=self.settings.max_deliver * 2,
            ),
            description,
        )

    def event_subscriber(self, subject: str, *, stage: Stage, durable: str, description: str) -> Callable[[Any], Any]:
        """A durable pull consumer of events on the events stream, shared by all replicas; acks are ours
        (:meth:`StageRunner.handle_event`). Unreadable events are dead-lettered under ``stage``."""
        self._event_stages.append((subject, stage))
        self._consumers.append((stage, EVENTS_STREAM, durable))
        return self._durable_pull(
            subject,
            EVENTS_STREAM,
            durable,
            ConsumerConfig(
                ack_policy=JsAckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.settings.ack_wait_s,
                # A backstop, as for work: the runner dead-letters after event_max_deliver deliveries.
                max_deliver=self.settings.event_max_deliver * 2,
            ),
            description,
        )

    def _durable_pull(
        self, subject: str, stream: str, durable: str, config: ConsumerConfig, description: str
    ) -> Callable[[Any], Any]:
        """A durable pull consumer of ``subject`` on ``stream`` (declared elsewhere), one message per
        fetch, the next fetched once the handler returns, acked by us. Never FastStream's ``max_workers``:
        its fetch loop takes one more message than it has workers and holds it, unseen by any handler and
        so without heartbeats, until a worker is free."""
        return self.broker.subscriber(
            subject,
            stream=JStream(stream, declare=False),
            durable=durable,
            pull_sub=PullSub(batch_size=1, timeout=5.0),
            config=config,
            ack_policy=AckPolicy.MANUAL,
            description=description,
            inbox_prefix=subscriber_inbox(self.settings),
        )

    def stage_of(self, subject: str) -> tuple[Stage | None, bool]:
        """Which stage consumes ``subject`` here, and whether it is a command (a work subject)."""
        for stage in Stage:
            if subject == work_subject(stage):
                return stage, True
        for pattern, stage in self._event_stages:
            if is_subject_match_wildcard(subject, pattern):
                return stage, False
        return None, False

    def app(self, *, on_startup: Callable[[], Awaitable[None]] | None = None) -> FastStream:
        app = FastStream(
            self.broker,
            specification=AsyncAPI(title=f"i2v {self.name}", version="1", description=f"The {self.name} service"),
        )
        settings = self.settings

        connections: list[NatsClient] = []
        health: list[HealthServer] = []
        consuming: list[bool] = []

        async def not_ready() -> str | None:
            if not connections or not connections[0].is_connected:
                return "not connected to NATS"
            if not consuming:
                return "starting"
            js = connections[0].jetstream()
            for _stage, stream, durable in self._consumers:
                try:
                    await js.consumer_info(stream, durable, timeout=2)
                except Exception as exc:
                    return f"consumer {durable} on {stream}: {type(exc).__name__}"
            return None

        async def read_queues() -> None:
            js = connections[0].jetstream() if connections and connections[0].is_connected else None
            for stage, stream, durable in self._consumers:
                pending = None
                if js is not None:
                    try:
                        info = await js.consumer_info(stream, durable, timeout=2)
                        pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
                    except Exception:
                        log.debug("could not read consumer %s on %s", durable, stream, exc_info=True)
                set_queue_pending(stage, durable, pending)

        @app.on_startup
        async def _streams() -> None:
            if settings.metrics_port is not None:
                # First, so /healthz answers (and /readyz says why not) while a model loads.
                server = HealthServer(settings.metrics_host, settings.metrics_port, not_ready, read_queues)
                await server.start()
                health.append(server)
                log.info("%s metrics on http://%s:%d/metrics", self.name, settings.metrics_host, server.port)
            nc = await nats.connect(
                nats_servers(settings.nats_url), connect_timeout=5, max_reconnect_attempts=-1, **nats_options(settings)
            )
            connections.append(nc)
            await ensure_streams_patiently(nc.jetstream(), settings.stream_replicas)
            await self.cancels.start(nc.jetstream())
            for item in self._deferred:
                await anyio.to_thread.run_sync(item)
            if on_startup is not None:
                await on_startup()

        @app.on_shutdown
        async def _close() -> None:
            for runner in self._runners:
                await runner.abandon()
            await self.cancels.stop()
            for nc in connections:
                await nc.close()
            for server in health:
                await server.stop()

        @app.after_startup
        async def _ready() -> None:
            consuming.append(True)
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
        nats_servers(settings.nats_url),
        middlewares=[
            NatsTelemetryMiddleware(tracer_provider=tracing),
            partial(PoisonMiddleware, kit=holder),
        ],
        connect_timeout=5,
        max_reconnect_attempts=-1,
        **broker_options(settings),
    )
    kit = ServiceKit(name, settings, broker, BrokerPublisher(broker), tracing, CancelRegistry())
    holder.append(kit)
    return kit


class PoisonMiddleware(BaseMiddleware):
    """A message no handler can read (not JSON, another schema version, wrong fields) is dead-lettered
    and terminated on every consumer, never redelivered in a loop; a command's job is failed too."""

    def __init__(self, msg: Any, /, *, context: Any, kit: list[ServiceKit]) -> None:
        super().__init__(msg, context=context)
        self._kit = kit[0]

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        try:
            return await call_next(msg)
        except ValidationError as exc:
            if not isinstance(msg, NatsMessage):
                raise
            delivery = NatsDelivery(msg)
            stage, is_command = self._kit.stage_of(delivery.subject)
            await dead_letter_unreadable(self._kit.publisher, delivery, stage, exc, fail_job=is_command)
            return None
