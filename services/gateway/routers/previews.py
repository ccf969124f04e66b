"""A job's live previews: the small animated WebPs the latent stage makes while it denoises."""

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request, Response

from contracts.keys import PREVIEW_CONTENT_TYPE, preview_key
from contracts.refs import ObjectRef
from infra.objectstore import ObjectMissingError
from services.gateway.dependencies import COMMON_ERRORS, GatewayDep, OwnJob
from services.gateway.errors import ApiError, ErrorResponse
from services.gateway.media import entity_tag, matches

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=COMMON_ERRORS)

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {PREVIEW_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "description": "the preview, an animated WebP",
        "headers": {
            "ETag": {
                "schema": {"type": "string"},
                "example": '"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"',
            },
            "Cache-Control": {"schema": {"type": "string"}, "example": "private, no-cache"},
        },
    },
    304: {"description": "`If-None-Match` names the current ETag"},
    404: {"model": ErrorResponse, "description": "no such job (or not yours), or no such preview"},
    410: {"model": ErrorResponse, "description": "the job's files were deleted"},
}


@router.get("/{job_id}/previews/{index}", response_class=Response, responses=_RESPONSES)
async def job_preview(
    request: Request,
    view: OwnJob,
    gateway: GatewayDep,
    index: Annotated[int, Path(ge=0, le=100_000, description="the preview's number, from the SSE event")],
    generation: Annotated[int | None, Query(ge=0, description="the job's generation; default its current one")] = None,
) -> Response:
    """A live preview of the denoising (long side at most 256 px), as announced by a `StagePreview` event.
    A retried stage makes its previews again under the same numbers, so revalidate (`no-cache`)."""
    if view.deleted:
        raise ApiError(410, "deleted", "the job's files were deleted")
    key = preview_key(view.job_id, view.generation if generation is None else generation, index)
    ref: ObjectRef | None = await anyio.to_thread.run_sync(gateway.store.head, key)
    if ref is None:
        raise ApiError(404, "not_found", f"the job has no preview {index}")
    etag = entity_tag(ref)
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    try:
        data: bytes = await anyio.to_thread.run_sync(gateway.store.get, ref)
    except ObjectMissingError:
        raise ApiError(404, "not_found", f"the job has no preview {index}") from None
    return Response(data, media_type=PREVIEW_CONTENT_TYPE, headers=headers)
