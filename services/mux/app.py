"""Composition root of the mux service."""

from faststream import FastStream
from faststream.nats.annotations import NatsMessage

from contracts.messages import FramesReady
from contracts.stages import Stage
from infra.objectstore import ObjectStore
from services.billing.seal import seal_from
from services.bus.adapters import NatsDelivery
from services.bus.service import service_kit
from services.config import Settings
from services.mux.stage import MuxStage
from services.objectstore import object_store_from
from services.threads import budget_service, settle_threads


def build_app(settings: Settings, *, store: ObjectStore | None = None) -> FastStream:
    """The store is opened when the app starts, not here (see :class:`Deferred`)."""
    kit = service_kit("mux", settings)
    # First of all at start, before any library makes its thread pools (services/threads.py).
    threads = kit.deferred(lambda: budget_service(settings, "mux"))
    the_store = kit.deferred(lambda: store or object_store_from(settings))
    stage = kit.deferred(lambda: MuxStage(the_store()))
    runner = kit.deferred(lambda: kit.runner(Stage.MUX, the_store(), prefetch=True))
    # Billing's seal, checked before any work: no reservation, no work (services/billing/seal.py).
    seal = kit.deferred(lambda: seal_from(settings))

    @kit.work_subscriber(Stage.MUX, description="Encode the video (job's format and quality) and a poster")
    async def on_frames_ready(cmd: FramesReady, msg: NatsMessage) -> None:
        await runner().run(NatsDelivery(msg), cmd.job, lambda progress: stage().run(seal().checked(cmd), progress))

    async def _warm_up() -> None:
        import pipeline.tensors
        import pipeline.video  # noqa: F401

        settle_threads("mux", threads())

    return kit.app(on_startup=_warm_up)
