"""The web page, the API's documents and the health check."""

from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

from services.gateway.dependencies import GatewayDep

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["docs"])


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/docs", include_in_schema=False)
async def docs() -> FileResponse:
    return FileResponse(STATIC_DIR / "docs.html", headers={"Cache-Control": "no-cache"})


@router.get("/asyncapi.json")
async def asyncapi() -> JSONResponse:
    """The AsyncAPI document of the bus: every service's subscriptions and the contracts they carry."""
    from services.gateway.asyncapi import bus_document

    return JSONResponse(await anyio.to_thread.run_sync(bus_document))


@router.get("/healthz", responses={503: {"description": "not connected to NATS, or the jobs index is behind"}})
async def healthz(gateway: GatewayDep) -> JSONResponse:
    """Liveness, how many SSE followers this process serves, and whether the jobs index is current."""
    connected = gateway.nc is not None and gateway.nc.is_connected
    writer = gateway.writer
    index_error = writer.error if writer is not None else None
    ok = connected and index_error is None
    body = {
        "ok": ok,
        "followers": gateway.hub.followers if gateway.hub else 0,
        "index": {"folded_sequence": writer.folded_sequence if writer is not None else 0, "error": index_error},
    }
    return JSONResponse(body, status_code=200 if ok else 503)
