"""What a user asks for: the generation parameters, validated with errors that name the field."""

import secrets
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_SEED = 2**32 - 1


class Resolution(BaseModel):
    """Output size in pixels; both sides multiples of 64 as SVD's VAE and UNet need."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    width: Annotated[int, Field(ge=64, le=2048, multiple_of=64)]
    height: Annotated[int, Field(ge=64, le=2048, multiple_of=64)]

    @classmethod
    def parse(cls, text: str) -> "Resolution":
        """Parse ``WxH`` such as ``1024x576``."""
        parts = text.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"resolution must look like 1024x576, got {text!r}")
        return cls(width=int(parts[0]), height=int(parts[1]))

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


class GenerationParams(BaseModel):
    """The knobs of one job. ``seed=-1`` means random until :meth:`with_resolved_seed` picks one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    duration: Annotated[int, Field(ge=1, le=8, description="video length in seconds")] = 4
    fps: Annotated[int, Field(ge=4, le=24, description="frames per second of the video")] = 8
    motion_bucket_id: Annotated[int, Field(ge=1, le=255, description="SVD motion strength")] = 127
    motion_prompt: Annotated[
        str,
        Field(max_length=500, description="free-text motion description; recorded, SVD does not read text"),
    ] = ""
    augmentation_level: Annotated[float, Field(ge=0.0, le=1.0, description="noise added to the image")] = 0.0
    steps: Annotated[int, Field(ge=1, le=50, description="denoising steps")] = 25
    cfg_scale: Annotated[float, Field(ge=1.0, le=5.0, description="max guidance of SVD's linear ramp")] = 2.5
    seed: Annotated[int, Field(ge=-1, le=MAX_SEED, description="-1 picks a random seed")] = -1
    model: Annotated[str, Field(min_length=1, max_length=500)] = "tiny"
    resolution: Resolution | None = None

    @field_validator("motion_prompt")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ord(c) < 32 and c not in "\t" for c in value):
            raise ValueError("motion_prompt must not contain control characters")
        return value.strip()

    @property
    def frame_count(self) -> int:
        """Frames the delivered video has: exactly duration x fps."""
        return self.duration * self.fps

    def with_resolved_seed(self) -> "GenerationParams":
        """Return these params with a concrete seed, drawn at random when ``seed`` is -1."""
        if self.seed >= 0:
            return self
        return self.model_copy(update={"seed": secrets.randbelow(MAX_SEED + 1)})
