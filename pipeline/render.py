"""From native frames to the delivered frames: stabilise, loop/interpolate, then move the camera.

The order is fixed and recorded here so every caller (the decode stage, ``i2v interpolate``, the
``still`` model) makes the same video:

1. ``stabilize`` (optional) works on the native frames: it removes shake from the generated motion,
   measured where it was generated, before interpolation spreads it over more frames.
2. ``loop`` resamples the native frames to exactly ``count`` frames with the chosen interpolator
   (``none`` just stretches), as :mod:`pipeline.loops` notes: loops are applied to native frames so
   the interpolator, not a second resampling, makes every in-between frame.
3. The camera move parsed from the motion prompt is applied last, to the delivered frames, so a run
   with a prompt equals the same run without one warped by the recorded path.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from pipeline.camera import CameraMove, CameraPath, apply_camera, camera_path, parse_motion_prompt
from pipeline.interpolate import interpolate_to_count
from pipeline.loops import loop

if TYPE_CHECKING:
    from pipeline.rife import RifeModel

Frames = NDArray[np.uint8]
Resample = Callable[[Frames, int], Frames]


@dataclass(frozen=True, eq=False)
class Rendered:
    """The delivered frames and the decisions recorded with them."""

    frames: Frames
    camera: CameraMove
    path: CameraPath
    stabilized: bool


def resampler(interpolator: str, rife: "RifeModel | None" = None) -> Resample:
    """``frames, count -> count frames`` for ``dis`` or ``rife`` (which needs its loaded model)."""
    if interpolator == "dis":
        return interpolate_to_count
    if interpolator == "rife":
        if rife is None:
            raise ValueError("interpolator 'rife' needs loaded RIFE weights")
        from pipeline.rife import rife_to_count

        model = rife
        return lambda frames, count: rife_to_count(frames, count, model)
    raise ValueError(f"interpolator must be 'dis' or 'rife', got {interpolator!r}")


def render(
    native: Frames,
    count: int,
    *,
    resample: Resample = interpolate_to_count,
    loop_mode: str = "none",
    motion_prompt: str = "",
    stabilize: bool = False,
) -> Rendered:
    """Exactly ``count`` frames from ``native`` frames (n, H, W, 3): stabilise, loop, camera (see module)."""
    frames = native
    if stabilize and native.shape[0] > 1:
        from pipeline.stabilize import stabilize as stabilise

        frames = stabilise(native).frames
    frames = loop(frames, loop_mode, count, resample=resample)
    move = parse_motion_prompt(motion_prompt)
    path = camera_path(move, count)
    if not path.is_identity:
        frames = apply_camera(frames, path)
    if frames.shape[0] != count:
        raise AssertionError(f"rendered {frames.shape[0]} frames, not {count}")
    return Rendered(frames=frames, camera=move, path=path, stabilized=stabilize)
