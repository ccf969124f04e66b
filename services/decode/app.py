"""Composition root of the decode service."""

from typing import TYPE_CHECKING

from faststream import FastStream
from faststream.nats.annotations import NatsMessage

from contracts.messages import LatentsReady
from contracts.stages import Stage
from infra.objectstore import ObjectStore
from services.billing.seal import seal_from
from services.bus.adapters import NatsDelivery
from services.bus.service import service_kit
from services.config import Settings
from services.decode.stage import DecodeStage
from services.objectstore import object_store_from
from services.threads import budget_service, settle_threads

if TYPE_CHECKING:
    from pipeline.accel import FastOptions


def _fast(settings: Settings) -> "FastOptions":
    # Imported at start, not when the app is built: pipeline.accel imports torch.
    from pipeline.accel import options_from_setting

    return options_from_setting(settings.fast, settings.state_dir)


def build_app(settings: Settings, *, store: ObjectStore | None = None) -> FastStream:
    """The store is opened when the app starts, not here (see :class:`Deferred`)."""
    kit = service_kit("decode", settings)
    # First of all at start, before any library makes its thread pools (services/threads.py).
    threads = kit.deferred(lambda: budget_service(settings, "decode"))
    the_store = kit.deferred(lambda: store or object_store_from(settings))
    stage = kit.deferred(
        lambda: DecodeStage(
            the_store(),
            settings.device,
            settings.decode_chunk_size,
            rife_weights=settings.rife_weights,
            fast=_fast(settings),
        )
    )
    runner = kit.deferred(lambda: kit.runner(Stage.DECODE, the_store(), prefetch=True))
    # Billing's seal, checked before any work: no reservation, no work (services/billing/seal.py).
    seal = kit.deferred(lambda: seal_from(settings))

    @kit.work_subscriber(Stage.DECODE, description="VAE temporal decode in chunks, then interpolation")
    async def on_latents_ready(cmd: LatentsReady, msg: NatsMessage) -> None:
        await runner().run(NatsDelivery(msg), cmd.job, lambda progress: stage().run(seal().checked(cmd), progress))

    async def _warm_up() -> None:
        import anyio.to_thread

        await anyio.to_thread.run_sync(stage().warm_up, settings.model)
        settle_threads("decode", threads())

    return kit.app(on_startup=_warm_up)
