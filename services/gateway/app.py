"""Composition root of the gateway: settings in, adapters built, the FastAPI app out.

Nothing connects when the app is built; the lifespan connects to NATS, catches the jobs index up
from the events stream and starts the fan-out of live events.
"""

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from PIL import _imaging as pillow_core

from infra.objectstore import ObjectStore
from services.billing.ledger import Ledger, open_ledger
from services.config import Settings
from services.gateway import errors, openapi
from services.gateway.auth import TokenSigner, load_or_create_secret
from services.gateway.headers import SecurityHeaders
from services.gateway.jobs_index import JobsIndex
from services.gateway.media import MediaCache
from services.gateway.model_sizes import ModelSize, ModelSizes, model_size_from_config
from services.gateway.routers import account, jobs, models, pages, previews, session, suggest
from services.gateway.routers.batches import router as batches_router
from services.gateway.routers.deliveries import router as deliveries_router
from services.gateway.routers.pages import STATIC_DIR
from services.gateway.runtime import Gateway, connect, disconnect
from services.objectstore import object_store_from

DECODE_BLOCK_BYTES = 64 * 2**20


def build_app(
    settings: Settings,
    *,
    ledger: Ledger | None = None,
    store: ObjectStore | None = None,
    index: JobsIndex | None = None,
    model_size: ModelSize = model_size_from_config,
    heartbeat_s: float = 15.0,
) -> FastAPI:
    """The gateway app; ``ledger``, ``store`` and ``index`` default to the ones settings name, and
    ``model_size`` reads a model's size from its config files."""
    settings.require_connections()
    # Decoded uploads in Pillow blocks past glibc's largest dynamic mmap threshold (32 MiB) are always
    # mmapped: their memory goes back to the system when freed instead of staying in a worker thread's heap.
    pillow_core.set_block_size(DECODE_BLOCK_BYTES)
    the_store = store or object_store_from(settings)
    gateway = Gateway(
        settings=settings,
        ledger=ledger or open_ledger(settings.resolved_ledger_dsn()),
        store=the_store,
        index=index or JobsIndex(settings.resolved_index_dsn()),
        signer=TokenSigner(load_or_create_secret(settings.gateway_secret, settings.state_dir)),
        media=MediaCache(the_store),
        model_size=ModelSizes(model_size),
        heartbeat_s=heartbeat_s,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await connect(gateway)
        try:
            yield
        finally:
            await disconnect(gateway)

    app = FastAPI(
        title="i2v gateway",
        version="1",
        description=(
            "Image to video with Stable Video Diffusion. Authenticate with `Authorization: Bearer <API key>`"
            " (`i2v accounts create NAME --points N` prints one). Browsers use the session cookie from"
            " `POST /v1/session` (a change made with it must come from this site's page); a link may carry a"
            " 10-minute `?token=` from `POST /v1/tokens` that opens one job or resource, GET only."
            " The AsyncAPI document of the bus is at [/asyncapi.json](/asyncapi.json)."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gateway
    errors.install(app)
    app.include_router(deliveries_router)
    app.include_router(batches_router)
    routers = (session.router, account.router, models.router, jobs.router, previews.router, suggest.router)
    for router in (*routers, pages.router):
        app.include_router(router)
    openapi.install(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(SecurityHeaders)
    return app
