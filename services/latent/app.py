"""Composition root of the latent (GPU) service."""

from typing import TYPE_CHECKING

from faststream import FastStream
from faststream.nats.annotations import NatsMessage

from contracts.messages import PointsReserved
from contracts.stages import Stage
from infra.objectstore import ObjectStore
from services.billing.seal import seal_from
from services.bus.adapters import NatsDelivery
from services.bus.service import service_kit
from services.config import Settings
from services.latent.previews import announce_from_threads
from services.latent.stage import LatentStage
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
    kit = service_kit("latent", settings)
    # First of all at start, before any library makes its thread pools (services/threads.py).
    threads = kit.deferred(lambda: budget_service(settings, "latent"))
    the_store = kit.deferred(lambda: store or object_store_from(settings))
    interval = settings.preview_interval_s if settings.previews else None
    stage = kit.deferred(
        lambda: LatentStage(
            the_store(),
            settings.device,
            kit.cancels.is_cancelled,
            preview_interval_s=interval,
            fast=_fast(settings),
            gpu_memory_gb=settings.gpu_memory_gb,
        )
    )
    runner = kit.deferred(lambda: kit.runner(Stage.LATENT, the_store(), prefetch=True))
    # Billing's seal, checked before any work: no reservation, no work (services/billing/seal.py).
    seal = kit.deferred(lambda: seal_from(settings))

    @kit.work_subscriber(Stage.LATENT, description="SVD image encode and UNet denoising into latents")
    async def on_points_reserved(cmd: PointsReserved, msg: NatsMessage) -> None:
        delivery, announce = NatsDelivery(msg), announce_from_threads(kit.publisher)
        # Its inputs (image, and on CUDA its encoding) get ready while the command before it denoises.
        stage().prefetch(cmd, seal().checked)
        await runner().run(
            delivery, cmd.job, lambda progress: stage().run(seal().checked(cmd), progress, announce, delivery.attempt)
        )

    async def _warm_up() -> None:
        import anyio.to_thread

        await anyio.to_thread.run_sync(stage().warm_up, settings.model)
        settle_threads("latent", threads())

    return kit.app(on_startup=_warm_up)
