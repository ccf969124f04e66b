"""Submitting a job over HTTP: reading the body, checking parameters and image as ingest would, queueing.

The body is multipart with an ``image`` file, or JSON with ``image_base64``; the other fields are
:class:`~contracts.params.GenerationParams`. Everything ingest would refuse is refused here first, with
the status the failure code maps to, so a client learns of a bad upload before it is queued.
"""

import base64
import binascii
import hashlib
import io
import json
import logging
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.types import Message

from contracts.extension import EXTENSION_CHANGES, Extension, ExtensionRefused, extension_params
from contracts.failures import FailureCode
from contracts.keys import job_prefix
from contracts.messages import JobSpec
from contracts.params import MAX_SEED, GenerationParams, Resolution
from contracts.pricing import price_points, quoted_size
from contracts.refs import ObjectRef
from contracts.webhooks import (
    DEFAULT_WEBHOOK_EVENTS,
    MAX_WEBHOOK_URL_CHARS,
    WEBHOOK_EVENTS,
    Webhook,
    check_webhook_url,
    parse_webhook_events,
)
from services.billing.ledger import UnknownAccountError
from services.gateway.dependencies import unauthorized
from services.gateway.errors import ApiError, status_of, validation_error
from services.gateway.jobs_index import Idempotency, IdempotencyKeyUsedError
from services.gateway.model_sizes import ModelSize
from services.gateway.progress import JobView
from services.gateway.runtime import Gateway
from services.jobclient import new_job_id

if TYPE_CHECKING:
    from pipeline.presets import Suggestion

log = logging.getLogger("i2v.gateway")

MAX_UPLOAD_BYTES = 25 * 2**20
TINY = "tiny"
STILL = "still"
"""``pipeline.model_catalog.STILL``: no diffusion and no weights, so every server can run it."""
_PARAM_FIELDS = frozenset(GenerationParams.model_fields)
MAX_VARIATIONS = 4
"""Most jobs one submission's ``variations`` makes (consecutive seeds of the same picture and parameters)."""

# --- the body -----------------------------------------------------------------------------------


_SIDES = "|".join(str(side) for side in range(64, 2049, 64))
RESOLUTION_PATTERN = f"^({_SIDES})x({_SIDES})$"
"""``WxH`` as :class:`~contracts.params.Resolution` takes it: both sides multiples of 64 from 64 to 2048."""
IMAGE_TYPES = "image/jpeg, image/png, image/webp"


def param_bounds(name: str) -> dict[str, Any]:
    """``ge``/``le`` of a :class:`GenerationParams` field, for a query parameter that takes it."""
    bounds: dict[str, Any] = {}
    for rule in GenerationParams.model_fields[name].metadata:
        for key in ("ge", "le"):
            if hasattr(rule, key):
                bounds[key] = getattr(rule, key)
    return bounds


def openapi_body() -> dict[str, Any]:
    """The request body as OpenAPI describes it (the route reads the raw request, so FastAPI cannot)."""
    props = {k: v for k, v in GenerationParams.model_json_schema()["properties"].items() if k != "resolution"}
    resolution = {
        "type": "string",
        "pattern": RESOLUTION_PATTERN,
        "example": "1024x576",
        "description": "WxH, multiples of 64 from 64 to 2048; default: the model's size fitted to the picture",
    }
    props["resolution"] = resolution
    props["variations"] = {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_VARIATIONS,
        "default": 1,
        "description": "make this many jobs, seeds seed, seed + 1, … (one random seed, then + 1), each priced"
        ' and charged; 2 or more answer the batch, `{"batch": {"id", "jobs"}}`, instead of the job',
    }
    props["webhook"] = {
        "type": "string",
        "format": "uri",
        "maxLength": MAX_WEBHOOK_URL_CHARS,
        "example": "https://example.com/i2v-hooks",
        "description": "an https:// (or http://) URL to POST the job's events to, signed with the account's"
        " webhook secret (Standard Webhooks); not a loopback or private address",
    }
    events = {"type": "string", "enum": list(WEBHOOK_EVENTS)}
    webhook_events = {
        "description": "which events to send (default: " + ", ".join(DEFAULT_WEBHOOK_EVENTS) + ")",
        "example": "completed,failed",
    }
    props["webhook_events"] = {
        **webhook_events,
        "type": "string",
        "description": webhook_events["description"] + "; comma-separated",
    }
    multipart = {
        "type": "object",
        "required": ["image"],
        "properties": {"image": {"type": "string", "format": "binary"}, **props},
    }
    props = {**props, "resolution": {"anyOf": [resolution, {"type": "null"}]}}  # JSON may say null
    props["webhook_events"] = {
        **webhook_events,
        "type": "array",
        "items": events,
        "minItems": 1,
        "example": ["completed", "failed"],
    }
    as_json = {
        "type": "object",
        "required": ["image_base64"],
        "properties": {
            "image_base64": {
                "type": "string",
                "format": "byte",
                "minLength": 1,
                "description": "JPEG, PNG or WebP, base64 (a data: URL too)",
            },
            **props,
        },
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": multipart, "encoding": {"image": {"contentType": IMAGE_TYPES}}},
                "application/json": {"schema": as_json},
            },
        }
    }


def body_type(request: Request) -> str:
    """The request's media type, lower-case, without parameters (``multipart/form-data``, ``application/json``)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_submission(request: Request, max_image_bytes: int) -> tuple[bytes, dict[str, Any]]:
    """The image's bytes and the other fields, refusing a body too large before reading all of it."""
    content_type = body_type(request)
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


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, FailureCode.TOO_LARGE, f"image: the limit is {max_bytes / 2**20:g} MB", field="image")


# --- checks -------------------------------------------------------------------------------------


async def webhook_from(fields: dict[str, Any], *, allow_private: bool) -> Webhook | None:
    """Take ``webhook`` and ``webhook_events`` out of the fields: the job's webhook, or None without a URL.
    Its host is looked up here (and again at every delivery): a loopback or private address is refused
    unless the deployment allows them."""
    from services.webhooks.destination import WebhookRefusedError, resolve

    url = fields.pop("webhook", None)
    events = fields.pop("webhook_events", None)
    if url is None:
        if events is not None:
            raise ApiError(422, "invalid_webhook", "webhook_events: give a webhook URL too", field="webhook_events")
        return None
    if not isinstance(url, str):
        raise ApiError(422, "invalid_webhook", "webhook: must be a string", field="webhook")
    try:
        check_webhook_url(url)
    except ValueError as exc:
        raise ApiError(422, "invalid_webhook", str(exc), field="webhook") from None
    if events is not None and not isinstance(events, str | list):
        raise ApiError(422, "invalid_webhook", "webhook_events: a list of event names", field="webhook_events")
    try:
        chosen = DEFAULT_WEBHOOK_EVENTS if events is None else parse_webhook_events(events)
    except ValueError as exc:
        raise ApiError(422, "invalid_webhook", str(exc), field="webhook_events") from None
    try:
        await anyio.to_thread.run_sync(lambda: resolve(url, allow_private=allow_private))
    except WebhookRefusedError as exc:
        raise ApiError(422, "webhook_refused", str(exc), field="webhook") from None
    return Webhook(url=url, events=chosen)


def variations_from(fields: dict[str, Any], *, as_json: bool = False) -> int:
    """Take ``variations`` out of the fields: how many jobs to make, 1 without it. A multipart field is
    text; a JSON one must be a number already, as with the parameters."""
    value = fields.pop("variations", 1)
    if not as_json and isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VARIATIONS:
        message = f"variations: a whole number from 1 to {MAX_VARIATIONS}"
        raise ApiError(422, "invalid_variations", message, field="variations")
    return value


def params_from(fields: dict[str, Any], default_model: str, *, as_json: bool = False) -> GenerationParams:
    """The job's parameters; the server's model unless the client asks for ``tiny`` or ``still``, which
    need no weights of the server's own.

    Multipart fields are text and are read as the parameters' types; JSON ones must already be of
    those types (``"stabilize": 0`` is not a boolean), as the API document says.
    """
    unknown = sorted(set(fields) - _PARAM_FIELDS)
    if unknown:
        raise ApiError(422, "unknown_field", f"{unknown[0]}: not a parameter of a job", field=unknown[0])
    values = dict(fields)
    values.setdefault("model", default_model)
    if not isinstance(values["model"], str):
        raise ApiError(422, "invalid_model", "model: must be a string", field="model")
    models = list(dict.fromkeys([default_model, TINY, STILL]))
    if values["model"] not in models:
        named = ", ".join(repr(m) for m in models[:-1]) + f" or {models[-1]!r}"
        raise ApiError(422, "unknown_model", f"model: this server runs {named}", field="model")
    resolution = values.get("resolution")
    if resolution is not None and not isinstance(resolution, str):
        raise ApiError(422, "invalid_resolution", "resolution: must look like 1024x576", field="resolution")
    if isinstance(resolution, str):
        try:
            values["resolution"] = Resolution.parse(resolution).model_dump()
        except (ValueError, ValidationError) as exc:
            message = f"resolution: {str(exc).splitlines()[0]}"
            raise ApiError(422, "invalid_resolution", message, field="resolution") from None
    try:
        if as_json:
            return GenerationParams.model_validate_json(json.dumps(values), strict=True)
        return GenerationParams.model_validate(values)
    except ValidationError as exc:
        raise validation_error(exc) from None


def check_image(image: bytes, params: GenerationParams, model_size: ModelSize, max_bytes: int) -> tuple[int, int]:
    """Refuse what ingest would refuse, with the same code and message; returns the (width, height)
    ingest will prepare the image at. Blocking: decodes the image, at reduced scale where that is enough."""
    from pipeline.image import ImageRejected
    from pipeline.image import check_image as check_upload

    requested = (params.resolution.width, params.resolution.height) if params.resolution else None
    try:
        return check_upload(image, model_size=model_size(params.model), requested=requested, max_bytes=max_bytes)
    except ImageRejected as exc:
        raise ApiError(status_of(exc.code), exc.code, f"image: {exc.message}", field="image") from None


def header_size(image: bytes, params: GenerationParams, model_size: tuple[int, int]) -> tuple[int, int]:
    """The size the video will be made at, from the image's header alone (no pixel is decoded): what
    billing will charge for. The requested or the model's size when the header cannot be read; the
    decode then says what is wrong with the file."""
    from PIL import Image

    from pipeline.image import fit_resolution

    if params.resolution is not None:
        return params.resolution.width, params.resolution.height
    try:
        # Opening reads the header only; the formats are the three ingest accepts. Pillow's warning of
        # a large image is for the decode, which refuses one past the limit.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image), formats=["JPEG", "PNG", "WEBP"]) as img:
                width, height = img.size
        return fit_resolution(width, height, model_size, None)
    except Exception:
        return quoted_size(params, model_size)


def fingerprint(image: bytes, params: GenerationParams, webhook: Webhook | None = None, variations: int = 1) -> str:
    """What a request asked for, however it was encoded (multipart or JSON): compared when a client
    sends the same ``Idempotency-Key`` again. A request without a webhook, or of one job, keeps its
    earlier fingerprint."""
    asked = params.model_dump_json().encode() + (b"" if webhook is None else webhook.model_dump_json().encode())
    if variations > 1:
        asked += f"variations={variations}".encode()
    return hashlib.sha256(hashlib.sha256(image).digest() + asked).hexdigest()


# --- queueing -----------------------------------------------------------------------------------


async def submit(
    gateway: Gateway,
    account: str,
    image: bytes,
    params: GenerationParams,
    idempotency: Idempotency | None = None,
    webhook: Webhook | None = None,
    variations: int = 1,
) -> tuple[list[JobView], bool]:
    """Check the job as cheaply as can be first, then decode the image, then store it and queue the job;
    returns the jobs (one, or ``variations`` of one batch) and whether they are new (False: the
    ``idempotency`` key already named them).

    ``variations`` makes that many jobs of one batch, seeds seed, seed + 1, … (a random seed is drawn
    once; past :data:`~contracts.params.MAX_SEED` they wrap to 0), each priced and charged as a job of
    its own. The balance and the active-jobs limit are checked for all of them at once: the batch is
    refused whole rather than queued in part. Should queueing fail part way, the jobs already queued
    stay (they are the answer the key then replays) and the rest are forgotten.

    Order: the key's earlier job; the price at the size the header gives against the balance; the
    account's unfinished jobs; the image's full check, a few at a time (``Gateway.decodes``); the
    index row (the limit and the key again, in one write); the upload and the command. Nothing is left
    behind when queueing fails: the index row, its key and whatever was stored are removed. A job with a
    ``preset`` has its image checked and looked at before it is priced: the preset's values set the price.
    """
    return await once(
        gateway, account, idempotency, lambda: _admit(gateway, account, image, params, idempotency, webhook, variations)
    )


async def once(
    gateway: Gateway,
    account: str,
    idempotency: Idempotency | None,
    admit: Callable[[], Awaitable[list[JobView]]],
) -> tuple[list[JobView], bool]:
    """``admit()``'s jobs and True; or, when ``idempotency``'s key already made jobs for the same request
    within the window, those jobs and False, whatever ``admit`` would say now (422 for another request).
    ``admit`` records the key with its jobs (``JobsIndex.add_if_room``), so that of twins sent at once one
    makes the jobs and the others answer them."""
    if idempotency is None:
        return await admit(), True
    earlier = await _idempotent_job(gateway, account, idempotency)
    if earlier is not None:
        return earlier, False
    try:
        return await admit(), True
    except (ApiError, IdempotencyKeyUsedError) as exc:
        # A twin of this request may have made the job meanwhile (and taken the slot or the points).
        earlier = await _idempotent_job(gateway, account, idempotency)
        if earlier is not None:
            return earlier, False
        if isinstance(exc, ApiError):
            raise
        # The twin's job was not queued after all, and its key is free again.
        raise ApiError(409, "idempotency_key_in_use", "a twin of this request just failed; retry") from None


def with_preset(image: bytes, params: GenerationParams, model_size: ModelSize, max_bytes: int) -> "Suggestion":
    """Check the image as :func:`check_image` does, then resolve ``params.preset`` against it at the
    size the video will be made at. Blocking: decodes the image, then a small copy of it."""
    from pipeline.presets import resolve_preset, small_picture

    video_size = check_image(image, params, model_size, max_bytes)
    try:
        return resolve_preset(small_picture(image), params, video_size)
    except ValidationError as exc:  # the values given do not fit with the preset's: name the first
        raise validation_error(exc) from None


async def _admit(
    gateway: Gateway,
    account: str,
    image: bytes,
    params: GenerationParams,
    idempotency: Idempotency | None,
    webhook: Webhook | None = None,
    variations: int = 1,
) -> list[JobView]:
    model_size = await anyio.to_thread.run_sync(gateway.model_size, params.model)
    checked = False
    if params.preset:
        # The preset's values depend on the picture and set the price: the picture is decoded first.
        async with gateway.decodes.slot(image):
            suggestion = await anyio.to_thread.run_sync(
                with_preset, image, params, gateway.model_size, gateway.max_upload_bytes
            )
        params, checked = suggestion.params, True
    price = price_points(params, *header_size(image, params, model_size))
    balance = await anyio.to_thread.run_sync(_balance_of, gateway, account)
    if balance < price * variations:
        code = FailureCode.INSUFFICIENT_POINTS
        these = "this job costs" if variations == 1 else f"these {variations} jobs cost {variations} x {price} ="
        raise ApiError(
            status_of(code),
            code,
            f"{these} {price * variations} points and the account has {balance}",
            details={"price": price * variations, "balance": balance},
        )
    limit = gateway.settings.gateway_max_active_jobs
    _refuse_past_limit(await anyio.to_thread.run_sync(gateway.index.active_count, account), limit, variations)
    if not checked:
        async with gateway.decodes.slot(image):
            await anyio.to_thread.run_sync(check_image, image, params, gateway.model_size, gateway.max_upload_bytes)
    if variations == 1:
        spec = JobSpec(job_id=new_job_id(), account=account, params=params.with_resolved_seed(), webhook=webhook)
        view = JobView.submitted(spec, price)
        active = await anyio.to_thread.run_sync(gateway.index.add_if_room, view, limit, idempotency)
        if active is not None:
            _refuse_past_limit(active, limit)
        views = [view]
    else:
        views = _batch_views(account, params, webhook, price, variations)
        active = await anyio.to_thread.run_sync(gateway.index.add_batch_if_room, views, limit, idempotency)
        if active is not None:
            _refuse_past_limit(active, limit, variations)
    for queued, view in enumerate(views):
        try:
            await gateway.bus().submit(image, view.params, account, job_id=view.job_id, webhook=webhook)
        except Exception as exc:
            log.warning("job %s could not be queued: %s", view.job_id, exc)
            for unqueued in views[queued:]:
                await anyio.to_thread.run_sync(_forget_job, gateway, unqueued.job_id)
            done = "" if queued == 0 else f" ({queued} of the batch's {variations} jobs were queued)"
            raise ApiError(503, "unavailable", f"the job could not be queued{done}; try again shortly") from exc
    return views


async def read_extension(request: Request) -> dict[str, Any]:
    """An extension's fields: a JSON object, or nothing at all (the parent's parameters, a fresh seed)."""
    body = await request.body()
    if not body.strip():
        return {}
    if body_type(request) != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the extension's fields as JSON", field="Content-Type")
    try:
        fields = json.loads(body)
    except ValueError:
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(fields, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return fields


def extension_body() -> dict[str, Any]:
    """The extension's request body as OpenAPI describes it (read raw, as the submission's is)."""
    params = GenerationParams.model_json_schema()["properties"]
    props: dict[str, Any] = {name: params[name] for name in EXTENSION_CHANGES}
    for name in ("model", "fps", "format", "quality"):
        props[name] = {**params[name], "description": "the parent's; another value is 422"}
    props["resolution"] = {
        "type": "string",
        "pattern": RESOLUTION_PATTERN,
        "description": "the parent's; another is 422",
    }
    submitted = openapi_body()["requestBody"]["content"]["application/json"]["schema"]["properties"]
    props["webhook"] = submitted["webhook"]
    props["webhook_events"] = submitted["webhook_events"]
    example = {"duration": 2, "steps": 4, "motion_prompt": "slow pan left"}
    schema = {"type": "object", "properties": props, "additionalProperties": False}
    return {
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": schema,
                    "examples": {"two_more_seconds": {"summary": "two more seconds in 4 steps", "value": example}},
                }
            },
        }
    }


def extension_of(view: JobView, frames: ObjectRef, fields: dict[str, Any]) -> tuple[GenerationParams, Extension]:
    """The new segment's parameters and what it extends, from the finished ``view`` and the request's fields."""
    output = view.output
    assert output is not None
    try:
        params = extension_params(view.params, output.width, output.height, output.frame_count, fields)
    except ExtensionRefused as exc:
        raise ApiError(422, "cannot_extend_with", str(exc), field=exc.field) from None
    except ValidationError as exc:
        raise validation_error(exc) from None
    extends = Extension(
        job_id=view.job_id,
        generation=view.generation,
        frames=frames,
        frame_count=output.frame_count,
        width=output.width,
        height=output.height,
    )
    return params, extends


def extension_fingerprint(parent_id: str, fields: Mapping[str, Any]) -> str:
    """What an extension request asked for: the job it extends and its fields, however they were ordered."""
    asked = json.dumps({"extends": parent_id, "fields": fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(asked.encode()).hexdigest()


async def submit_extension(
    gateway: Gateway,
    account: str,
    params: GenerationParams,
    extends: Extension,
    webhook: Webhook | None,
    idempotency: Idempotency | None = None,
) -> JobView:
    """Queue an extension as :func:`submit` queues a job, with no picture to check: priced as its new segment
    alone at the parent's size, against the balance and the account's unfinished jobs. ``idempotency``'s
    key is recorded with it (:func:`once` answers it again)."""
    price = price_points(params, extends.width, extends.height)
    balance = await anyio.to_thread.run_sync(_balance_of, gateway, account)
    if balance < price:
        code = FailureCode.INSUFFICIENT_POINTS
        raise ApiError(
            status_of(code),
            code,
            f"this extension costs {price} points and the account has {balance}",
            details={"price": price, "balance": balance},
        )
    limit = gateway.settings.gateway_max_active_jobs
    spec = JobSpec(
        job_id=new_job_id(), account=account, params=params.with_resolved_seed(), webhook=webhook, extends=extends
    )
    view = JobView.submitted(spec, price)
    active = await anyio.to_thread.run_sync(gateway.index.add_if_room, view, limit, idempotency)
    if active is not None:
        _refuse_past_limit(active, limit)
    try:
        await gateway.bus().submit_extension(spec)
    except Exception as exc:
        log.warning("extension %s could not be queued: %s", spec.job_id, exc)
        await anyio.to_thread.run_sync(gateway.index.remove, spec.job_id)
        raise ApiError(503, "unavailable", "the job could not be queued; try again shortly") from exc
    return view


def _batch_views(
    account: str, params: GenerationParams, webhook: Webhook | None, price: int, variations: int
) -> list[JobView]:
    """The batch's jobs, queued, in seed order; their ids sort in that order too."""
    batch_id = "b" + new_job_id()[1:]  # as a job's id: time-ordered, unguessable, one letter apart
    first = params.with_resolved_seed().seed
    job_ids = sorted(new_job_id() for _ in range(variations))  # one millisecond's ids sort by their random part
    views = []
    for offset, job_id in enumerate(job_ids):
        seeded = params.model_copy(update={"seed": (first + offset) % (MAX_SEED + 1)})
        view = JobView.submitted(JobSpec(job_id=job_id, account=account, params=seeded, webhook=webhook), price)
        view.batch_id = batch_id
        views.append(view)
    return views


def _refuse_past_limit(active: int, limit: int, variations: int = 1) -> None:
    if active + variations > limit:
        has = f"the account already has {active} unfinished jobs"
        if variations > 1:
            has = f"the account has {active} unfinished jobs and {variations} more would pass the limit of {limit}"
        raise ApiError(
            429,
            "too_many_active_jobs",
            f"{has}; wait for one to finish or cancel one",
            details={"active": active, "limit": limit},
            headers={"Retry-After": "5"},
        )


async def _idempotent_job(gateway: Gateway, account: str, idempotency: Idempotency) -> list[JobView] | None:
    """The jobs this key made for the same request within the window (the key names a batch's first);
    422 for a different request."""
    used = await anyio.to_thread.run_sync(gateway.index.idempotent, account, idempotency.key)
    if used is None:
        return None
    job_id, earlier_fingerprint = used
    if earlier_fingerprint != idempotency.fingerprint:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "Idempotency-Key: this key was sent with a different request in the last 24 hours",
            field="Idempotency-Key",
            details={"job_id": job_id},
        )
    view: JobView | None = await anyio.to_thread.run_sync(gateway.index.get, job_id)
    if view is None or view.batch_id is None:
        return None if view is None else [view]
    batch: list[JobView] = await anyio.to_thread.run_sync(gateway.index.batch, account, view.batch_id)
    return batch


def _forget_job(gateway: Gateway, job_id: str) -> None:
    gateway.index.remove(job_id)
    try:
        gateway.store.delete_prefix(job_prefix(job_id))
    except Exception:
        # The store may be what failed; an upload left here is never referenced by any message.
        log.exception("the upload of job %s, which was not queued, could not be deleted", job_id)


def _balance_of(gateway: Gateway, account: str) -> int:
    try:
        return gateway.ledger.balance(account)
    except UnknownAccountError:
        raise unauthorized("this account no longer exists") from None
