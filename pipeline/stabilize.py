"""Video stabilisation: measure the camera's shake between frames, smooth its path, crop to hide it.

1. Global motion between consecutive frames: corners (Shi-Tomasi) tracked with pyramidal Lucas-Kanade,
   then a similarity (shift, rotation, uniform scale) fitted with RANSAC, so moving subjects are outliers.
2. The motions are chained into the camera's trajectory, one pose per frame relative to the first.
3. The trajectory is smoothed with the constant-velocity Kalman/RTS smoother (:mod:`pipeline.kalman`):
   steady pans and zooms survive, shake does not.
4. Each frame is warped from its measured pose to its smoothed one, with one constant zoom chosen so that
   every output pixel comes from inside its source frame (:func:`pipeline.camera.fit_zoom`). When that
   zoom would exceed ``max_crop_zoom`` the correction is scaled back until it fits.
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from pipeline.camera import fit_zoom, view_matrices_from, warp_views
from pipeline.kalman import smooth_constant_velocity

Frames = NDArray[np.uint8]
Floats = NDArray[np.float64]

STABILIZE_SMOOTHING = 400.0
"""Kalman/RTS smoothing of the trajectory (measurement-to-process noise ratio)."""

MAX_CROP_ZOOM = 1.2
"""Largest zoom spent on hiding borders; a shakier clip is corrected less rather than cropped more."""

_ESTIMATE_SIDE = 640
"""Motion is measured on frames scaled down to at most this side: plenty for a global fit, and fast."""

_STILL_PX = 0.01
"""Corrections that move no frame corner further than this are skipped: the clip is returned as is."""


@dataclass(frozen=True, eq=False)
class Stabilized:
    """The stabilised frames and how they were made.

    ``trajectory`` and ``smoothed`` are (n, 4): how the picture has moved in each frame since the first
    (the camera's motion seen from the content: shift x and y of the frame centre in pixels, turn in
    degrees, log zoom), as measured and after smoothing. ``crop_zoom`` is the
    zoom spent on hiding borders, ``strength`` the share of the correction applied (1 unless the crop
    limit forced less). ``matrices`` (n, 2, 3) take each output pixel to the source pixel it was sampled
    from, as ``cv2.warpAffine`` with ``WARP_INVERSE_MAP`` reads them.
    """

    frames: Frames
    trajectory: Floats
    smoothed: Floats
    crop_zoom: float
    strength: float
    matrices: Floats


def stabilize(
    frames: Frames,
    *,
    smoothing: float = STABILIZE_SMOOTHING,
    max_crop_zoom: float = MAX_CROP_ZOOM,
) -> Stabilized:
    """Frames with the camera shake removed, cropped so that no border shows; same shape and dtype."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must be uint8 (n, H, W, 3), got {getattr(frames, 'shape', type(frames))}")
    n, height, width, _ = frames.shape
    if width < 16 or height < 16:
        raise ValueError(f"frames must be at least 16x16 pixels, got {width}x{height}")
    if not math.isfinite(max_crop_zoom) or max_crop_zoom < 1.01:
        raise ValueError(f"max_crop_zoom must be >= 1.01, got {max_crop_zoom}")
    if not math.isfinite(smoothing) or smoothing < 0:
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing}")

    # 1-2. Measure frame-to-frame motion and chain it: poses[k] maps frame 0's centred pixels to frame k's.
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    poses = np.tile(np.eye(3), (n, 1, 1))
    factor = min(1.0, _ESTIMATE_SIDE / max(width, height))
    previous = _grey(frames[0], factor)
    for k in range(1, n):
        current = _grey(frames[k], factor)
        step = _centred(estimate_motion(previous, current), centre * factor)
        step[:2, 2] /= factor
        poses[k] = step @ poses[k - 1]
        previous = current
    trajectory = _parameters(poses)

    # 3. Smooth the trajectory.
    smoothed = smooth_constant_velocity(trajectory, smoothing)

    # 4. Warp each frame from its measured pose to the smoothed one; back off if the crop grows too big.
    def views(strength: float) -> tuple[Floats, Floats, float]:
        target = _matrices(trajectory + strength * (smoothed - trajectory))
        view = poses @ np.linalg.inv(target)  # smoothed frame pixel -> measured frame pixel
        linear, offset = view[:, :2, :2], view[:, :2, 2]
        return linear, offset, fit_zoom(linear, offset, width, height)

    strength = 1.0
    linear, offset, zoom = views(strength)
    if zoom > max_crop_zoom:
        low, high = 0.0, 1.0
        for _ in range(30):
            middle = (low + high) / 2.0
            if views(middle)[2] <= max_crop_zoom:
                low = middle
            else:
                high = middle
        strength = low
        linear, offset, zoom = views(strength)
    if _is_still(linear, offset, width, height):
        unchanged = view_matrices_from(np.tile(np.eye(2), (n, 1, 1)), np.zeros((n, 2)), 1.0, width, height)
        return Stabilized(frames.copy(), trajectory, smoothed, 1.0, strength, unchanged)
    matrices = view_matrices_from(linear, offset, zoom, width, height)
    return Stabilized(warp_views(frames, linear, offset, zoom), trajectory, smoothed, zoom, strength, matrices)


def estimate_motion(previous: NDArray[np.uint8], current: NDArray[np.uint8]) -> Floats:
    """The 2x3 similarity taking ``previous``'s pixels to ``current``'s (greyscale); identity if unsure."""
    identity: Floats = np.eye(2, 3)
    corners = cv2.goodFeaturesToTrack(previous, maxCorners=400, qualityLevel=0.01, minDistance=8, blockSize=7)
    if corners is None or len(corners) < 8:
        return identity
    # Start each track where the corner was (the same as no guess); OpenCV's stubs want an array here.
    tracked, status, _ = cv2.calcOpticalFlowPyrLK(
        previous, current, corners, corners.copy(), winSize=(21, 21), maxLevel=3, flags=cv2.OPTFLOW_USE_INITIAL_FLOW
    )
    found = status.ravel() == 1
    if int(found.sum()) < 8:
        return identity
    # RANSAC draws from OpenCV's per-thread generator: seed it so that a clip always stabilises the same.
    cv2.setRNGSeed(0)
    matrix, inliers = cv2.estimateAffinePartial2D(
        corners[found], tracked[found], method=cv2.RANSAC, ransacReprojThreshold=1.0, maxIters=2000, refineIters=10
    )
    if matrix is None or inliers is None or int(inliers.sum()) < 6:
        return identity
    result: Floats = matrix.astype(np.float64)
    return result


def _grey(frame: Frames, factor: float) -> NDArray[np.uint8]:
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if factor < 1.0:
        grey = cv2.resize(grey, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    return np.asarray(grey, dtype=np.uint8)


def _centred(matrix: Floats, centre: Floats) -> Floats:
    """The 3x3 form of a 2x3 pixel transform, re-expressed about the frame centre."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    to_centre = np.array([[1.0, 0.0, -centre[0]], [0.0, 1.0, -centre[1]], [0.0, 0.0, 1.0]])
    result: Floats = to_centre @ full @ np.linalg.inv(to_centre)
    return result


def _parameters(poses: Floats) -> Floats:
    """(n, 4) shift x, shift y, roll in degrees, log zoom of (n, 3, 3) similarity matrices."""
    a, c = poses[:, 0, 0], poses[:, 1, 0]
    return np.stack(
        [poses[:, 0, 2], poses[:, 1, 2], np.degrees(np.arctan2(c, a)), np.log(np.hypot(a, c))],
        axis=1,
    )


def _matrices(parameters: Floats) -> Floats:
    """Inverse of :func:`_parameters`."""
    angle = np.radians(parameters[:, 2])
    zoom = np.exp(parameters[:, 3])
    cos, sin = zoom * np.cos(angle), zoom * np.sin(angle)
    matrices = np.tile(np.eye(3), (len(parameters), 1, 1))
    matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 0, 2] = cos, -sin, parameters[:, 0]
    matrices[:, 1, 0], matrices[:, 1, 1], matrices[:, 1, 2] = sin, cos, parameters[:, 1]
    return matrices


def _is_still(linear: Floats, offset: Floats, width: int, height: int) -> bool:
    half = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    corners = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]]) * half
    moved = np.einsum("kij,cj->kci", linear, corners) + offset[:, None, :] - corners
    return bool(np.abs(moved).max() < _STILL_PX)
