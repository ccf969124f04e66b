"""The API document: FastAPI's OpenAPI completed with how to authenticate, every status each operation
answers with, and an example of every body.

FastAPI writes the document from the routes. What it cannot see is added here, once, when the document is
first asked for:

1. the security schemes (the API key as a bearer, the session cookie, a link's ``?token=``) and, on each
   operation, those it takes: read from the route's dependencies, so a new route needing the caller's
   account is marked without a word here;
2. the statuses: router-wide lists (``COMMON_ERRORS``, the jobs router's 404) name answers some of their
   operations never give, so each is kept only where the code that raises it runs (rules below), and
   the few a route returns without declaring are added (:data:`UNDECLARED`);
3. examples: the request bodies, every 2xx answer, and every error, built from the API's own models and
   error constructors so that an example that no longer fits its schema fails when it is built.

A new route is documented by what it declares: its errors in ``responses=``, and examples on its body's and
answer's models (``json_schema_extra={"examples": [...]}``), which are used where this module has none.
"""

import base64
import copy
import functools
import io
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.routing import BaseRoute

from contracts.failures import FailureCode
from contracts.params import GenerationParams
from contracts.pricing import price_points
from contracts.stages import Stage
from services.gateway.auth import LINK_RESOURCE, Token, TokenKind, job_in
from services.gateway.dependencies import SESSION_COOKIE, current_caller, unauthorized
from services.gateway.errors import ApiError, ErrorResponse, not_found, validation_error
from services.gateway.progress import JobError, JobOutput, JobStatus
from services.gateway.schemas import (
    Account,
    CameraResource,
    JobLinks,
    JobPage,
    JobResource,
    LedgerEntry,
    Quote,
    Session,
    TokenRequest,
)

Operation = tuple[str, str]
"""``(method, path)`` as the document spells them: ``("post", "/v1/jobs")``."""

BEARER, SESSION, LINK = "apiKey", "session", "linkToken"

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "i2v_…",
        "description": "The account's API key (`i2v_…`; `i2v accounts create NAME --points N` prints one)"
        " as `Authorization: Bearer <key>`. Never a token: those go where their own schemes say.",
    },
    SESSION: {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "What browsers use: the HttpOnly, SameSite=Strict cookie `POST /v1/session` sets for 8"
        " hours. A change (POST, DELETE) made with it must come from this site's own page, or it is 403.",
    },
    LINK: {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "A link token from `POST /v1/tokens`: 10 minutes, GET and HEAD of the one resource (or"
        " job, with what lies under it) it was made for.",
    },
}

KEY_ONLY: frozenset[Operation] = frozenset({("post", "/v1/session")})
"""Operations that read the API key themselves rather than through ``current_caller``: the key, nothing else."""

_UNSAFE = frozenset({"post", "put", "patch", "delete"})
_VERBS = ("get", "head", "post", "put", "patch", "delete", "options", "trace")
_A_JOB = "j0192a6f0c2e1a8b3c4"
"""A job id as ``new_job_id`` makes them."""
_CREATED = datetime(2026, 11, 30, 9, 12, 5, tzinfo=UTC)


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` answer the completed document (built on first use, then kept)."""
    generate = app.openapi
    completed: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not completed:
            # A copy: FastAPI's document shares dicts with the routes' own `openapi_extra`.
            completed.update(complete(copy.deepcopy(generate()), app.routes))
            app.openapi_schema = completed
        return completed

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any], routes: list[BaseRoute]) -> dict[str, Any]:
    """``document`` (FastAPI's, for ``routes``) with security, every status, and examples; changed in place."""
    document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    secured = _secured_operations(routes)
    for (method, path), operation in operations(document):
        requirement = security_of(method, path, secured)
        if requirement:
            operation["security"] = requirement
        responses = operation.setdefault("responses", {})
        for status in list(responses):
            if status.isdigit() and not _returns(int(status), method, path, operation, bool(requirement)):
                del responses[status]
        for status, response in UNDECLARED.get((method, path), {}).items():
            responses.setdefault(status, response)
        _describe_bodies(method, path, operation)
        _add_examples(method, path, operation, document["components"].get("schemas", {}))
    return document


def operations(document: dict[str, Any]) -> Iterator[tuple[Operation, dict[str, Any]]]:
    """Every operation of the document with its ``(method, path)``."""
    for path, item in document.get("paths", {}).items():
        for method in _VERBS:
            if method in item:
                yield (method, path), item[method]


# --- 1. security ----------------------------------------------------------------------------------


def _secured_operations(routes: list[BaseRoute]) -> set[Operation]:
    """The operations whose route asks for the caller (``current_caller``, at any depth of its dependencies)."""
    found: set[Operation] = set()
    # The routes as FastAPI's own document generator walks them: included routers' routes with their prefixes.
    for route in iter_route_contexts(routes):
        dependant = getattr(route, "dependant", None)
        if isinstance(dependant, Dependant) and current_caller in _calls(dependant):
            found.update((method.lower(), str(route.path_format)) for method in route.methods or ())
    return found


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def security_of(method: str, path: str, secured: set[Operation]) -> list[dict[str, list[str]]]:
    """The credentials an operation takes, any one of them; none for a public one."""
    if (method, path) in KEY_ONLY:
        return [{BEARER: []}]
    if (method, path) not in secured:
        return []
    requirement: list[dict[str, list[str]]] = [{BEARER: []}, {SESSION: []}]
    if _link_opens(method, path):
        requirement.append({LINK: []})
    return requirement


def _link_opens(method: str, path: str) -> bool:
    """Whether a link token can open the operation: one made for its path, or for the job it lies under."""
    concrete = re.sub(r"\{[^}]+\}", "1", path.replace("{job_id}", _A_JOB))
    made_for = [concrete] if re.fullmatch(LINK_RESOURCE, concrete) else []
    job = job_in(concrete)
    if job is not None:
        made_for.append(f"/v1/jobs/{job}")
    return any(
        Token(account="", expires_at=0, kind=TokenKind.LINK, key_hash="", resource=r).opens(method.upper(), concrete)
        for r in made_for
    )


# --- 2. statuses ----------------------------------------------------------------------------------

BODY_IN_JOB: frozenset[Operation] = frozenset({("post", "/v1/tokens")})
"""Operations that look up a job named in the body rather than the path (and so may answer 404)."""


def _returns(status: int, method: str, path: str, operation: dict[str, Any], secured: bool) -> bool:
    """Whether the operation can answer ``status``, where the code says so; True for any other status."""
    has_body = "requestBody" in operation
    match status:
        case 400:  # a body that cannot be read: FastAPI's own parsing, or the upload's (submission.py)
            return has_body
        case 401:  # current_caller, or the key read by the route itself
            return secured
        case 403:  # require_same_origin: a change sent with the session cookie
            return method in _UNSAFE and (method, path) not in KEY_ONLY
        case 404:  # own_job (a job in the path), or a job named in the body
            return "{" in path or (method, path) in BODY_IN_JOB
        case 416:  # a `Range` outside the file; HEAD reads no Range (jobs.py)
            return method != "head"
        case 422:  # a field of the body, or a parameter the schema constrains, out of range
            return has_body or any(_can_refuse(p) for p in operation.get("parameters", []))
    return True


def _can_refuse(parameter: dict[str, Any]) -> bool:
    """Whether validation can refuse the parameter: anything but free text (a path's job id, a `Range`)."""
    schema = parameter.get("schema", {})
    variants = schema.get("anyOf", [schema])
    free = {"type", "title", "description"}
    return not all(set(v) <= free and v.get("type") in {"string", "null"} for v in variants)


_MEDIA_HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {"description": "the file's content hash", "schema": {"type": "string"}, "example": '"9f2c…e1"'},
    "Accept-Ranges": {"schema": {"type": "string"}, "example": "bytes"},
    "Content-Disposition": {
        "description": "`attachment` with `?download=1`, else `inline`; the file name is the job's id",
        "schema": {"type": "string"},
        "example": f'inline; filename="{_A_JOB}.mp4"',
    },
}


def _partial(what: str) -> dict[str, Any]:
    return {
        "description": f"the part of the {what} that `Range` asked for (one range, in bytes)",
        "headers": {
            **_MEDIA_HEADERS,
            "Content-Range": {"schema": {"type": "string"}, "example": "bytes 0-1023/48213"},
        },
    }


UNDECLARED: dict[Operation, dict[str, dict[str, Any]]] = {
    ("get", "/v1/jobs/{job_id}/events"): {
        "204": {
            "description": "`Last-Event-ID` is at or past the job's end: nothing more will come (EventSource stops)"
        }
    },
    ("get", "/v1/jobs/{job_id}/video"): {"206": _partial("video")},
    ("get", "/v1/jobs/{job_id}/poster"): {"206": _partial("poster")},
}
"""Statuses routes return that their ``responses=`` do not list (media.py's 206, the event stream's 204)."""


def _describe_bodies(method: str, path: str, operation: dict[str, Any]) -> None:
    """What FastAPI writes as JSON where the body is not: the event stream, the files, the session's cookie."""
    responses = operation["responses"]
    if path.endswith("/events") and "200" in responses:
        responses["200"]["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
    if path.endswith(("/video", "/poster")):
        kinds = _video_types() if path.endswith("/video") else ["image/jpeg"]
        binary = {kind: {"schema": {"type": "string", "format": "binary"}} for kind in kinds}
        what = "video" if path.endswith("/video") else "poster (the first frame, JPEG)"
        ok = responses["200"]
        if method == "head":
            ok.pop("content", None)
            ok["description"] = f"the {what} is there: its headers, no body"
            ok["headers"] = {
                **_MEDIA_HEADERS,
                "Content-Length": {"schema": {"type": "integer"}, "example": 48213},
            }
        else:
            ok["content"] = binary
            ok["description"] = f"the whole {what}"
            ok["headers"] = _MEDIA_HEADERS
            responses["206"]["content"] = binary
    if (method, path) == ("delete", "/v1/session"):
        responses["204"]["headers"] = {
            "Set-Cookie": {
                "description": "the session cookie, emptied and expired",
                "schema": {"type": "string"},
                "example": f'{SESSION_COOKIE}=""; Max-Age=0; Path=/; SameSite=lax',
            }
        }
    if (method, path) in KEY_ONLY and "200" in responses:
        responses["200"]["headers"] = {
            "Set-Cookie": {
                "description": f"`{SESSION_COOKIE}=…; HttpOnly; Max-Age=28800; Path=/; SameSite=strict`"
                " (`Secure` over HTTPS)",
                "schema": {"type": "string"},
            }
        }
    for status, response in responses.items():
        if status == "401":
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}, "example": 'Bearer realm="i2v"'}}
        if status == "429":
            response["headers"] = {
                "Retry-After": {"description": "seconds", "schema": {"type": "string"}, "example": "5"}
            }


def _video_types() -> list[str]:
    from pipeline.video import VideoFormat, content_type_of_format

    return sorted({content_type_of_format(f) for f in VideoFormat})


# --- 3. examples ----------------------------------------------------------------------------------


def _small_png() -> str:
    """A 64x48 PNG, base64: a picture every server accepts, small enough to read in the document."""
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 110, 190)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def _job(status: JobStatus, **fields: Any) -> dict[str, Any]:
    params = GenerationParams(duration=2, fps=8, steps=4, seed=1234, motion_prompt="slow zoom in")
    width, height = 256, 192
    fields.setdefault("progress", 0)
    fields.setdefault("timings", {})
    resource = JobResource(
        id=_A_JOB,
        status=status,
        price=price_points(params, width, height),
        seed=params.seed,
        parameters=params,
        camera=CameraResource.of(params.motion_prompt),
        created_at=_CREATED,
        links=JobLinks.of(_A_JOB),
        **fields,
    )
    return resource.model_dump(mode="json")


def _finished_job() -> dict[str, Any]:
    output = JobOutput(frame_count=16, fps=8, duration_s=2.0, width=256, height=192, size_bytes=48213)
    timings = {Stage.INGEST: 0.04, Stage.LATENT: 3.1, Stage.DECODE: 0.6, Stage.MUX: 0.2}
    return _job(JobStatus.SUCCEEDED, progress=100, stage=Stage.MUX, step=4, total=4, timings=timings, output=output)


def _extended_job() -> dict[str, Any]:
    """A 2-second clip extended by 2 seconds: 16 frames then 16 more, 4 s in all; priced as the 2 new seconds."""
    finished = _finished_job()
    output = JobOutput(frame_count=32, fps=8, duration_s=4.0, width=256, height=192, size_bytes=91877)
    return {**finished, "id": "j0192a6f0d4b7c9e1f2a3", "extends": _A_JOB, "output": output.model_dump(mode="json")}


def _example(summary: str, value: Any) -> dict[str, Any]:
    return {"summary": summary, "value": value}


@functools.cache
def _success_examples() -> dict[Operation, dict[str, dict[str, dict[str, Any]]]]:
    """Per operation, per 2xx status: named examples of the answer's body."""
    queued = _job(JobStatus.QUEUED)
    finished = _finished_job()
    session = Session(account="acme", expires_at=int(_CREATED.timestamp()) + 8 * 3600)
    link = Session(account="acme", expires_at=int(_CREATED.timestamp()) + 600, token="i2vt.eyJhIjoiYWNtZSIsImUiOjE3…")
    account = Account(
        name="acme",
        balance=982,
        active_jobs=1,
        max_active_jobs=4,
        entries=[LedgerEntry(kind="reserve", points=-10, job_id=_A_JOB, note="", created_at=_CREATED)],
    )
    params = GenerationParams()
    quote = Quote(
        duration=4, fps=8, frames=params.frame_count, steps=25, width=1024, height=576,
        price=price_points(params, 1024, 576),
    )  # fmt: skip
    sse = (
        "retry: 2000\n\n"
        f'id: 41\nevent: StageStarted\ndata: {{"job_id": "{_A_JOB}", "generation": 0, "stage": "latent"}}\n\n'
        f'id: 42\nevent: StageProgress\ndata: {{"job_id": "{_A_JOB}", "generation": 0, "stage": "latent",'
        ' "step": 1, "total": 4}\n\n'
        ": keep-alive\n\n"
    )
    return {
        ("post", "/v1/session"): {"200": {"session": _example("logged in", session.model_dump(mode="json"))}},
        ("post", "/v1/tokens"): {"200": {"link": _example("a link token", link.model_dump(mode="json"))}},
        ("get", "/v1/account"): {"200": {"account": _example("the account", account.model_dump(mode="json"))}},
        ("get", "/v1/quote"): {"200": {"quote": _example("the default job", quote.model_dump(mode="json"))}},
        ("post", "/v1/jobs"): {
            "202": {"queued": _example("queued; `Location` names it", queued)},
            "200": {"succeeded": _example("with `Prefer: wait=N`: ended within N seconds", finished)},
        },
        ("get", "/v1/jobs"): {
            "200": {
                "page": _example(
                    "newest first", JobPage(items=[JobResource.model_validate(finished)]).model_dump(mode="json")
                )
            }
        },
        ("get", "/v1/jobs/{job_id}"): {
            "200": {
                "succeeded": _example("a finished job", finished),
                "running": _example(
                    "running",
                    _job(JobStatus.GENERATING, progress=42, stage=Stage.LATENT, step=2, total=4),
                ),
                "failed": _example(
                    "failed",
                    _job(
                        JobStatus.FAILED,
                        progress=35,
                        stage=Stage.LATENT,
                        error=JobError(
                            code=FailureCode.OUT_OF_MEMORY, message="CUDA out of memory", stage=Stage.LATENT
                        ),
                    ),
                ),
            }
        },
        ("get", "/v1/jobs/{job_id}/events"): {"200": {"events": _example("the first events, then a heartbeat", sse)}},
        ("post", "/v1/jobs/{job_id}/cancel"): {
            "202": {
                "cancelling": _example(
                    "asked to stop",
                    _job(JobStatus.GENERATING, progress=42, stage=Stage.LATENT, cancel_requested=True),
                )
            }
        },
        ("post", "/v1/jobs/{job_id}/replay"): {
            "202": {"replayed": _example("queued again under generation 1", _job(JobStatus.QUEUED, generation=1))}
        },
        ("post", "/v1/jobs/{job_id}/extend"): {
            "202": {
                "queued": _example("the extension, queued; `Location` names it", _job(JobStatus.QUEUED, extends=_A_JOB))
            },
            "200": {"succeeded": _example("with `Prefer: wait=N`: ended within N seconds", _extended_job())},
        },
        ("get", "/healthz"): {
            "200": {
                "ok": _example(
                    "serving", {"ok": True, "followers": 3, "index": {"folded_sequence": 1842, "error": None}}
                )
            }
        },
        ("get", "/asyncapi.json"): {
            "200": {
                "document": _example(
                    "the bus (abridged)",
                    {"asyncapi": "3.0.0", "info": {"title": "i2v bus", "version": "1"}, "channels": {}},
                )
            }
        },
    }


def _request_examples() -> dict[str, dict[str, Any]]:
    """Named examples of a job's body as JSON (``POST /v1/jobs``, ``POST /v1/suggest``)."""
    png = _small_png()
    return {
        "short": _example(
            "a 2-second clip in 4 steps",
            {"image_base64": png, "duration": 2, "fps": 8, "steps": 4, "motion_prompt": "slow zoom in"},
        ),
        "preset": _example("a preset chosen from the picture", {"image_base64": png, "preset": "auto"}),
    }


def _invalid(model: type[BaseModel] = GenerationParams, **fields: Any) -> ApiError:
    """The 422 the API answers for these fields of ``model``, made as it makes it."""
    try:
        model(**fields)
    except ValidationError as exc:
        return validation_error(exc)
    raise AssertionError(f"{fields} are valid for {model.__name__}")  # pragma: no cover


_NO_CREDENTIALS = unauthorized("send `Authorization: Bearer <API key>`; `i2v accounts create NAME` prints a key")
_BAD_KEY = unauthorized("this API key is not valid")
_CROSS_SITE = ApiError(
    403,
    "cross_site_request",
    "a change made with the session cookie must come from this site's own page;"
    " other clients send `Authorization: Bearer <API key>`",
)


@functools.cache
def _error_examples() -> tuple[dict[int, list[ApiError]], dict[Operation, dict[int, list[ApiError]]]]:
    """Errors by status as most operations give them, and where an operation's own differ."""
    by_status: dict[int, list[ApiError]] = {
        400: [ApiError(400, "bad_json", "the body is not valid JSON")],
        401: [_NO_CREDENTIALS, _BAD_KEY],
        402: [
            ApiError(
                402,
                FailureCode.INSUFFICIENT_POINTS,
                "this job costs 18 points and the account has 5",
                details={"price": 18, "balance": 5},
            )
        ],
        403: [_CROSS_SITE],
        404: [not_found()],
        409: [ApiError(409, "job_finished", "the job already ended (succeeded)")],
        410: [ApiError(410, "deleted", "the job's files were deleted")],
        413: [ApiError(413, FailureCode.TOO_LARGE, "image: the limit is 25 MB", field="image")],
        415: [
            ApiError(
                415,
                "unsupported_media_type",
                "send multipart/form-data with an `image` file, or JSON with `image_base64`",
                field="Content-Type",
            ),
            ApiError(415, FailureCode.NOT_AN_IMAGE, "image: not a JPEG, PNG or WebP image", field="image"),
        ],
        416: [
            ApiError(
                416,
                "range_not_satisfiable",
                "the requested range is outside the file's 48213 bytes",
                field="Range",
            )
        ],
        422: [_invalid(duration=30)],
        429: [
            ApiError(
                429,
                "too_many_active_jobs",
                "the account already has 4 unfinished jobs; wait for one to finish or cancel one",
                details={"active": 4, "limit": 4},
            )
        ],
        503: [ApiError(503, "unavailable", "the job could not be queued; try again shortly")],
    }
    video = {409: [ApiError(409, "not_ready", "the job has no video yet (generating)")]}
    poster = {409: [ApiError(409, "not_ready", "the job has no poster yet (generating)")]}
    per_operation: dict[Operation, dict[int, list[ApiError]]] = {
        ("post", "/v1/jobs"): {
            409: [ApiError(409, "idempotency_key_in_use", "a twin of this request just failed; retry")],
            422: [
                _invalid(duration=30),
                ApiError(422, "unknown_field", "colour: not a parameter of a job", field="colour"),
            ],
        },
        ("post", "/v1/suggest"): {422: [ApiError(422, "missing_image", "image: attach an image file", field="image")]},
        ("post", "/v1/tokens"): {422: [_invalid(TokenRequest, resource="/v1/elsewhere")]},
        ("get", "/v1/quote"): {
            422: [ApiError(422, "invalid_resolution", "resolution: must look like 1024x576", field="resolution")]
        },
        ("post", "/v1/jobs/{job_id}/replay"): {
            409: [
                ApiError(409, "cannot_replay", f"job {_A_JOB} is still queued; nothing to replay"),
                ApiError(409, "replay_in_progress", f"job {_A_JOB} is being replayed already"),
            ]
        },
        ("post", "/v1/jobs/{job_id}/extend"): {
            409: [ApiError(409, "cannot_extend", f"job {_A_JOB} is failed; only a completed job can be extended")],
            415: [ApiError(415, "unsupported_media_type", "send the extension's fields as JSON", field="Content-Type")],
            422: [
                ApiError(
                    422,
                    "cannot_extend_with",
                    "fps: an extension keeps its parent's 8; leave fps out (got 24)",
                    field="fps",
                ),
                _invalid(duration=30),
            ],
        },
        ("delete", "/v1/jobs/{job_id}"): {
            409: [ApiError(409, "job_active", "the job is still running; cancel it first")]
        },
        ("get", "/v1/jobs/{job_id}/video"): video,
        ("head", "/v1/jobs/{job_id}/video"): video,
        ("get", "/v1/jobs/{job_id}/poster"): poster,
        ("head", "/v1/jobs/{job_id}/poster"): poster,
        ("get", "/v1/jobs/{job_id}/events"): {
            422: [
                ApiError(
                    422,
                    "invalid_less_than_equal",
                    "last-event-id: Input should be less than or equal to 9223372036854775807",
                    field="last-event-id",
                )
            ]
        },
    }
    return by_status, per_operation


def _error_value(error: ApiError) -> dict[str, Any]:
    return ErrorResponse(error=error.body).model_dump(mode="json", exclude_none=True)


def _add_examples(method: str, path: str, operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    body = operation.get("requestBody", {}).get("content", {})
    if "image_base64" in body.get("application/json", {}).get("schema", {}).get("properties", {}):
        body["application/json"]["examples"] = _request_examples()
    elif "application/json" in body and (method, path) == ("post", "/v1/tokens"):
        body["application/json"]["examples"] = {
            "video": _example("a link to a job's video", {"resource": f"/v1/jobs/{_A_JOB}/video"})
        }
    elif examples := _schema_examples(body, schemas, "a request"):
        for media in body.values():
            media["examples"] = examples
    errors_by_status, per_operation = _error_examples()
    for status, response in operation["responses"].items():
        content = response.get("content", {})
        if status.startswith("2"):
            examples = _success_examples().get((method, path), {}).get(status) or _schema_examples(content, schemas)
            for media in content.values():
                if examples:
                    media["examples"] = examples
        elif status.isdigit() and "application/json" in content:
            errors = per_operation.get((method, path), {}).get(int(status)) or errors_by_status.get(int(status), [])
            if errors:
                content["application/json"]["examples"] = {
                    str(e.body.code): _example(e.body.message, _error_value(e)) for e in errors
                }
    if (method, path) == ("get", "/healthz") and "503" in operation["responses"]:
        behind = {"ok": False, "followers": 0, "index": {"folded_sequence": 1842, "error": "the events stream is gone"}}
        operation["responses"]["503"]["content"] = {
            "application/json": {"examples": {"behind": _example("the jobs index stopped", behind)}}
        }


def _schema_examples(
    content: dict[str, Any], schemas: dict[str, Any], summary: str = "an answer"
) -> dict[str, dict[str, Any]]:
    """The examples a response's schema carries itself (a model's ``json_schema_extra``), named."""
    for media in content.values():
        schema = media.get("schema", {})
        ref = schema.get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            schema = schemas.get(ref.rsplit("/", 1)[-1], {})
        found = schema.get("examples")
        if found:
            return {f"example{i + 1}": _example(summary, value) for i, value in enumerate(found)}
    return {}
