"""Suggest: the preset a picture calls for and the parameters it sets, each with a reason; nothing is queued."""

from typing import Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.dependencies import COMMON_ERRORS, CurrentAccount, GatewayDep
from services.gateway.errors import ErrorResponse
from services.gateway.submission import body_type, openapi_body, params_from, read_submission, with_preset

router = APIRouter(prefix="/v1", tags=["jobs"], responses=COMMON_ERRORS)

_EXAMPLE: dict[str, Any] = {
    "preset": "landscape",
    "params": {"motion_bucket_id": 100, "duration": 6, "fps": 12},
    "reasons": {
        "preset": "no face and no plain background; the picture shows water (77% of the lower half)",
        "motion_bucket_id": "landscape: water covers 77% of the lower half; waves move most",
        "duration": "landscape: 6 s, long enough for a slow scene to unfold",
        "fps": "landscape: 12 fps, smooth for slow motion at half the frames of 24",
    },
    "kept": [],
    "cues": {"face": 0.0, "sky": 0.68, "water": 0.77, "greenery": 0.0, "plain_border": 0.36},
}


class Cues(BaseModel):
    """What the picture shows, each a share from 0 to 1."""

    face: float = Field(description="share of the picture covered by a face-shaped skin-toned region")
    sky: float = Field(description="share of the upper half that is sky")
    water: float = Field(description="share of the lower half that is water (blue)")
    greenery: float = Field(description="share of the picture that is trees or grass (green, textured)")
    plain_border: float = Field(description="share of the border of one colour: a plain background")


class SuggestionResource(BaseModel):
    """A preset for the picture: the parameters it sets and why."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    preset: Literal["portrait", "landscape", "product"] = Field(description="the preset applied")
    params: dict[str, Any] = Field(
        description="the parameters the preset sets, as a job takes them; those sent with the request are kept"
    )
    reasons: dict[str, str] = Field(description="one line for `preset` and for each parameter in `params`")
    kept: list[str] = Field(description="parameters the preset would set but the request gave: they win")
    cues: Cues


def _suggest_body() -> dict[str, Any]:
    body = openapi_body()
    for content in body["requestBody"]["content"].values():
        content["schema"]["properties"]["preset"]["default"] = "auto"
    return body


@router.post(
    "/suggest",
    response_model=SuggestionResource,
    openapi_extra=_suggest_body(),
    responses={
        413: {"model": ErrorResponse, "description": "the image is over 25 MB"},
        415: {"model": ErrorResponse, "description": "not a JPEG, PNG or WebP image (GIF is refused)"},
    },
)
async def suggest(request: Request, account: CurrentAccount, gateway: GatewayDep) -> SuggestionResource:
    """Look at a picture and suggest a preset (`portrait`, `landscape` or `product`) and the parameters it
    sets, each with a reason; nothing is queued or charged. The body is a job's: multipart with an
    `image` file, or JSON with `image_base64`, checked as a job's is. Any other field a job takes may
    come too: those given are kept (explicit values win over a preset) and listed in `kept`, `model`
    and `resolution` size the video the preset must fit, and `preset` names one (default `auto`:
    chosen from faces, a plain background, sky, water and greenery)."""
    del account  # the same callers as submitting a job; the picture is not kept
    image, fields = await read_submission(request, gateway.max_upload_bytes)
    fields.setdefault("preset", "auto")
    params = params_from(fields, gateway.settings.model, as_json=body_type(request) == "application/json")
    if not params.preset:
        params = params.model_copy(update={"preset": "auto"})
    async with gateway.decodes.slot(image):
        suggestion = await anyio.to_thread.run_sync(
            with_preset, image, params, gateway.model_size, gateway.max_upload_bytes
        )
    return SuggestionResource.model_validate(suggestion.as_json())
