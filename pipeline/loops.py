"""Loops: turn a clip into exactly ``count`` frames that play seamlessly when repeated.

``none`` stretches the clip to ``count`` frames. ``pingpong`` plays the motion forward, then back,
showing each turning frame once. ``crossfade`` blends the end of the motion into its start, so the
step from the last frame to the first is as small as any other step. Every resampling goes through
``resample`` (``interpolate_to_count`` unless the caller passes another interpolator with the same
time mapping), so the result has exactly ``count`` frames whatever the clip's length.
"""

from collections.abc import Callable
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from pipeline.interpolate import interpolate_to_count

Frames = NDArray[np.uint8]
Resample = Callable[[Frames, int], Frames]
"""``resample(frames, count)``: exactly ``count`` frames, frame k at clip time ``k * (n - 1) / (count - 1)``."""

CROSSFADE_FRACTION = 0.25
"""Share of the loop spent blending: long enough that the weight moves little per frame, short
enough that most frames show one moment, not two superimposed."""


class LoopMode(StrEnum):
    NONE = "none"
    PINGPONG = "pingpong"
    CROSSFADE = "crossfade"


def loop(frames: Frames, mode: LoopMode | str, count: int, *, resample: Resample = interpolate_to_count) -> Frames:
    """Return exactly ``count`` uint8 frames (count, H, W, 3) of ``frames``' motion, looped as ``mode`` says.

    ``pingpong`` with ``count = L`` and ``M = L // 2``: frames ``0..M`` are the clip resampled to
    ``M + 1`` frames (its first and last frame included), and the way back fills ``M + 1..L - 1``.
    For even ``L`` the way back is the way forward reversed, so ``out[k] == out[L - k]`` for
    ``1 <= k < L`` (the ``N`` of "frame k equals frame N - k" is ``L``): played on repeat the
    sequence is the clip's first frame, forward to its last, back to the second, then the first
    again; neither turning frame shows twice. An odd ``L`` cannot be mirrored without showing one
    turning frame twice, so the way back takes ``M + 1`` steps instead of ``M`` (the clip resampled
    to ``M + 2`` frames, reversed, ends dropped): every frame still differs from its neighbours,
    and the return is ``M / (M + 1)`` as fast.

    ``crossfade``: the clip is resampled to ``L + F`` frames ``c`` (``F`` = a quarter of ``L``).
    ``out[k] = c[F + k]`` for ``k < L - F``; in the last ``F`` frames the motion's end
    ``c[L + j]`` fades into its start ``c[j]`` with weight ``(j + 1) / (F + 1)``. So ``out[-1]`` is
    mostly ``c[F - 1]`` and ``out[0]`` is ``c[F]``: one ordinary step of the motion apart.
    """
    chosen = _check_inputs(frames, mode, count)
    if chosen is LoopMode.NONE:
        return _to_count(frames, count, resample)
    if chosen is LoopMode.PINGPONG:
        return _pingpong(frames, count, resample)
    return _crossfade(frames, count, resample)


def _pingpong(frames: Frames, count: int, resample: Resample) -> Frames:
    half = count // 2
    forward = _to_count(frames, half + 1, resample)
    # An odd count takes one step more on the way back, so no frame is held at the far turn; see loop().
    back = forward[half - 1 : 0 : -1] if count % 2 == 0 else _to_count(frames, half + 2, resample)[half:0:-1]
    out: Frames = np.concatenate([forward, back])
    return out


def _crossfade(frames: Frames, count: int, resample: Resample) -> Frames:
    if count == 1:
        return _to_count(frames, 1, resample)
    fade = min(max(1, round(count * CROSSFADE_FRACTION)), count - 1)
    clip = _to_count(frames, count + fade, resample)
    out = np.empty((count, *frames.shape[1:]), dtype=np.uint8)
    out[: count - fade] = clip[fade:count]
    for j in range(fade):
        weight = (j + 1) / (fade + 1)
        blended = (1 - weight) * clip[count + j].astype(np.float32) + weight * clip[j].astype(np.float32)
        out[count - fade + j] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def _to_count(frames: Frames, count: int, resample: Resample) -> Frames:
    if frames.shape[0] == count:
        return frames.copy()
    out = resample(frames, count)
    if out.shape != (count, *frames.shape[1:]) or out.dtype != np.uint8:
        raise ValueError(f"resample returned {out.dtype} frames of shape {out.shape}; asked {count} like the input")
    return out


def _check_inputs(frames: Frames, mode: LoopMode | str, count: int) -> LoopMode:
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must have shape (N >= 1, H, W, 3), got shape {frames.shape}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    try:
        return LoopMode(mode)
    except ValueError:
        choices = ", ".join(m.value for m in LoopMode)
        raise ValueError(f"loop must be one of {choices}; got {mode!r}") from None
