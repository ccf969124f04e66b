"""Errors as the API shows them: JSON with a stable code, a sentence for people, and the field."""

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.failures import FailureCode

STATUS_OF_FAILURE: dict[FailureCode, int] = {
    FailureCode.TOO_LARGE: 413,
    FailureCode.NOT_AN_IMAGE: 415,
    FailureCode.UNSUPPORTED_FORMAT: 415,
    FailureCode.INSUFFICIENT_POINTS: 402,
}
"""HTTP status for a failure the gateway reports itself; other upload failures are 422."""


def status_of(code: FailureCode) -> int:
    return STATUS_OF_FAILURE.get(code, 422)


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    """Raise from a route; becomes ``{"error": {...}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(code=code, message=message, field=field, details=details)
        self.headers = headers


def not_found(what: str = "job") -> ApiError:
    # Someone else's job is "not found" too: saying "forbidden" would confirm that it exists.
    return ApiError(404, f"{what}_not_found", f"no such {what}")


def validation_error(exc: ValidationError, prefix: str = "") -> ApiError:
    """The first problem pydantic found, naming the field as the request spelled it."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"] if p not in ("body", "query")) or None
    if prefix and field:
        field = f"{prefix}{field}"
    message = str(first["msg"])
    if field:
        message = f"{field}: {message}"
    return ApiError(422, "invalid_" + (first["type"] or "value").replace(" ", "_"), message, field=field)


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(
        ErrorResponse(error=exc.body).model_dump(mode="json", exclude_none=True),
        status_code=exc.status,
        headers=exc.headers,
    )


_VERBS = frozenset({"get", "head", "post", "put", "patch", "delete", "options", "trace"})
_PARAM = re.compile(r"(\{[^/}]+\})")


def allowed_methods(request: Request) -> list[str]:
    """The methods the API document lists for the request's path (what a 405's ``Allow`` must say)."""
    path = request.url.path
    for template, operations in request.app.openapi()["paths"].items():
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in _PARAM.split(template))
        if re.fullmatch(pattern, path):
            return sorted(method.upper() for method in operations if method in _VERBS)
    return []


def install(app: FastAPI) -> None:
    """Route every error through :class:`ApiError`'s shape."""

    async def on_api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def on_request_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path", "header")) or None
        message = f"{field}: {first['msg']}" if field else str(first["msg"])
        return error_response(ApiError(422, "invalid_" + str(first["type"]), message, field=field))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, f"http_{exc.status_code}")
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:
            # RFC 9110 15.5.6. Starlette names the methods of the first route on the path only.
            documented = allowed_methods(request)
            if documented:
                headers["Allow"] = ", ".join(documented)
        return error_response(ApiError(exc.status_code, code, str(exc.detail), headers=headers or None))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
