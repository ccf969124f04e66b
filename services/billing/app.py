"""Composition root of the billing service."""

from faststream import FastStream
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts.messages import ImagePrepared, TerminalEvent
from contracts.stages import Stage
from contracts.subjects import EVENTS_STREAM, TERMINAL_EVENTS_FILTER
from infra.objectstore import ObjectStore
from services.billing.ledger import Ledger, open_ledger
from services.billing.stage import BillingStage
from services.bus.service import service_kit
from services.config import Settings
from services.objectstore import object_store_from


def build_app(settings: Settings, *, ledger: Ledger | None = None, store: ObjectStore | None = None) -> FastStream:
    kit = service_kit("billing", settings)
    the_ledger = ledger or open_ledger(settings.resolved_ledger_dsn())
    the_store = store or object_store_from(settings)
    stage = BillingStage(the_ledger, the_store)
    runner = kit.runner(Stage.BILLING, the_store)

    @kit.work_subscriber(Stage.BILLING, description="Reserve the job's price before any GPU work")
    async def on_image_prepared(cmd: ImagePrepared, msg: NatsMessage) -> None:
        await runner.run(msg, cmd.job, lambda _progress: stage.reserve(cmd))

    @kit.broker.subscriber(
        TERMINAL_EVENTS_FILTER,
        stream=JStream(EVENTS_STREAM, declare=False),
        durable="i2v-billing-settle",
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        config=ConsumerConfig(
            ack_policy=JsAckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=30, max_deliver=-1
        ),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        description="Capture on JobCompleted, refund on JobFailed or JobCancelled",
    )
    async def on_terminal(event: TerminalEvent) -> None:
        import anyio.to_thread

        await anyio.to_thread.run_sync(stage.settle, event)

    async def _accounts() -> None:
        if settings.default_account:
            the_ledger.ensure_account(settings.default_account, settings.default_account_points)

    return kit.app(on_startup=_accounts)
