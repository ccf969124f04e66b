"""The web page, the API's documents (Swagger UI at /docs) and the health check."""

import importlib.util
from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

from services.gateway.dependencies import GatewayDep
from services.gateway.errors import not_found

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def _swagger_ui_dir() -> Path:
    # Found, not imported: the package's Python side (templates for other frameworks) is not used.
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or spec.origin is None:
        raise RuntimeError("the swagger-ui-py package is missing: pip install the gateway's dependencies")
    return Path(spec.origin).parent / "static"


SWAGGER_UI_DIR = _swagger_ui_dir()
SWAGGER_UI_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})
"""The files of Swagger UI that /docs loads; the package's others (the editor, source maps) are not served."""

router = APIRouter(tags=["docs"])


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/docs", include_in_schema=False)
async def docs() -> FileResponse:
    """Swagger UI on /openapi.json."""
    return FileResponse(STATIC_DIR / "docs.html", headers={"Cache-Control": "no-cache"})


@router.get("/docs/{name}", include_in_schema=False)
async def swagger_ui_file(name: str) -> FileResponse:
    """One of :data:`SWAGGER_UI_FILES`, as the pinned package ships it."""
    if name not in SWAGGER_UI_FILES:
        raise not_found("file")
    return FileResponse(SWAGGER_UI_DIR / name, headers={"Cache-Control": "public, max-age=3600"})


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
