"""What a user asks for: the generation parameters, validated with errors that name the field."""

import secrets
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MAX_SEED = 2**32 - 1
MAX_VIDEO_PIXELS = 1280 * 720 * 192
"""Most pixels a video may have in all its frames (width x height x duration x fps): 8 s at 24 fps at
1280x720, about 530 MB as the 8-bit frames decode and mux hold. 2048x2048 gets 42 frames at most."""


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


Interpolator = Literal["dis", "rife"]
"""How frames between SVD's native ones are made: ``dis`` (classical optical flow, no weights) or ``rife``
(the deployment's RIFE weights, ``I2V_RIFE_WEIGHTS``; clients never name a path)."""
LoopMode = Literal["none", "pingpong", "crossfade"]
VideoFormatName = Literal["mp4", "webm", "gif", "webp", "av1"]
QualityName = Literal["low", "medium", "high"]
PresetName = Literal["", "portrait", "landscape", "product", "auto"]
"""A preset fills the knobs a user left unset from the picture (``pipeline.presets``); ``auto`` picks
portrait, landscape or product from what the picture shows; ``""`` is no preset."""
MIN_FPS_CONDITIONING, MAX_FPS_CONDITIONING = 1, 30
"""Range of the fps SVD may be told its frames are apart (SVD was trained on 3 to 30 fps)."""


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
    interpolator: Annotated[Interpolator, Field(description="dis (optical flow) or rife (server's weights)")] = "dis"
    loop: Annotated[LoopMode, Field(description="none, pingpong or crossfade; keeps duration x fps frames")] = "none"
    format: Annotated[VideoFormatName, Field(description="mp4 (H.264), webm (VP9), gif, webp or av1")] = "mp4"
    quality: Annotated[QualityName, Field(description="low, medium or high: CRF or palette per format")] = "high"
    stabilize: Annotated[bool, Field(description="smooth the generated motion (Kalman) before the camera")] = False
    min_cfg: Annotated[
        float, Field(ge=1.0, le=5.0, description="guidance on the first frame; ramps to cfg_scale on the last")
    ] = 1.0
    fps_conditioning: Annotated[
        int | None,
        Field(
            ge=MIN_FPS_CONDITIONING,
            le=MAX_FPS_CONDITIONING,
            description="fps SVD is conditioned on; default: its native frames spread over the duration",
        ),
    ] = None
    preset: Annotated[
        PresetName,
        Field(
            description="portrait, landscape, product or auto (chosen from the picture): fills the parameters"
            " not given; empty for none. A job records the preset applied and the values it chose"
        ),
    ] = ""

    @field_validator("motion_prompt")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ord(c) < 32 and c not in "\t" for c in value):
            raise ValueError("motion_prompt must not contain control characters")
        return value.strip()

    @field_validator("resolution")
    @classmethod
    def _bounded_video(cls, value: Resolution | None, info: ValidationInfo) -> Resolution | None:
        # Fields validate in order: duration and fps are known here unless they were refused themselves.
        duration, fps = info.data.get("duration"), info.data.get("fps")
        if value is not None and isinstance(duration, int) and isinstance(fps, int):
            check_video_size(value.width, value.height, duration * fps)
        return value

    @field_validator("min_cfg")
    @classmethod
    def _ramp_rises(cls, value: float, info: ValidationInfo) -> float:
        cfg = info.data.get("cfg_scale")
        if isinstance(cfg, float | int) and value > cfg:
            raise ValueError(f"min_cfg ({value:g}) must not exceed cfg_scale ({cfg:g}): the ramp rises to cfg_scale")
        return value

    @property
    def frame_count(self) -> int:
        """Frames the delivered video has: exactly duration x fps."""
        return self.duration * self.fps

    def with_resolved_seed(self) -> "GenerationParams":
        """Return these params with a concrete seed, drawn at random when ``seed`` is -1."""
        if self.seed >= 0:
            return self
        return self.model_copy(update={"seed": secrets.randbelow(MAX_SEED + 1)})


def check_video_size(width: int, height: int, frames: int) -> None:
    """Raise ValueError when ``frames`` frames of ``width`` x ``height`` exceed :data:`MAX_VIDEO_PIXELS`."""
    pixels = width * height * frames
    if pixels > MAX_VIDEO_PIXELS:
        most = MAX_VIDEO_PIXELS // (width * height)
        raise ValueError(
            f"a {width}x{height} video of {frames} frames is {pixels:,} pixels, more than the {MAX_VIDEO_PIXELS:,}"
            f" allowed (8 s at 24 fps at 1280x720); at {width}x{height} ask for at most {most} frames"
            " (duration x fps), or a smaller resolution"
        )
