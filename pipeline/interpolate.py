"""Frame interpolation: stretch or shrink a clip to an exact frame count with optical flow.

Output frame ``k`` of ``count`` sits at native time ``k * (n - 1) / (count - 1)``. Whole positions are
native frames copied as they are; in-between ones come from the two native neighbours, by one of:

- ``dis`` (the default): dense OpenCV DIS flow both ways between the neighbours. The flow at the
  in-between time is found per pixel by fixed-point inversion of each neighbour's flow (the motion of
  the pixel that lands there, wherever it started, so large motion is sampled on the moving object, not
  beside it), keeping the hypothesis whose source pixel matches the other frame better. Both neighbours
  are then sampled bicubically along it and blended with occlusion-aware weights: a neighbour counts
  less where the other one's source pixel fails the forward-backward consistency check, i.e. is hidden
  in this neighbour.
- ``dis_v1``: the first method, kept for comparison: both neighbours warped along a linear blend of
  the two flows read at the output pixel (Super SloMo's starting estimate), bilinearly, blended by time.
- ``blend``: a plain cross-fade, no motion.

Flow is computed once per neighbour pair, one pair at a time, so memory stays at one pair of flow
fields whatever the clip length.

``bench/interpolation.py`` on real clips, frame i+g predicted from frames i and i+2g, ``dis`` minus
``dis_v1`` in PSNR, and its CPU time per predicted frame against ``dis_v1``'s:

    clip            g=1     g=2     g=4    CPU time
    bikes          +0.80   +0.41   +0.07   1.3x
    carphone       +0.21   +0.12   -0.06   1.3-1.5x
    bigbuckbunny   +0.09   +0.01   -0.09   1.1-1.2x

Stretching 14 frames to 96 (flow shared by seven frames) it takes 1.3x (bigbuckbunny), 1.4-1.8x (bikes)
and 1.9x (carphone) ``dis_v1``'s CPU time per frame: bicubic sampling, worth 0.2-0.4 dB, is much of
that. Nothing tried gets +1.0 dB over ``dis_v1``: motion measured from the true middle frame and made
symmetric gains only 1.4 / 0.9 / 0.4 dB over ``dis`` on bikes, 0.6 on bigbuckbunny and 0 on carphone,
whose middle frames sit off the straight path (hand-held shake: a smooth offset per frame is worth 4.5
dB there). The pairs either side do not predict that offset, so motion from four native frames was
measured and not kept (see the Interpolation paragraph of docs/ARCHITECTURE.md).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, get_args

import cv2
import numpy as np
from numpy.typing import NDArray

Frames = NDArray[np.uint8]
Method = Literal["dis", "dis_v1", "blend"]
_Flow = NDArray[np.float32]
_Plane = NDArray[np.float32]
_Pixel = TypeVar("_Pixel", np.uint8, np.float32)

METHODS: tuple[Method, ...] = get_args(Method)

MIN_SIDE = 16
"""Smallest frame width and height; OpenCV's DIS flow needs room for its patches."""

_MATCH_WINDOW = 5
"""Side of the box over which a flow vector's photometric error is averaged: one pixel is too noisy."""
_MATCH_SCALE = 30.0
"""Error (summed over RGB, 0-765) at which a source pixel's score falls to 1/e; measured flat from 15 to 60."""
_FIXED_POINT_STEPS = 3
"""Iterations of u = F(x - t u) from the linear estimate; 2, 3, 4 and 8 measured within 0.01 dB."""
_CONSISTENCY_PIXELS = 2.0
_CONSISTENCY_SHARE = 0.1
"""Forward-backward tolerance: 2 px plus 10 % of the motion (squared), as DIS is less exact on large motion."""
_OCCLUSION_FLOOR = 1.0
"""Weight a sample keeps when the check says it is hidden (1 when seen): halved, not dropped. The check is
right at true occlusions (a real patch sliding over a street: +1.6 dB at 1.0, +2.9 at 0.3) but also fires
on plain flow errors, where averaging both samples is safer (real clips: -0.1 dB at 0.3, +-0.02 at 1.0)."""


def interpolate_to_count(frames: Frames, count: int, *, method: Method = "dis") -> Frames:
    """Return exactly ``count`` uint8 frames (count, H, W, 3) spanning the motion of ``frames``.

    ``method`` picks how an in-between frame is made (see the module docstring); whole positions are
    always the native frames, copied.
    """
    _check_inputs(frames, count, method)
    n, height, width, _ = frames.shape
    out = np.empty((count, height, width, 3), dtype=np.uint8)
    if count == 1:
        out[0] = frames[0]
        return out
    if n == 1:
        out[:] = frames[0]
        return out

    make_pair = _pair_maker(method, height, width)
    pair: _Pair | None = None
    for k in range(count):
        # Exact integer arithmetic: a whole position must hit its native frame with no rounding drift.
        index, remainder = divmod(k * (n - 1), count - 1)
        if remainder == 0:
            out[k] = frames[index]
            continue
        if pair is None or pair.index != index:
            pair = make_pair(frames, index)
        out[k] = pair.at(remainder / (count - 1))
    return out


class _Pair(Protocol):
    """Two neighbouring native frames and what was computed once for them; ``at`` makes a frame between."""

    @property
    def index(self) -> int: ...

    def at(self, t: float) -> Frames:
        """The frame at fraction ``t`` (0 < t < 1) of the way from the first neighbour to the second."""
        ...


def _pair_maker(method: Method, height: int, width: int) -> Callable[[Frames, int], _Pair]:
    if method == "blend":
        return _BlendPair.between
    grid = _grid(height, width)
    dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    if method == "dis_v1":
        return lambda frames, index: _LinearFlowPair.between(dis, grid, frames, index)
    return lambda frames, index: _FlowPair.between(dis, grid, frames, index)


@dataclass(frozen=True)
class _BlendPair:
    index: int
    first: Frames
    second: Frames

    @classmethod
    def between(cls, frames: Frames, index: int) -> "_BlendPair":
        return cls(index, frames[index], frames[index + 1])

    def at(self, t: float) -> Frames:
        return _to_uint8((1 - t) * self.first.astype(np.float32) + t * self.second.astype(np.float32))


@dataclass(frozen=True)
class _LinearFlowPair:
    """``dis_v1``: the two flows, combined at the output pixel as if motion were locally uniform."""

    index: int
    first: Frames
    second: Frames
    forward: _Flow
    backward: _Flow
    grid: _Flow

    @classmethod
    def between(cls, dis: cv2.DISOpticalFlow, grid: _Flow, frames: Frames, index: int) -> "_LinearFlowPair":
        first, second = frames[index], frames[index + 1]
        forward, backward = _flows(dis, first, second)
        return cls(index, first, second, forward, backward, grid)

    def at(self, t: float) -> Frames:
        # Flow from time t back to each neighbour, from the two measured flows assuming linear
        # motion (the estimate Super SloMo starts from); exact where motion is locally uniform.
        to_first = -(1 - t) * t * self.forward + t * t * self.backward
        to_second = (1 - t) * (1 - t) * self.forward - t * (1 - t) * self.backward
        from_first = _sample(self.first, self.grid + to_first, cv2.INTER_LINEAR).astype(np.float32)
        from_second = _sample(self.second, self.grid + to_second, cv2.INTER_LINEAR).astype(np.float32)
        return _to_uint8((1 - t) * from_first + t * from_second)


@dataclass(frozen=True)
class _FlowPair:
    """``dis``: per neighbour pair, the flows both ways and two per-pixel checks of them, at half size.

    DIS's medium preset stops at half resolution and upsamples, so finding the motion at half size loses
    little and costs a quarter; only the final sampling of the two frames runs at full size.
    """

    index: int
    first: Frames
    second: Frames
    forward: _Flow
    """Per (half-size) pixel of ``first``, its displacement to ``second``, in half-size pixels."""
    backward: _Flow
    match_first: _Plane
    """Per pixel of ``first``, near 1 where ``forward`` lands on the same colours in ``second``."""
    match_second: _Plane
    seen_first: _Plane
    """Per pixel of ``first``, near 1 where forward and backward flow agree: it is visible in ``second``."""
    seen_second: _Plane
    grid: _Flow
    """Pixel coordinates at full size."""
    small_grid: _Flow
    """Pixel coordinates at half size."""

    @classmethod
    def between(cls, dis: cv2.DISOpticalFlow, grid: _Flow, frames: Frames, index: int) -> "_FlowPair":
        first, second = frames[index], frames[index + 1]
        forward, backward = (_shrink_flow(flow) for flow in _flows(dis, first, second))
        small_first, small_second = _shrink(first), _shrink(second)
        small_grid = _grid(*forward.shape[:2])
        return cls(
            index,
            first,
            second,
            forward,
            backward,
            _match(small_first, small_second, small_grid + forward),
            _match(small_second, small_first, small_grid + backward),
            _seen(forward, backward, small_grid),
            _seen(backward, forward, small_grid),
            grid,
            small_grid,
        )

    def at(self, t: float) -> Frames:
        grid = self.small_grid
        # 1. Two hypotheses for the motion u through each output pixel x: that of the first frame's pixel
        #    landing on x (u = forward(x - t u)) and that of the second's (u = -backward(x + (1 - t) u)).
        #    Fixed-point iteration from the linear estimate finds where each came from.
        linear = (1 - t) * self.forward - t * self.backward
        negated_backward = -self.backward
        from_first, from_second = linear, linear
        for _ in range(_FIXED_POINT_STEPS):
            from_first = _sample(self.forward, _along(grid, from_first, -t), cv2.INTER_LINEAR)
            from_second = _sample(negated_backward, _along(grid, from_second, 1 - t), cv2.INTER_LINEAR)
        # 2. Keep, per pixel, the hypothesis whose source pixel matches the other frame better, weighting
        #    the nearer frame more: where objects cross, the visible one is the one that matches.
        score_first = (1 - t) * _sample(self.match_first, _along(grid, from_first, -t), cv2.INTER_LINEAR)
        score_second = t * _sample(self.match_second, _along(grid, from_second, 1 - t), cv2.INTER_LINEAR)
        motion = np.where((score_first >= score_second)[..., None], from_first, from_second)
        # 3. Occlusion-aware weights: if the first frame's source pixel is not seen in the second frame,
        #    the second frame's sample shows whatever hides it there, and counts less (and vice versa).
        seen_by_second = _sample(self.seen_second, _along(grid, motion, 1 - t), cv2.INTER_LINEAR)
        seen_by_first = _sample(self.seen_first, _along(grid, motion, -t), cv2.INTER_LINEAR)
        weight_first = _grow((1 - t) * (seen_by_second + _OCCLUSION_FLOOR), self.first.shape)
        weight_second = _grow(t * (seen_by_first + _OCCLUSION_FLOOR), self.first.shape)
        # 4. Both neighbours sampled at full size along the motion; bicubic keeps detail that bilinear
        #    sampling blurs (+0.2 to +0.4 dB, measured). Float maps straight into remap: the same PSNR as
        #    convertMaps' fixed-point maps, without their extra pass.
        motion = _grow_flow(motion, self.first.shape)
        sample_first = _sample(self.first, _along(self.grid, motion, -t), cv2.INTER_CUBIC)
        sample_second = _sample(self.second, _along(self.grid, motion, 1 - t), cv2.INTER_CUBIC)
        blended = cv2.blendLinear(sample_first, sample_second, weight_first, weight_second)
        return np.asarray(blended, dtype=np.uint8)


def _shrink(frame: Frames) -> Frames:
    height, width = frame.shape[:2]
    return np.asarray(cv2.resize(frame, (width // 2, height // 2), interpolation=cv2.INTER_AREA), dtype=np.uint8)


def _shrink_flow(flow: _Flow) -> _Flow:
    height, width = flow.shape[:2]
    small = cv2.resize(flow, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    return np.asarray(small * np.array([(width // 2) / width, (height // 2) / height], np.float32), np.float32)


def _grow(plane: _Plane, shape: tuple[int, ...]) -> _Plane:
    return np.asarray(cv2.resize(plane, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR), dtype=np.float32)


def _grow_flow(flow: _Flow, shape: tuple[int, ...]) -> _Flow:
    height, width = flow.shape[:2]
    # Vectors scaled before resizing: a quarter of the multiplications.
    scaled = flow * np.array([shape[1] / width, shape[0] / height], np.float32)
    return np.asarray(cv2.resize(scaled, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR), np.float32)


def _flows(dis: cv2.DISOpticalFlow, first: Frames, second: Frames) -> tuple[_Flow, _Flow]:
    grey_first = cv2.cvtColor(first, cv2.COLOR_RGB2GRAY)
    grey_second = cv2.cvtColor(second, cv2.COLOR_RGB2GRAY)
    # OpenCV's stubs omit that flow may be None (DIS allocates it); a preallocated buffer segfaulted.
    forward = np.asarray(dis.calc(grey_first, grey_second, None), dtype=np.float32)  # type: ignore[call-overload]
    backward = np.asarray(dis.calc(grey_second, grey_first, None), dtype=np.float32)  # type: ignore[call-overload]
    return forward, backward


def _match(source: Frames, target: Frames, target_map: _Flow) -> _Plane:
    """Per source pixel, exp(-error / scale) of the box-averaged colour error against ``target`` at the map."""
    landed = _sample(target, target_map, cv2.INTER_LINEAR)
    error = cv2.absdiff(source, landed).astype(np.float32).sum(axis=-1)
    error = cv2.boxFilter(error, -1, (_MATCH_WINDOW, _MATCH_WINDOW))
    return np.asarray(np.exp(-error / _MATCH_SCALE), dtype=np.float32)


def _seen(flow: _Flow, other: _Flow, grid: _Flow) -> _Plane:
    """Per pixel, near 1 where following ``flow`` then ``other`` comes back: forward-backward consistency."""
    round_trip = flow + _sample(other, grid + flow, cv2.INTER_LINEAR)
    miss = np.square(round_trip).sum(axis=-1)
    tolerance = _CONSISTENCY_PIXELS**2 + _CONSISTENCY_SHARE * np.square(flow).sum(axis=-1)
    return np.asarray(np.exp(-miss / tolerance), dtype=np.float32)


def _sample(image: NDArray[_Pixel], coordinates: NDArray[np.floating[Any]], interpolation: int) -> NDArray[_Pixel]:
    """``image`` read at the absolute (x, y) ``coordinates`` (float32, H x W x 2), edges replicated."""
    # One two-channel map and no second one; OpenCV's stubs omit that map2 may be None.
    sampled = cv2.remap(image, coordinates, None, interpolation, borderMode=cv2.BORDER_REPLICATE)  # type: ignore[call-overload]
    return np.asarray(sampled, dtype=image.dtype)


def _along(grid: _Flow, motion: _Flow, step: float) -> _Flow:
    """``grid + step * motion`` in one pass: the coordinates a fraction ``step`` of the way along ``motion``."""
    return np.asarray(cv2.scaleAdd(motion, step, grid), dtype=np.float32)


def _grid(height: int, width: int) -> _Flow:
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return np.stack([grid_x, grid_y], axis=-1)


def _to_uint8(image: NDArray[np.floating[Any]]) -> Frames:
    rounded: Frames = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return rounded


def _check_inputs(frames: Frames, count: int, method: str) -> None:
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
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
