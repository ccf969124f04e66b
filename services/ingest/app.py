"""Composition root of the ingest service."""

from faststream import FastStream
from faststream.nats.annotations import NatsMessage

from contracts.messages import JobSubmitted
from contracts.stages import Stage
from infra.objectstore import ObjectStore
from services.bus.adapters import NatsDelivery
from services.bus.service import service_kit
from services.config import Settings
from services.ingest.stage import IngestStage, ModelSize, model_size_from_checkpoint
from services.objectstore import object_store_from
from services.threads import budget_service, settle_threads

MAX_UPLOAD_BYTES = 25 * 2**20
MAX_PIXELS = 40_000_000


def build_app(
    settings: Settings, *, store: ObjectStore | None = None, model_size: ModelSize | None = None
) -> FastStream:
    """The store is opened when the app starts, not here (see :class:`Deferred`)."""
    kit = service_kit("ingest", settings)
    # First of all at start, before any library makes its thread pools (services/threads.py).
    threads = kit.deferred(lambda: budget_service(settings, "ingest"))
    the_store = kit.deferred(lambda: store or object_store_from(settings))
    stage = kit.deferred(
        lambda: IngestStage(
            the_store(),
            model_size or model_size_from_checkpoint,
            max_bytes=MAX_UPLOAD_BYTES,
            max_pixels=MAX_PIXELS,
        )
    )
    runner = kit.deferred(lambda: kit.runner(Stage.INGEST, the_store()))

    @kit.work_subscriber(Stage.INGEST, description="Validate the upload and fit it to the model resolution")
    async def on_job_submitted(cmd: JobSubmitted, msg: NatsMessage) -> None:
        await runner().run(NatsDelivery(msg), cmd.job, lambda _progress: stage().run(cmd))

    async def _warm_up() -> None:
        import anyio.to_thread

        # Reading the model's resolution imports diffusers; do it before the first job, not during it.
        await anyio.to_thread.run_sync(stage().model_size, settings.model)
        settle_threads("ingest", threads())

    return kit.app(on_startup=_warm_up)
