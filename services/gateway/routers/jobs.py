"""Jobs: submit, list, status, events (SSE), cancel, replay, delete, and the video and poster."""

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from contracts.keys import job_prefix
from contracts.refs import ObjectRef
from contracts.stages import Stage
from infra.objectstore import ObjectMissingError, ObjectStoreError
from services.bus.cancellation import request_cancel
from services.gateway.dependencies import COMMON_ERRORS, CurrentAccount, GatewayDep, OwnJob
from services.gateway.errors import ApiError, ErrorResponse
from services.gateway.event_stream import EventStreamResponse
from services.gateway.events import ClientTooSlowError
from services.gateway.jobs_index import Idempotency
from services.gateway.media import entity_tag, matches, media_headers, media_response
from services.gateway.progress import JobStatus, JobView
from services.gateway.runtime import Gateway
from services.gateway.schemas import BatchResource, JobLinks, JobPage, JobResource, SubmittedBatch
from services.gateway.submission import (
    body_type,
    extension_body,
    extension_fingerprint,
    extension_of,
    fingerprint,
    once,
    openapi_body,
    params_from,
    read_extension,
    read_submission,
    submit,
    submit_extension,
    variations_from,
    webhook_from,
)
from services.jobclient import JobNotFoundError, JobStateError, stored_frames

log = logging.getLogger("i2v.gateway")

IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="the same key (and request) again within 24 hours answers the job it first made,"
        " charged once; the key with a different request is 422",
    ),
]
"""The ``Idempotency-Key`` header of the requests that make jobs."""

router = APIRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    responses={**COMMON_ERRORS, 404: {"model": ErrorResponse, "description": "no such job (or not yours)"}},
)

_STATE_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "the job's state does not allow this"}
}


MAX_WAIT_S = 60
"""Longest ``Prefer: wait`` honoured; a longer one is held to this (and says so in ``Preference-Applied``)."""

_PREFERENCE_APPLIED = {
    "Preference-Applied": {
        "description": "`wait=N`: the `Prefer: wait` this answer honoured (N at most 60)",
        "schema": {"type": "string", "pattern": "^wait=[0-9]+$"},
    }
}


@router.post(
    "",
    status_code=202,
    response_model=JobResource | SubmittedBatch,
    openapi_extra=openapi_body(),
    responses={
        200: {
            "model": JobResource | SubmittedBatch,
            "description": "with `Prefer: wait=N`: the job (every job of a batch) ended within N seconds;"
            " this is the job (the batch) as it ended",
            "headers": _PREFERENCE_APPLIED,
        },
        202: {
            "description": "queued (or, with `Prefer: wait=N`, still running after N seconds); follow `Location`",
            "headers": _PREFERENCE_APPLIED,
        },
        402: {"model": ErrorResponse, "description": "the account's points do not cover the price"},
        409: {"model": ErrorResponse, "description": "a twin request with this Idempotency-Key just failed"},
        413: {"model": ErrorResponse, "description": "the image is over 25 MB"},
        415: {"model": ErrorResponse, "description": "not a JPEG, PNG or WebP image (GIF is refused)"},
        429: {"model": ErrorResponse, "description": "too many unfinished jobs"},
        503: {"model": ErrorResponse, "description": "the job could not be queued; nothing was kept"},
    },
)
async def submit_job(
    request: Request,
    account: CurrentAccount,
    gateway: GatewayDep,
    idempotency_key: IdempotencyKey = None,
    prefer: Annotated[
        str | None,
        Header(
            description="`wait=N` (RFC 7240): hold the answer until the job ends or N seconds pass (at most 60;"
            " more is held to 60), then 200 with the ended job or 202; other or malformed preferences are ignored",
        ),
    ] = None,
) -> JSONResponse:
    """Submit an image and parameters. Multipart with an `image` file, or JSON with `image_base64`.
    Cheap checks come first (balance, unfinished jobs, the header's size), then the image is decoded.
    `Prefer: wait=N` answers 200 with the finished job when it ends within N seconds (a short job in one
    round trip), else 202 as without it; either answer then carries `Preference-Applied: wait=N`.
    `variations` 2-4 makes that many jobs with consecutive seeds and answers `{"batch": {"id", "jobs"}}`
    (`Location`: `/v1/batches/{id}`); the balance and the active-jobs limit must take them all."""
    image, fields = await read_submission(request, gateway.max_upload_bytes)
    as_json = body_type(request) == "application/json"
    variations = variations_from(fields, as_json=as_json)
    webhook = await webhook_from(fields, allow_private=gateway.settings.webhook_allow_private)
    params = params_from(fields, gateway.settings.model, as_json=as_json)
    asked = fingerprint(image, params, webhook, variations)
    idempotency = Idempotency(idempotency_key, asked) if idempotency_key else None
    views, new = await submit(gateway, account, image, params, idempotency, webhook, variations)
    # `prefer` above documents the header; every Prefer field is read here, since a client may send several.
    wait_s = wait_preference(request.headers.getlist("prefer"))
    batch_id = views[0].batch_id
    headers = {"Location": JobLinks.of(views[0].job_id).self if batch_id is None else f"/v1/batches/{batch_id}"}
    if wait_s is not None:
        views = list(await asyncio.gather(*(_until_ended(gateway, view, wait_s) for view in views)))
        headers["Preference-Applied"] = f"wait={wait_s}"
    if not new:
        headers["Idempotent-Replayed"] = "true"
    body: JobResource | SubmittedBatch = (
        JobResource.of(views[0]) if batch_id is None else SubmittedBatch(batch=BatchResource.of(batch_id, views))
    )
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=200 if wait_s is not None and all(view.terminal for view in views) else 202,
        headers=headers,
    )


def wait_preference(values: list[str]) -> int | None:
    """Seconds of the first ``wait`` preference in the ``Prefer`` header fields, held to :data:`MAX_WAIT_S`;
    None when there is none or it is malformed (RFC 7240: a preference the server cannot read is ignored)."""
    for value in values:
        for preference in value.split(","):
            token, _, parameter = preference.partition(";")[0].partition("=")
            if token.strip().lower() != "wait":
                continue
            seconds = parameter.strip().strip('"')
            if not seconds.isascii() or not seconds.isdigit():
                return None
            return min(int(seconds), MAX_WAIT_S)
    return None


async def _until_ended(gateway: Gateway, view: JobView, wait_s: int) -> JobView:
    """The job once its current generation has ended and the index holds that end, or as it stands after
    ``wait_s``. Follows the job on the gateway's live feed (the SSE machinery), never polling the index."""
    if view.terminal:
        return view
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    last = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            while True:
                try:
                    async for item in gateway.events().follow(view.job_id, last, generation=view.generation):
                        last = item.sequence
                    break  # the feed ends with the job's end
                except ClientTooSlowError:
                    continue  # progress came faster than read: pick up after the last event seen
        if gateway.writer is not None:
            # The index folds the end a moment after the feed shows it; read the job from there.
            await gateway.writer.wait_for(last, max(0.0, deadline - loop.time()))
    fresh: JobView | None = await anyio.to_thread.run_sync(gateway.index.get, view.job_id)
    return fresh or view


@router.get("", response_model=JobPage)
async def list_jobs(
    account: CurrentAccount,
    gateway: GatewayDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> JobPage:
    """The caller's jobs, newest first; follow ``next_cursor`` for older ones."""
    views: list[JobView] = await anyio.to_thread.run_sync(gateway.index.list, account, limit + 1, cursor)
    more = len(views) > limit
    views = views[:limit]
    return JobPage(items=[JobResource.of(v) for v in views], next_cursor=views[-1].job_id if more else None)


@router.get("/{job_id}", response_model=JobResource)
async def get_job(view: OwnJob, gateway: GatewayDep) -> JobResource:
    """Status, overall progress 0-100, per-stage timings, price, seed, parameters and error; while the job
    is in flight, its place in line (``queue_position``) and about how long until it ends (``eta_s``)."""
    if view.terminal or gateway.estimator is None:
        return JobResource.of(view)
    return JobResource.of(view, await gateway.estimator.standing(view))


@router.get(
    "/{job_id}/events",
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def job_events(
    view: OwnJob,
    gateway: GatewayDep,
    last_event_id: Annotated[
        int,
        # Event ids are events-stream sequences; NATS refuses a sequence past uint64.
        Header(ge=0, le=2**63 - 1, description="resume after this event id"),
    ] = 0,
) -> Response:
    """The job's events as Server-Sent Events, history first. Each event's ``id`` is its stream
    sequence, ``event`` its type and ``data`` its public fields (results as this API's URLs), with
    the ``generation`` it belongs to. ``Last-Event-ID`` resumes exactly after it. Comment lines keep
    an idle stream open. The stream ends after the terminal event of the job's current generation;
    a replay's ``ReplayRequested`` starts a new one, so an older generation's end does not end it.
    Resuming after the end answers 204, which tells EventSource to stop reconnecting."""
    after = last_event_id
    if view.terminal and after >= view.last_sequence:
        return Response(status_code=204)
    return EventStreamResponse(
        gateway.events(),
        view.job_id,
        after,
        view.generation,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/{job_id}/cancel", status_code=202, response_model=JobResource, responses=_STATE_CONFLICT)
async def cancel_job(view: OwnJob, account: CurrentAccount, gateway: GatewayDep) -> JobResource:
    """Ask the pipeline to stop a queued or running job; it ends ``cancelled`` and the points are refunded."""
    if view.terminal:
        raise ApiError(409, "job_finished", f"the job already ended ({view.status})")
    try:
        await gateway.bus().cancel(view.job_id, reason=f"cancelled by {account} through the API")
    except JobNotFoundError:
        # Still queued before ingest: no event yet, so stop it where stages check before starting.
        await request_cancel(gateway.jetstream(), view.job_id, view.generation)
    view.cancel_requested = True
    return JobResource.of(view)


@router.post("/{job_id}/replay", status_code=202, response_model=JobResource, responses=_STATE_CONFLICT)
async def replay_job(
    view: OwnJob,
    gateway: GatewayDep,
    from_stage: Annotated[Stage | None, Query(alias="from", description="default: the stage that stopped it")] = None,
) -> JobResource:
    """Run a failed or cancelled job again from a stage under a new generation, reusing the stored outputs
    of the stages before it; billing reserves again the points it refunded. The answer is the job as
    replayed: queued, under its new generation."""
    if view.job_id in gateway.replaying:
        raise ApiError(409, "replay_in_progress", f"job {view.job_id} is being replayed already")
    # One replay of a job at a time: concurrent ones would each read the same stored commands while the
    # first one's stages rewrite them.
    gateway.replaying.add(view.job_id)
    try:
        spec = await gateway.bus().replay(view.job_id, from_stage)
    except JobStateError as exc:
        raise ApiError(409, "cannot_replay", str(exc)) from None
    except JobNotFoundError:
        # Ours (checked above) but no stage has reported yet: it is queued, not failed.
        raise ApiError(409, "cannot_replay", f"job {view.job_id} is still queued; nothing to replay") from None
    except ObjectStoreError as exc:
        # A stored command changed or went while it was read: the job is being run again elsewhere.
        raise ApiError(409, "cannot_replay", f"job {view.job_id} is changing; try again ({exc})") from None
    finally:
        gateway.replaying.discard(view.job_id)
    # The index folds the replay's ReplayRequested a moment later into the same view.
    view.replayed(spec.generation, from_stage or view.stopped_at)
    return JobResource.of(view)


@router.post(
    "/{job_id}/extend",
    status_code=202,
    response_model=JobResource,
    openapi_extra=extension_body(),
    responses={
        200: {
            "model": JobResource,
            "description": "with `Prefer: wait=N`: the extension ended within N seconds; this is it as it ended",
            "headers": _PREFERENCE_APPLIED,
        },
        202: {
            "description": "queued (or, with `Prefer: wait=N`, still running after N seconds); follow `Location`",
            "headers": _PREFERENCE_APPLIED,
        },
        402: {"model": ErrorResponse, "description": "the account's points do not cover the new segment's price"},
        409: {
            "model": ErrorResponse,
            "description": "the job has not completed, or its files were deleted, or a twin request with this"
            " Idempotency-Key just failed",
        },
        415: {"model": ErrorResponse, "description": "a body that is not JSON"},
        429: {"model": ErrorResponse, "description": "too many unfinished jobs"},
        503: {"model": ErrorResponse, "description": "the job could not be queued; nothing was kept"},
    },
)
async def extend_job(
    request: Request,
    view: OwnJob,
    account: CurrentAccount,
    gateway: GatewayDep,
    idempotency_key: IdempotencyKey = None,
    prefer: Annotated[
        str | None,
        Header(description="`wait=N`: as on `POST /v1/jobs`, hold the answer until the extension ends (N ≤ 60)"),
    ] = None,
) -> JSONResponse:
    """Continue a completed job's video from its last frame: a new job whose video is this job's frames followed
    by the new ones (the shared frame once), lasting both durations together. The body's fields are the new
    segment's (`duration`, `seed`, `steps`, motion, guidance...), the parent's where not given, with a new random
    seed unless one is given; the model, fps, size, format and quality are the parent's (another value is
    422). The price is the new segment's alone. An extension can be extended in turn. `Idempotency-Key` works
    as on `POST /v1/jobs`: the same key and request (the same job extended, the same fields) within 24 hours
    answer the extension it first made."""
    fields = await read_extension(request)
    idempotency = Idempotency(idempotency_key, extension_fingerprint(view.job_id, fields)) if idempotency_key else None

    async def extend() -> list[JobView]:
        if view.status != JobStatus.SUCCEEDED:
            raise ApiError(
                409, "cannot_extend", f"job {view.job_id} is {view.status}; only a completed job can be extended"
            )
        webhook = await webhook_from(fields, allow_private=gateway.settings.webhook_allow_private)
        frames = None
        if not view.deleted:
            frames = await anyio.to_thread.run_sync(
                stored_frames, gateway.store, view.job_id, view.generation, view.frames
            )
        if frames is None:
            raise ApiError(409, "cannot_extend", f"job {view.job_id}'s files were deleted; it cannot be extended")
        params, extends = extension_of(view, frames, fields)
        return [await submit_extension(gateway, account, params, extends, webhook, idempotency)]

    (extension,), new = await once(gateway, account, idempotency, extend)
    headers = {"Location": JobLinks.of(extension.job_id).self}
    if not new:
        headers["Idempotent-Replayed"] = "true"
    wait_s = wait_preference(request.headers.getlist("prefer"))
    if wait_s is not None:
        extension = await _until_ended(gateway, extension, wait_s)
        headers["Preference-Applied"] = f"wait={wait_s}"
    return JSONResponse(
        JobResource.of(extension).model_dump(mode="json"),
        status_code=200 if wait_s is not None and extension.terminal else 202,
        headers=headers,
    )


@router.delete("/{job_id}", status_code=204, responses=_STATE_CONFLICT)
async def delete_job(view: OwnJob, gateway: GatewayDep) -> Response:
    """Remove the job's files (upload, intermediates, video, poster). The ledger keeps its entries."""
    if not view.terminal:
        raise ApiError(409, "job_active", "the job is still running; cancel it first")

    def remove() -> None:
        gateway.store.delete_prefix(job_prefix(view.job_id))
        gateway.index.mark_deleted(view.job_id)
        for ref in (view.video, view.poster):
            if ref is not None:
                gateway.media.forget(ref)

    await anyio.to_thread.run_sync(remove)
    return Response(status_code=204)


_MEDIA_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_STATE_CONFLICT,
    304: {"description": "`If-None-Match` names the current ETag"},
    410: {"model": ErrorResponse, "description": "the job's files were deleted"},
    416: {"model": ErrorResponse, "description": "the range is outside the file"},
}


@dataclass(frozen=True)
class MediaRequest:
    """What serving the job's video or poster needs: the request, the caller's job, the gateway, a `Range`."""

    request: Request
    view: JobView
    gateway: Gateway
    range_header: str | None


async def _media_request(
    request: Request,
    view: OwnJob,
    gateway: GatewayDep,
    range_header: Annotated[str | None, Header(alias="range")] = None,
) -> MediaRequest:
    return MediaRequest(request, view, gateway, range_header)


MediaRequestDep = Annotated[MediaRequest, Depends(_media_request)]


@router.get("/{job_id}/video", responses=_MEDIA_RESPONSES)
@router.head("/{job_id}/video", responses=_MEDIA_RESPONSES)
async def job_video(media: MediaRequestDep, download: bool = False) -> Response:
    """The MP4 (H.264, faststart). `Range` for seeking, an ETag for `If-None-Match`; `?download=1` saves it."""
    return await _media(media, "video", download)


@router.get("/{job_id}/poster", responses=_MEDIA_RESPONSES)
@router.head("/{job_id}/poster", responses=_MEDIA_RESPONSES)
async def job_poster(media: MediaRequestDep) -> Response:
    """The poster image (the first frame)."""
    return await _media(media, "poster", download=False)


async def _media(media: MediaRequest, which: str, download: bool) -> Response:
    request, view, gateway, range_header = media.request, media.view, media.gateway, media.range_header
    if view.deleted:
        raise ApiError(410, "deleted", "the job's files were deleted")
    ref: ObjectRef | None = view.video if which == "video" else view.poster
    if ref is None:
        raise ApiError(409, "not_ready", f"the job has no {which} yet ({view.status})")
    # Serve only the job's own artifacts: an event naming another bucket or another job's key is not
    # trusted to pick what this account may download.
    if ref.bucket != gateway.settings.s3_bucket or not ref.key.startswith(job_prefix(view.job_id)):
        log.error(
            "job %s names a %s outside its own files (%s/%s); not serving it", view.job_id, which, ref.bucket, ref.key
        )
        raise ApiError(404, "not_found", f"the job has no {which} of its own")
    extension = ref.content_type.rsplit("/", 1)[-1]  # mp4, webm, gif, webp, jpeg
    etag = entity_tag(ref)
    headers = media_headers(etag, f"{view.job_id}.{extension}", download)
    # Preconditions come before Range (RFC 9110 13.2.2): a cached copy is current whatever part is asked.
    if matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        # Range applies to GET only; HEAD describes the whole file without reading it.
        return Response(
            status_code=200, media_type=ref.content_type, headers={**headers, "Content-Length": str(ref.size)}
        )
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        range_header = None  # the client's part is of another version: send the whole file
    try:
        data: bytes = await anyio.to_thread.run_sync(gateway.media.read, ref)
    except ObjectMissingError:
        raise ApiError(410, "deleted", f"the job's {which} is no longer stored") from None
    return media_response(data, ref.content_type, headers, range_header)
