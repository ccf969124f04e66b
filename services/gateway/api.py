"""The HTTP routes: thin handlers over the jobs index, the ledger, the bus and the object store."""

import base64
import binascii
import json
import time
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.types import Message

from contracts.keys import job_prefix, upload_key
from contracts.params import GenerationParams, Resolution
from contracts.pricing import price_points
from contracts.refs import ObjectRef
from contracts.stages import Stage
from infra.objectstore import ObjectMissingError
from pipeline.image import content_type_of
from services.billing.ledger import UnknownAccountError
from services.gateway.auth import TOKEN_PREFIX, hash_api_key
from services.gateway.errors import ApiError, ErrorResponse, not_found, status_of, validation_error
from services.gateway.events import ClientTooSlowError, frames_with_heartbeats
from services.gateway.progress import JobView
from services.gateway.runtime import Gateway
from services.gateway.schemas import Account, JobPage, JobResource, LedgerEntry, Quote, Session
from services.jobclient import JobNotFoundError, JobStateError, new_job_id

router = APIRouter()

SESSION_COOKIE = "i2v_session"
SESSION_TTL_S = 8 * 3600
LINK_TOKEN_TTL_S = 600
_KEY_CACHE_S = 30.0
_PARAM_FIELDS = tuple(GenerationParams.model_fields)
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "malformed request",
        401: "no valid API key, session or token",
        404: "no such job (or not yours)",
        422: "a parameter is out of range; `field` names it",
    }.items()
}


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


# --- auth ---------------------------------------------------------------------------------------


async def current_account(request: Request) -> str:
    """The caller's account: from ``Authorization: Bearer`` (API key or token), the session cookie,
    or, on GET only, ``?token=``."""
    gateway = gateway_of(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise _unauthorized("the Authorization header must be `Bearer <API key>`")
        if credential.startswith(TOKEN_PREFIX):
            return _token_account(gateway, credential)
        account = await _key_account(gateway, credential)
        if account is None:
            raise _unauthorized("this API key is not valid")
        return account
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return _token_account(gateway, cookie, what="session")
    token = request.query_params.get("token")
    if token and request.method in {"GET", "HEAD"}:
        return _token_account(gateway, token)
    raise _unauthorized("send `Authorization: Bearer <API key>`; `i2v accounts create NAME` prints a key")


CurrentAccount = Annotated[str, Depends(current_account)]


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="i2v"'})


def _token_account(gateway: Gateway, text: str, what: str = "token") -> str:
    token = gateway.signer.decode(text)
    if token is None:
        raise _unauthorized(f"the {what} is not valid or has expired; log in again with your API key")
    return str(token.account)


async def _key_account(gateway: Gateway, key: str) -> str | None:
    digest = hash_api_key(key)
    cached = gateway.key_cache.get(digest)
    if cached is not None and cached[1] > time.monotonic():
        return str(cached[0])
    account = await anyio.to_thread.run_sync(gateway.ledger.account_for_key_hash, digest)
    if account is not None:
        gateway.key_cache[digest] = (account, time.monotonic() + _KEY_CACHE_S)
    return account if account is None else str(account)


@router.post("/v1/session", response_model=Session, tags=["auth"], responses=_ERRORS)
async def create_session(request: Request, response: Response) -> Session:
    """Trade an API key (Bearer) for a session cookie, so the page's `<video>` and EventSource work."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip() or key.strip().startswith(TOKEN_PREFIX):
        raise _unauthorized("log in with `Authorization: Bearer <API key>`")
    gateway = gateway_of(request)
    account = await _key_account(gateway, key.strip())
    if account is None:
        raise _unauthorized("this API key is not valid")
    token = gateway.signer.issue(account, SESSION_TTL_S)
    response.set_cookie(
        SESSION_COOKIE,
        gateway.signer.encode(token),
        max_age=SESSION_TTL_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return Session(account=account, expires_at=token.expires_at)


@router.delete("/v1/session", status_code=204, tags=["auth"])
async def end_session() -> Response:
    """Log out: forget the session cookie."""
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.post("/v1/tokens", response_model=Session, tags=["auth"], responses=_ERRORS)
async def create_token(request: Request, account: CurrentAccount) -> Session:
    """A token valid for 10 minutes, for `?token=` on GET links where a header cannot be sent."""
    gateway = gateway_of(request)
    token = gateway.signer.issue(account, LINK_TOKEN_TTL_S)
    return Session(account=account, expires_at=token.expires_at, token=gateway.signer.encode(token))


# --- account and price --------------------------------------------------------------------------


@router.get("/v1/account", response_model=Account, tags=["account"], responses=_ERRORS)
async def get_account(request: Request, account: CurrentAccount) -> Account:
    """Balance, unfinished jobs and the most recent ledger entries."""
    gateway = gateway_of(request)

    def read() -> Account:
        try:
            balance = gateway.ledger.balance(account)
            entries = gateway.ledger.entries(account, limit=20)
        except UnknownAccountError:
            raise _unauthorized("this account no longer exists") from None
        return Account(
            name=account,
            balance=balance,
            active_jobs=gateway.index.active_count(account),
            max_active_jobs=gateway.settings.gateway_max_active_jobs,
            entries=[
                LedgerEntry(kind=e.kind, points=e.points, job_id=e.job_id, note=e.note, created_at=e.created_at)
                for e in entries
            ],
        )

    result: Account = await anyio.to_thread.run_sync(read)
    return result


@router.get("/v1/quote", response_model=Quote, tags=["account"], responses=_ERRORS)
async def quote(duration: int = 4, fps: int = 8) -> Quote:
    """The price of a job of ``duration`` seconds at ``fps``: 8 + 4·duration + max(0, (fps - 8) // 4)."""
    try:
        GenerationParams(duration=duration, fps=fps)
    except ValidationError as exc:
        raise validation_error(exc) from None
    return Quote(duration=duration, fps=fps, frames=duration * fps, price=price_points(duration, fps))


# --- jobs ---------------------------------------------------------------------------------------


def _job_body_schema() -> dict[str, Any]:
    props = {k: v for k, v in GenerationParams.model_json_schema()["properties"].items() if k != "resolution"}
    props["resolution"] = {"type": "string", "example": "1024x576", "description": "WxH, multiples of 64"}
    multipart = {
        "type": "object",
        "required": ["image"],
        "properties": {"image": {"type": "string", "format": "binary"}, **props},
    }
    as_json = {
        "type": "object",
        "required": ["image_base64"],
        "properties": {"image_base64": {"type": "string", "description": "JPEG, PNG or WebP, base64"}, **props},
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": multipart}, "application/json": {"schema": as_json}},
        }
    }


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobResource,
    tags=["jobs"],
    openapi_extra=_job_body_schema(),
    responses={
        **_ERRORS,
        402: {"model": ErrorResponse, "description": "the account's points do not cover the price"},
        413: {"model": ErrorResponse, "description": "the image is over 25 MB"},
        415: {"model": ErrorResponse, "description": "not a JPEG, PNG or WebP image (GIF is refused)"},
        429: {"model": ErrorResponse, "description": "too many unfinished jobs"},
    },
)
async def submit_job(request: Request, account: CurrentAccount) -> JSONResponse:
    """Submit an image and parameters. Multipart with an `image` file, or JSON with `image_base64`."""
    gateway = gateway_of(request)
    image, fields = await _read_submission(request, gateway.max_upload_bytes)
    params = _params_from(fields, gateway.settings.model)
    await anyio.to_thread.run_sync(_check_image, image, params, gateway.max_upload_bytes)
    price = price_points(params.duration, params.fps)

    balance = await anyio.to_thread.run_sync(_balance_of, gateway, account)
    if balance < price:
        raise ApiError(
            402,
            "insufficient_points",
            f"this job costs {price} points and the account has {balance}",
            details={"price": price, "balance": balance},
        )
    from contracts.messages import JobSpec

    spec = JobSpec(job_id=new_job_id(), account=account, params=params.with_resolved_seed())
    view = JobView.submitted(spec)
    active = await anyio.to_thread.run_sync(gateway.index.add_if_room, view, gateway.settings.gateway_max_active_jobs)
    if active is not None:
        raise ApiError(
            429,
            "too_many_active_jobs",
            f"the account already has {active} unfinished jobs; wait for one to finish or cancel one",
            details={"active": active, "limit": gateway.settings.gateway_max_active_jobs},
            headers={"Retry-After": "5"},
        )
    try:
        ref: ObjectRef = await anyio.to_thread.run_sync(
            gateway.store.put, upload_key(spec.job_id), image, content_type_of(image)
        )
        gateway.uploaded(ref)
        await gateway.bus().submit(image, spec.params, account, job_id=spec.job_id)
    except Exception as exc:
        await anyio.to_thread.run_sync(gateway.index.remove, spec.job_id)
        raise ApiError(503, "unavailable", "the job could not be queued; try again shortly") from exc
    resource = JobResource.of(view)
    return JSONResponse(resource.model_dump(mode="json"), status_code=202, headers={"Location": resource.links.self})


@router.get("/v1/jobs", response_model=JobPage, tags=["jobs"], responses=_ERRORS)
async def list_jobs(
    request: Request,
    account: CurrentAccount,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> JobPage:
    """The caller's jobs, newest first; follow ``next_cursor`` for older ones."""
    gateway = gateway_of(request)
    views: list[JobView] = await anyio.to_thread.run_sync(gateway.index.list, account, limit + 1, cursor)
    more = len(views) > limit
    views = views[:limit]
    return JobPage(items=[JobResource.of(v) for v in views], next_cursor=views[-1].job_id if more else None)


@router.get("/v1/jobs/{job_id}", response_model=JobResource, tags=["jobs"], responses=_ERRORS)
async def get_job(request: Request, job_id: str, account: CurrentAccount) -> JobResource:
    """Status, overall progress 0-100, per-stage timings, price, seed, parameters and error."""
    return JobResource.of(await _own_job(request, job_id, account))


@router.get(
    "/v1/jobs/{job_id}/events",
    tags=["jobs"],
    responses={**_ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def job_events(
    request: Request,
    job_id: str,
    account: CurrentAccount,
    last_event_id: Annotated[str | None, Header(description="resume after this event id")] = None,
) -> Response:
    """The job's events as Server-Sent Events, history first. Each event's ``id`` is its stream
    sequence and ``event`` its type; ``Last-Event-ID`` resumes exactly after it. Comment lines keep
    an idle stream open; the stream ends after the terminal event. Resuming after the terminal
    event answers 204, which tells EventSource to stop reconnecting."""
    view = await _own_job(request, job_id, account)
    gateway = gateway_of(request)
    after = 0
    if last_event_id is not None and last_event_id.strip():
        if not last_event_id.strip().isdigit():
            raise ApiError(400, "bad_last_event_id", "Last-Event-ID must be an event id", field="Last-Event-ID")
        after = int(last_event_id.strip())
    if view.terminal and after >= view.last_sequence:
        return Response(status_code=204)
    frames = gateway.events().follow(job_id, after)

    async def body() -> Any:
        yield b"retry: 2000\n\n"
        try:
            async for chunk in frames_with_heartbeats(frames, gateway.heartbeat_s):
                yield chunk
        except ClientTooSlowError:
            return  # the browser reconnects with Last-Event-ID

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/v1/jobs/{job_id}/cancel", status_code=202, response_model=JobResource, tags=["jobs"])
async def cancel_job(request: Request, job_id: str, account: CurrentAccount) -> JobResource:
    """Ask the pipeline to stop a queued or running job; it ends ``cancelled`` and the points are refunded."""
    view = await _own_job(request, job_id, account)
    if view.terminal:
        raise ApiError(409, "job_finished", f"the job already ended ({view.status})")
    gateway = gateway_of(request)
    try:
        await gateway.bus().cancel(job_id, reason=f"cancelled by {account} through the API")
    except JobNotFoundError:
        # Still queued before ingest: no event yet, so stop it where stages check before starting.
        from services.bus.cancellation import request_cancel

        await request_cancel(gateway.jetstream(), job_id, view.generation)
    view.cancel_requested = True
    return JobResource.of(view)


@router.post("/v1/jobs/{job_id}/replay", status_code=202, response_model=JobResource, tags=["jobs"])
async def replay_job(
    request: Request,
    job_id: str,
    account: CurrentAccount,
    from_stage: Annotated[Stage | None, Query(alias="from", description="default: the stage that stopped it")] = None,
) -> JobResource:
    """Run a failed or cancelled job again from a stage under a new generation, reusing the stored outputs
    of the stages before it; billing reserves again the points it refunded."""
    view = await _own_job(request, job_id, account)
    try:
        await gateway_of(request).bus().replay(job_id, from_stage)
    except JobStateError as exc:
        raise ApiError(409, "cannot_replay", str(exc)) from None
    except JobNotFoundError:
        # Ours (checked above) but no stage has reported yet: it is queued, not failed.
        raise ApiError(409, "cannot_replay", f"job {job_id} is still queued; nothing to replay") from None
    return JobResource.of(view)


@router.delete("/v1/jobs/{job_id}", status_code=204, tags=["jobs"], responses=_ERRORS)
async def delete_job(request: Request, job_id: str, account: CurrentAccount) -> Response:
    """Remove the job's files (upload, intermediates, video, poster). The ledger keeps its entries."""
    view = await _own_job(request, job_id, account)
    if not view.terminal:
        raise ApiError(409, "job_active", "the job is still running; cancel it first")
    gateway = gateway_of(request)

    def remove() -> None:
        gateway.store.delete_prefix(job_prefix(job_id))
        gateway.index.mark_deleted(job_id)
        for ref in (view.video, view.poster):
            if ref is not None:
                gateway.media.forget(ref)

    await anyio.to_thread.run_sync(remove)
    return Response(status_code=204)


@router.get("/v1/jobs/{job_id}/video", tags=["jobs"], responses=_ERRORS)
async def job_video(
    request: Request, job_id: str, account: CurrentAccount, download: bool = False, range: str | None = Header(None)
) -> Response:
    """The MP4 (H.264, faststart). Supports `Range` for seeking; `?download=1` saves it."""
    return await _media(request, job_id, account, "video", range, download)


@router.get("/v1/jobs/{job_id}/poster", tags=["jobs"], responses=_ERRORS)
async def job_poster(
    request: Request, job_id: str, account: CurrentAccount, range: str | None = Header(None)
) -> Response:
    """The poster image (the first frame)."""
    return await _media(request, job_id, account, "poster", range, False)


# --- the page, docs and health ------------------------------------------------------------------


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    from services.gateway.app import STATIC_DIR

    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/docs", include_in_schema=False)
async def docs() -> FileResponse:
    from services.gateway.app import STATIC_DIR

    return FileResponse(STATIC_DIR / "docs.html", headers={"Cache-Control": "no-cache"})


@router.get("/asyncapi.json", tags=["docs"])
async def asyncapi() -> JSONResponse:
    """The AsyncAPI document of the bus: every service's subscriptions and the contracts they carry."""
    from services.gateway.asyncapi import bus_document

    return JSONResponse(await anyio.to_thread.run_sync(bus_document))


@router.get("/healthz", tags=["docs"])
async def healthz(request: Request) -> dict[str, object]:
    """Liveness, with how many SSE followers this process serves."""
    gateway = gateway_of(request)
    connected = gateway.nc is not None and gateway.nc.is_connected
    return {"ok": connected, "followers": gateway.hub.followers if gateway.hub else 0}


# --- helpers ------------------------------------------------------------------------------------


async def _own_job(request: Request, job_id: str, account: str) -> JobView:
    gateway = gateway_of(request)
    if len(job_id) > 64:
        raise not_found()
    view: JobView | None = await anyio.to_thread.run_sync(gateway.index.get, job_id)
    if view is None or view.account != account:
        raise not_found()
    return view


async def _media(
    request: Request, job_id: str, account: str, which: str, range_header: str | None, download: bool
) -> Response:
    from services.gateway.media import media_response

    view = await _own_job(request, job_id, account)
    if view.deleted:
        raise ApiError(410, "deleted", "the job's files were deleted")
    ref: ObjectRef | None = view.video if which == "video" else view.poster
    if ref is None:
        raise ApiError(409, "not_ready", f"the job has no {which} yet ({view.status})")
    gateway = gateway_of(request)
    try:
        data: bytes = await anyio.to_thread.run_sync(gateway.media.read, ref)
    except ObjectMissingError:
        raise ApiError(410, "deleted", f"the job's {which} is no longer stored") from None
    extension = "mp4" if which == "video" else ref.content_type.rsplit("/", 1)[-1]
    response = media_response(data, ref.content_type, ref.sha256, range_header, f"{job_id}.{extension}")
    if download:
        response.headers["Content-Disposition"] = f'attachment; filename="{job_id}.{extension}"'
    return response


def _balance_of(gateway: Gateway, account: str) -> int:
    try:
        return int(gateway.ledger.balance(account))
    except UnknownAccountError:
        raise _unauthorized("this account no longer exists") from None


async def _read_submission(request: Request, max_image_bytes: int) -> tuple[bytes, dict[str, Any]]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in {"multipart/form-data", "application/json"}:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send multipart/form-data with an `image` file, or JSON with `image_base64`",
            field="Content-Type",
        )
    # base64 is 4/3 of the bytes; the rest is room for the other fields.
    limit = max_image_bytes * 4 // 3 + 64 * 1024
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(max_image_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(max_image_bytes)
        chunks.append(chunk)
    body = b"".join(chunks)
    if content_type == "application/json":
        return _json_submission(body)
    return await _multipart_submission(request, body)


def _json_submission(body: bytes) -> tuple[bytes, dict[str, Any]]:
    try:
        fields = json.loads(body)
    except ValueError:
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(fields, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    encoded = fields.pop("image_base64", None)
    if not isinstance(encoded, str) or not encoded:
        raise ApiError(422, "missing_image", "image_base64: an image is required", field="image_base64")
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]  # a data: URL as a browser's FileReader makes it
    try:
        image = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "bad_base64", "image_base64: not valid base64", field="image_base64") from None
    return image, fields


async def _multipart_submission(request: Request, body: bytes) -> tuple[bytes, dict[str, Any]]:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=32)
    except Exception as exc:
        raise ApiError(400, "bad_multipart", f"the multipart body cannot be read: {exc}") from None
    try:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "missing_image", "image: attach an image file", field="image")
        image = await upload.read()
        fields = {k: v for k, v in form.items() if k != "image" and isinstance(v, str) and v.strip() != ""}
    finally:
        await form.close()
    return image, fields


def _params_from(fields: dict[str, Any], default_model: str) -> GenerationParams:
    unknown = sorted(set(fields) - set(_PARAM_FIELDS))
    if unknown:
        raise ApiError(422, "unknown_field", f"{unknown[0]}: not a parameter of a job", field=unknown[0])
    values = dict(fields)
    values.setdefault("model", default_model)
    if values["model"] not in {default_model, "tiny"}:
        raise ApiError(
            422,
            "unknown_model",
            f"model: this server runs {default_model!r}" + ("" if default_model == "tiny" else " or 'tiny'"),
            field="model",
        )
    if isinstance(values.get("resolution"), str):
        try:
            values["resolution"] = Resolution.parse(values["resolution"])
        except (ValueError, ValidationError) as exc:
            message = f"resolution: {str(exc).splitlines()[0]}"
            raise ApiError(422, "invalid_resolution", message, field="resolution") from None
    try:
        return GenerationParams(**values)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _check_image(image: bytes, params: GenerationParams, max_bytes: int) -> None:
    """Refuse what ingest would refuse, now, with the right status: same checks, same messages."""
    from pipeline.image import ImageRejected, prepare_image

    size = (params.resolution.width, params.resolution.height) if params.resolution else None
    try:
        prepare_image(image, model_size=(256, 192), requested=size, max_bytes=max_bytes)
    except ImageRejected as exc:
        status = status_of(exc.code)
        raise ApiError(status, exc.code, f"image: {exc.message}", field="image") from None


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "too_large", f"image: the limit is {max_bytes / 2**20:g} MB", field="image")
