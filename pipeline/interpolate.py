"""Frame interpolation: stretch or shrink a clip to an exact frame count with optical flow.

Output frame ``k`` of ``count`` sits at native time ``k * (n - 1) / (count - 1)``. Whole positions are
native frames copied as they are; in-between ones warp both neighbours toward that time along dense
flow (OpenCV DIS on greyscale) and blend them. Flow is computed once per neighbour pair, one pair at
a time, so memory stays at one pair of flow fields whatever the clip length.
"""

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

Frames = NDArray[np.uint8]
_Flow = NDArray[np.float32]

MIN_SIDE = 16
"""Smallest frame width and height; OpenCV's DIS flow needs room for its patches."""


def interpolate_to_count(frames: Frames, count: int) -> Frames:
    """Return exactly ``count`` uint8 frames (count, H, W, 3) spanning the motion of ``frames``."""
    _check_inputs(frames, count)
    n, height, width, _ = frames.shape
    out = np.empty((count, height, width, 3), dtype=np.uint8)
    if count == 1:
        out[0] = frames[0]
        return out
    if n == 1:
        out[:] = frames[0]
        return out

    dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    pair: _PairFlow | None = None
    for k in range(count):
        # Exact integer arithmetic: a whole position must hit its native frame with no rounding drift.
        index, remainder = divmod(k * (n - 1), count - 1)
        if remainder == 0:
            out[k] = frames[index]
            continue
        if pair is None or pair.index != index:
            pair = _PairFlow.between(dis, frames, index)
        out[k] = pair.at(remainder / (count - 1), grid_x, grid_y)
    return out


@dataclass(frozen=True)
class _PairFlow:
    """Two neighbouring frames and the dense flow between them, both ways."""

    index: int
    first: Frames
    second: Frames
    forward: _Flow
    backward: _Flow

    @classmethod
    def between(cls, dis: cv2.DISOpticalFlow, frames: Frames, index: int) -> "_PairFlow":
        first, second = frames[index], frames[index + 1]
        grey_first = cv2.cvtColor(first, cv2.COLOR_RGB2GRAY)
        grey_second = cv2.cvtColor(second, cv2.COLOR_RGB2GRAY)
        # OpenCV's stubs omit that flow may be None (DIS allocates it); a preallocated buffer segfaulted.
        forward = np.asarray(dis.calc(grey_first, grey_second, None), dtype=np.float32)  # type: ignore[call-overload]
        backward = np.asarray(dis.calc(grey_second, grey_first, None), dtype=np.float32)  # type: ignore[call-overload]
        return cls(index, first, second, forward, backward)

    def at(self, t: float, grid_x: _Flow, grid_y: _Flow) -> Frames:
        """The frame at fraction ``t`` (0 < t < 1) of the way from ``first`` to ``second``."""
        # Flow from time t back to each neighbour, from the two measured flows assuming linear
        # motion (the estimate Super SloMo starts from); exact where motion is locally uniform.
        to_first = -(1 - t) * t * self.forward + t * t * self.backward
        to_second = (1 - t) * (1 - t) * self.forward - t * (1 - t) * self.backward
        from_first = _warp(self.first, to_first, grid_x, grid_y)
        from_second = _warp(self.second, to_second, grid_x, grid_y)
        blended = (1 - t) * from_first + t * from_second
        return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _warp(frame: Frames, flow: _Flow, grid_x: _Flow, grid_y: _Flow) -> NDArray[np.float32]:
    map_x = grid_x + flow[..., 0]
    map_y = grid_y + flow[..., 1]
    warped = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(warped, dtype=np.float32)


def _check_inputs(frames: Frames, count: int) -> None:
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (n, H, W, 3), got ndim {frames.ndim} shape {frames.shape}")
    if frames.shape[0] < 1:
        raise ValueError(f"frames must hold at least one frame, got shape {frames.shape}")
    if frames.shape[1] < MIN_SIDE or frames.shape[2] < MIN_SIDE:
        raise ValueError(
            f"frames must be at least {MIN_SIDE}x{MIN_SIDE} pixels for optical flow, "
            f"got {frames.shape[2]}x{frames.shape[1]}"
        )
    if isinstance(count, bool) or not isinstance(count, int | np.integer):
        raise TypeError(f"count must be an int, got {type(count).__name__}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
