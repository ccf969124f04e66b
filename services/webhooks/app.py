"""Composition root of the webhooks service: one durable consumer of the events stream, a POST per event a
job asked for, retried by nacking the event with the backoff's delay until it is delivered or given up.

The consumer is durable and shared by the service's replicas, and an event is acked only once its webhook
was delivered, skipped or given up: a killed process leaves its events unacked, and they come back to the
next one, which reads the delivery log and goes on from the attempt it reached.
"""

import logging
from datetime import UTC, datetime

import anyio.to_thread
from faststream import FastStream
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from contracts.failures import FailureCode
from contracts.messages import DeadLetter, Event, JobSpec, StagePreview, StageStarted, Terminal, parse_event
from contracts.subjects import DLQ_STREAM, EVENTS_STREAM, EVENTS_SUBJECTS
from infra.objectstore import ObjectStore
from services.billing.ledger import open_ledger
from services.bus.connection import subscriber_inbox
from services.bus.service import service_kit
from services.config import Settings
from services.objectstore import object_store_from
from services.stack.nats_auth import WEBHOOKS_DLQ, WEBHOOKS_DURABLE
from services.webhooks.delivery import DeliveryLog, Outgoing, Result, Retry, Sender, outgoing, webhook_event_of
from services.webhooks.specs import StoredSpecs

log = logging.getLogger("i2v.webhooks")

_UNAVAILABLE_RETRY_S = 5.0
"""Wait before an event is tried again when the ledger or the store could not be read."""
_MAX_PENDING = 100_000
"""Events held unacked at once: each webhook waiting for its next attempt holds one."""


def retry_of(settings: Settings) -> Retry:
    return Retry(
        backoff_s=settings.webhook_backoff_s,
        backoff_max_s=settings.webhook_backoff_max_s,
        give_up_after_s=settings.webhook_retry_hours * 3600.0,
        timeout_s=settings.webhook_timeout_s,
    )


def build_app(settings: Settings, *, ledger: DeliveryLog | None = None, store: ObjectStore | None = None) -> FastStream:
    """The ledger (secrets and the delivery log) and the store are opened when the app starts."""
    kit = service_kit("webhooks", settings)
    the_ledger = kit.deferred(lambda: ledger or open_ledger(settings.resolved_ledger_dsn()))
    specs = kit.deferred(lambda: StoredSpecs(store or object_store_from(settings)))
    sender = kit.deferred(
        lambda: Sender(the_ledger(), retry_of(settings), allow_private=settings.webhook_allow_private)
    )

    @kit.broker.subscriber(
        EVENTS_SUBJECTS,
        stream=JStream(EVENTS_STREAM, declare=False),
        durable=WEBHOOKS_DURABLE,
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        config=ConsumerConfig(
            ack_policy=JsAckPolicy.EXPLICIT,
            # From its creation on: a new deployment does not send webhooks for the stream's past jobs.
            deliver_policy=DeliverPolicy.NEW,
            ack_wait=max(settings.ack_wait_s, settings.webhook_timeout_s * 2 + 5),
            max_deliver=-1,  # attempts end by time (I2V_WEBHOOK_RETRY_HOURS), not by count
            max_ack_pending=_MAX_PENDING,
        ),
        ack_policy=AckPolicy.MANUAL,
        title="webhooks:OnEvent",
        description="POST each job's events to its webhook, signed with the account's secret",
        inbox_prefix=subscriber_inbox(settings),
    )
    async def on_event(msg: NatsMessage) -> None:
        raw = msg.raw_message
        try:
            event = parse_event(raw.data)
        except ValidationError:
            await msg.ack()  # not ours to judge: the services that consume it dead-letter it
            return
        if webhook_event_of(event) is None:
            await msg.ack()
            return
        metadata = raw.metadata
        try:
            item = await anyio.to_thread.run_sync(
                _outgoing, specs(), event, metadata.sequence.stream, metadata.timestamp
            )
            result = Result("skip") if item is None else await anyio.to_thread.run_sync(sender().deliver, item)
        except Exception:
            age_s = (datetime.now(UTC) - metadata.timestamp).total_seconds()
            if age_s > settings.webhook_retry_hours * 3600.0:
                # The event could never be read into a webhook for as long as one is retried: let it go.
                log.exception(
                    "event %d on %s: dropped after %.0fs of failures", metadata.sequence.stream, raw.subject, age_s
                )
                await msg.ack()
                return
            log.exception(
                "event %d on %s: the ledger or the store failed; again in %gs",
                metadata.sequence.stream,
                raw.subject,
                _UNAVAILABLE_RETRY_S,
            )
            await msg.nack(delay=_UNAVAILABLE_RETRY_S)
            return
        if result.verdict == "retry":
            await msg.nack(delay=result.delay)
            return
        if result.verdict == "gave_up" and item is not None:
            await _dead_letter(item, raw.subject, result)
        await msg.ack()

    async def _dead_letter(item: Outgoing, subject: str, result: Result) -> None:
        letter = DeadLetter(
            stage=None,
            subject=subject,
            body=item.payload.decode(),
            code=FailureCode.WEBHOOK_UNDELIVERED,
            error=f"webhook {item.webhook_id} to {item.url}: {result.error}",
            attempts=result.attempt,
            job_id=item.job_id,
        )
        await kit.broker.publish(
            letter,
            WEBHOOKS_DLQ,
            headers={"Nats-Msg-Id": f"{item.webhook_id}:dead"},
            stream=DLQ_STREAM,
            timeout=10.0,
        )
        log.error("gave up on webhook %s of job %s after %d attempts", item.webhook_id, item.job_id, result.attempt)

    return kit.app()


def _outgoing(specs: StoredSpecs, event: Event, sequence: int, published_at: datetime) -> Outgoing | None:
    spec: JobSpec | None = None
    if isinstance(event, StageStarted | StagePreview):
        spec = specs.spec(event.job_id, event.stage, event.generation)
    elif isinstance(event, Terminal):
        spec = event.job
    if spec is None:
        return None
    return outgoing(event, spec, sequence, published_at.astimezone(UTC))
