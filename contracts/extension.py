"""Extending a clip: a new job made from a finished job's last frame, whose video is the parent's frames
followed by the new ones, the shared frame once.

The new job's parameters describe the new segment only (its ``duration``, steps, seed, motion): that is
what is generated and what is priced. The parent's frames ride along by reference (:class:`Extension` on
the job's spec): ingest takes the last one as the picture, decode makes ``duration x fps + 1`` frames
starting from it, and mux puts the parent's frames before the new ones, dropping the new segment's first
frame, which stands where the parent's last one already is. So the video has ``parent + duration x fps``
frames and lasts the parent's duration plus the segment's.

What must match the parent for the frames to follow on is inherited and cannot be changed: the model, the
frame rate, the size, the format and quality. A request naming one of them with another value is refused
in one line naming the field; naming the parent's own value is fine. A looped or preset segment would not
continue the clip, so ``loop`` is ``none`` and ``preset`` empty.
"""

import json
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.params import MAX_VIDEO_PIXELS, GenerationParams
from contracts.refs import ObjectRef

EXTENSION_CHANGES = (
    "duration",
    "seed",
    "steps",
    "motion_bucket_id",
    "motion_prompt",
    "augmentation_level",
    "cfg_scale",
    "min_cfg",
    "fps_conditioning",
    "interpolator",
    "stabilize",
)
"""The parameters an extension may set; the others are the parent's (the seed is drawn afresh unless given)."""


class Extension(BaseModel):
    """The job a new job extends: where its whole video's frames are, and their count and size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: Annotated[str, Field(pattern=r"^[a-z0-9_-]{6,64}$")]
    generation: Annotated[int, Field(ge=0)]
    frames: ObjectRef = Field(description="the parent's video frame by frame, lossless (uint8 safetensors)")
    frame_count: Annotated[int, Field(ge=1)]
    width: Annotated[int, Field(ge=64)]
    height: Annotated[int, Field(ge=64)]


class ExtensionRefused(ValueError):
    """The request cannot extend this parent; the message is one line naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def fixed_by_parent(parent: GenerationParams, width: int, height: int) -> dict[str, object]:
    """The parameters an extension takes from its parent (or fixes), as JSON values."""
    return {
        "model": parent.model,
        "fps": parent.fps,
        "resolution": f"{width}x{height}",
        "format": parent.format,
        "quality": parent.quality,
        "loop": "none",
        "preset": "",
    }


def extension_params(
    parent: GenerationParams, width: int, height: int, parent_frames: int, changes: Mapping[str, Any]
) -> GenerationParams:
    """The new segment's parameters: the parent's, with ``changes`` on top and a fresh seed unless one is
    given. :class:`ExtensionRefused` for a field an extension cannot set, or a video past
    :data:`~contracts.params.MAX_VIDEO_PIXELS`; pydantic's ValidationError for a value out of its range.
    JSON types are strict, as on submit (``"duration": "2"`` is refused)."""
    fixed = fixed_by_parent(parent, width, height)
    for name, value in changes.items():
        if name in fixed:
            given = str(value) if name == "resolution" and value is not None else value
            if given != fixed[name]:
                why = "its parent's" if name not in ("loop", "preset") else "always"
                raise ExtensionRefused(
                    name, f"{name}: an extension keeps {why} {fixed[name]!r}; leave {name} out (got {value!r})"
                )
        elif name not in EXTENSION_CHANGES:
            raise ExtensionRefused(name, f"{name}: not a parameter of an extension")
    values: dict[str, Any] = parent.model_dump(mode="json")
    values.update({"seed": -1, "loop": "none", "preset": "", "resolution": {"width": width, "height": height}})
    values.update({k: v for k, v in changes.items() if k not in fixed})
    params = GenerationParams.model_validate_json(json.dumps(values), strict=True)
    check_extended_size(width, height, parent_frames, params.frame_count)
    return params


def check_extended_size(width: int, height: int, parent_frames: int, new_frames: int) -> None:
    """Refuse an extended video past :data:`~contracts.params.MAX_VIDEO_PIXELS` (what mux holds at once)."""
    total = parent_frames + new_frames
    if width * height * total > MAX_VIDEO_PIXELS:
        room = MAX_VIDEO_PIXELS // (width * height) - parent_frames
        more = f"at most {room} more frames (duration x fps)" if room > 0 else "no more frames"
        raise ExtensionRefused(
            "duration",
            f"duration: the extended video would be {total} frames at {width}x{height}, past the"
            f" {MAX_VIDEO_PIXELS:,} pixels allowed (8 s at 24 fps at 1280x720); this clip takes {more}",
        )
