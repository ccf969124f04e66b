"""Composition root of the billing service."""

import asyncio

import anyio.from_thread
from faststream import FastStream
from faststream.nats.annotations import NatsMessage

from contracts.messages import ImagePrepared, TerminalEvent
from contracts.stages import Stage
from contracts.subjects import TERMINAL_EVENTS_FILTER
from infra.objectstore import ObjectStore
from services.billing.ledger import Ledger, open_ledger
from services.billing.retention import sweep_forever
from services.billing.seal import seal_from
from services.billing.stage import BillingStage
from services.bus.adapters import NatsDelivery
from services.bus.service import service_kit
from services.config import Settings
from services.metrics import count_job_end
from services.objectstore import object_store_from


def build_app(settings: Settings, *, ledger: Ledger | None = None, store: ObjectStore | None = None) -> FastStream:
    """The ledger, the store and the seal's secret are opened when the app starts, not here (see
    :class:`Deferred`)."""
    kit = service_kit("billing", settings)
    the_ledger = kit.deferred(lambda: ledger or open_ledger(settings.resolved_ledger_dsn()))
    the_store = kit.deferred(lambda: store or object_store_from(settings))
    the_seal = kit.deferred(lambda: seal_from(settings))
    stage = kit.deferred(lambda: BillingStage(the_ledger(), the_store(), the_seal()))
    runner = kit.deferred(lambda: kit.runner(Stage.BILLING, the_store()))

    @kit.work_subscriber(Stage.BILLING, description="Reserve the job's price before any GPU work")
    async def on_image_prepared(cmd: ImagePrepared, msg: NatsMessage) -> None:
        await runner().run(NatsDelivery(msg), cmd.job, lambda _progress: stage().reserve(cmd))

    @kit.event_subscriber(
        TERMINAL_EVENTS_FILTER,
        stage=Stage.BILLING,
        durable="i2v-billing-settle",
        description="Capture on JobCompleted, refund on JobFailed or JobCancelled",
    )
    async def on_terminal(event: TerminalEvent, msg: NatsMessage) -> None:
        def settle() -> None:
            voided = stage().settle(event)
            if voided is not None:
                # Published before the ack: a crash in between settles again, and the id dedups it.
                anyio.from_thread.run(kit.publisher.publish, voided)
            # Here, once settled: billing's consumer sees each terminal event once, whoever published it.
            count_job_end(event, voided=voided is not None)

        await runner().handle_event(NatsDelivery(msg), settle)

    sweeping: list[asyncio.Task[None]] = []

    async def _start() -> None:
        if settings.default_account:
            the_ledger().ensure_account(settings.default_account, settings.default_account_points)
        if settings.retention_days > 0:
            every = settings.retention_sweep_s
            sweeping.append(asyncio.create_task(sweep_forever(the_store(), settings.retention_days, every)))

    app = kit.app(on_startup=_start)

    @app.on_shutdown
    async def _stop_sweeping() -> None:
        for task in sweeping:
            task.cancel()

    return app
