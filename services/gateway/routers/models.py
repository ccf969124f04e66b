"""Models: what this server runs and the sizes each makes well, for the page's resolution presets."""

import logging

import anyio.to_thread
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from services.gateway.dependencies import COMMON_ERRORS, CurrentAccount, GatewayDep
from services.gateway.errors import ApiError
from services.gateway.submission import STILL, TINY

log = logging.getLogger("i2v.gateway")

router = APIRouter(prefix="/v1/models", tags=["account"], responses={401: COMMON_ERRORS[401]})


class SizePreset(BaseModel):
    label: str = Field(description="landscape, portrait or square")
    resolution: str = Field(description="WxH, as a job's `resolution` takes it")


class ModelResource(BaseModel):
    name: str
    default: bool = Field(description="the model a job gets without `model`")
    width: int = Field(description="the size the model generates at")
    height: int
    sizes: list[SizePreset] = Field(description="resolutions at about the model's area: its own, turned, square")


_EXAMPLE: dict[str, JsonValue] = {
    "name": "tiny",
    "default": True,
    "width": 256,
    "height": 192,
    "sizes": [
        {"label": "landscape", "resolution": "256x192"},
        {"label": "portrait", "resolution": "192x256"},
        {"label": "square", "resolution": "192x192"},
    ],
}


class ModelList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"models": [_EXAMPLE]}]})

    models: list[ModelResource] = Field(description="the server's model first")


def size_presets(width: int, height: int) -> list[SizePreset]:
    """The model's own size, the same turned a quarter, and a square of about its area (a multiple of 64)."""
    long, short = max(width, height), min(width, height)
    side = max(64, round((width * height) ** 0.5 / 64) * 64)
    return [
        SizePreset(label="landscape", resolution=f"{long}x{short}"),
        SizePreset(label="portrait", resolution=f"{short}x{long}"),
        SizePreset(label="square", resolution=f"{side}x{side}"),
    ]


@router.get("", response_model=ModelList)
async def list_models(_caller: CurrentAccount, gateway: GatewayDep) -> ModelList:
    """The models a job may name (the server's, `tiny` and `still`), each with its size and the resolution
    presets the page offers for it. A model whose config this host cannot read is left out."""
    models = []
    for name in dict.fromkeys([gateway.settings.model, TINY, STILL]):
        try:
            width, height = await anyio.to_thread.run_sync(gateway.model_size, name)
        except ApiError:
            continue  # logged where the size was looked up
        models.append(
            ModelResource(
                name=name,
                default=name == gateway.settings.model,
                width=width,
                height=height,
                sizes=size_presets(width, height),
            )
        )
    return ModelList(models=models)
