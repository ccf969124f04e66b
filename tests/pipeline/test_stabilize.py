"""Stabilisation on a synthetically shaken real picture: the shake goes, a steady pan stays, no border
shows; a still clip stays still. Also the Kalman/RTS smoother it (and the camera path) relies on."""

import itertools

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from pipeline.kalman import smooth_constant_velocity
from pipeline.stabilize import MAX_CROP_ZOOM, stabilize
from tests.pipeline.pictures import Frames, harbor, warped_with_magenta_border

COUNT = 24
DRIFT_PX = 1.0
"""The camera's intended motion in the shaken clips: a steady pan to the right, pixels per frame."""


def shaken(picture: Frames, shake_px: float = 3.0, shake_deg: float = 0.6, seed: int = 3) -> Frames:
    """Crops (5/8 of each side) of ``picture`` along a steady pan, each shifted and turned at random.

    Every crop lies well inside the picture, so the input itself shows no border.
    """
    return shaken_with_path(picture, shake_px, shake_deg, seed)[0]


def shaken_with_path(
    picture: Frames, shake_px: float = 3.0, shake_deg: float = 0.6, seed: int = 3
) -> tuple[Frames, NDArray[np.float64]]:
    """:func:`shaken`, and the crops' centres, (n, 2) x and y (the camera's true path)."""
    rng = np.random.default_rng(seed)
    height, width = picture.shape[:2]
    out_w, out_h = width * 5 // 8, height * 5 // 8
    out_centre = np.array([(out_w - 1) / 2.0, (out_h - 1) / 2.0])
    frames, path = [], []
    for k in range(COUNT):
        jitter_x, jitter_y = rng.normal(0.0, shake_px, 2)
        angle = np.radians(rng.normal(0.0, shake_deg))
        centre = np.array([(width - 1) / 2.0 + DRIFT_PX * (k - COUNT / 2) + jitter_x, (height - 1) / 2.0 + jitter_y])
        turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        matrix = np.hstack([turn, (centre - turn @ out_centre)[:, None]])
        frames.append(cv2.warpAffine(picture, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
        path.append(centre)
    return np.stack(frames), np.array(path)


def frame_motions(frames: Frames) -> NDArray[np.float64]:
    """(n - 1, 3) centre shift x, y in pixels and turn in degrees between consecutive frames, by ECC.

    Independent of the stabiliser's own feature tracking; measured at half size for speed.
    """
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6)
    greys = [
        np.asarray(cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), None, fx=0.5, fy=0.5), dtype=np.float32)
        for f in frames
    ]
    motions = []
    for first, second in itertools.pairwise(greys):
        start = np.eye(2, 3, dtype=np.float32)
        _, warp = cv2.findTransformECC(first, second, start, cv2.MOTION_EUCLIDEAN, criteria, None)
        # The shift of the frame's centre, so that a turn adds nothing to it.
        centre = np.array([(first.shape[1] - 1) / 2.0, (first.shape[0] - 1) / 2.0])
        shift = warp[:, :2] @ centre + warp[:, 2] - centre
        motions.append([2 * shift[0], 2 * shift[1], np.degrees(np.arctan2(warp[1, 0], warp[0, 0]))])
    return np.array(motions)


def jitter(motions: NDArray[np.float64]) -> tuple[float, float]:
    """Spread of the frame-to-frame motion: shift in pixels (x and y together) and turn in degrees."""
    return float(np.hypot(motions[:, 0].std(), motions[:, 1].std())), float(motions[:, 2].std())


def test_shake_is_reduced_by_more_than_half_and_the_pan_is_kept(picture: Frames) -> None:
    frames, path = shaken_with_path(picture)
    result = stabilize(frames)
    assert result.frames.shape == frames.shape and result.frames.dtype == np.uint8
    assert 1.0 < result.crop_zoom <= MAX_CROP_ZOOM and result.strength == 1.0
    before, after = frame_motions(frames), frame_motions(result.frames)
    (shift_before, turn_before), (shift_after, turn_after) = jitter(before), jitter(after)
    assert shift_after <= 0.5 * shift_before, f"shift jitter {shift_before:.2f} -> {shift_after:.2f} px"
    assert turn_after <= 0.5 * turn_before, f"turn jitter {turn_before:.3f} -> {turn_after:.3f} deg"
    # Measured: about 95% less of both. The steady pan survives: the content moves against the camera
    # at the speed of a line fitted to the shaken path (about DRIFT_PX across, 0 down), enlarged by the crop.
    assert shift_after <= 0.15 * shift_before and turn_after <= 0.15 * turn_before
    pan_velocity = np.polyfit(np.arange(COUNT), path, 1)[0]
    assert pan_velocity == pytest.approx([DRIFT_PX, 0.0], abs=0.25)
    assert after[:, :2].mean(axis=0) == pytest.approx(-pan_velocity * result.crop_zoom, abs=0.1)


def test_no_border_shows() -> None:
    # The same warp with a magenta border instead of the reflecting safety net gives the same bytes.
    frames = shaken(harbor(), shake_px=6.0, shake_deg=1.5)
    result = stabilize(frames)
    height, width = frames.shape[1:3]
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    pixels = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    for k, matrix in enumerate(result.matrices):
        source = matrix @ pixels
        assert source[0].min() >= 0 and source[0].max() <= width - 1, f"frame {k}"
        assert source[1].min() >= 0 and source[1].max() <= height - 1, f"frame {k}"
        assert np.array_equal(result.frames[k], warped_with_magenta_border(frames[k], matrix)), f"frame {k}"


def test_a_very_shaky_clip_is_corrected_less_rather_than_cropped_more() -> None:
    frames = shaken(harbor(), shake_px=12.0, shake_deg=2.0)
    result = stabilize(frames, max_crop_zoom=1.08)
    assert result.crop_zoom <= 1.08 + 1e-9 and 0.0 < result.strength < 1.0
    shift_before, _ = jitter(frame_motions(frames))
    shift_after, _ = jitter(frame_motions(result.frames))
    assert shift_after < shift_before


def test_a_still_clip_stays_still() -> None:
    frames = np.repeat(shaken(harbor(), shake_px=0.0, shake_deg=0.0)[:1], 8, axis=0)
    result = stabilize(frames)
    assert np.array_equal(result.frames, frames) and result.crop_zoom == 1.0
    assert np.allclose(result.trajectory, 0.0)
    # With sensor noise the clip may be nudged by a hair, no more.
    noise = np.random.default_rng(5).normal(0.0, 2.0, frames.shape)
    noisy = np.clip(frames + noise, 0, 255).astype(np.uint8)
    result = stabilize(noisy)
    assert result.crop_zoom < 1.01
    assert np.abs(frame_motions(result.frames)).max() < 0.1


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="uint8"):
        stabilize(np.zeros((3, 32, 32, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="at least 16x16"):
        stabilize(np.zeros((3, 8, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="max_crop_zoom"):
        stabilize(np.zeros((3, 32, 32, 3), dtype=np.uint8), max_crop_zoom=1.0)


def test_single_frame_is_returned_as_is() -> None:
    frame = harbor()[None]
    result = stabilize(frame)
    assert np.array_equal(result.frames, frame) and result.trajectory.shape == (1, 4)


# --- the Kalman/RTS smoother ---------------------------------------------------------------------


def test_smoother_keeps_a_straight_line_and_removes_noise() -> None:
    line = 3.0 + 0.7 * np.arange(40.0)
    assert np.allclose(smooth_constant_velocity(line, 400.0), line, atol=1e-5)
    noisy = line + np.random.default_rng(0).normal(0.0, 2.0, line.shape)
    smoothed = smooth_constant_velocity(noisy, 400.0)
    assert np.abs(smoothed - line).std() < 0.4 * np.abs(noisy - line).std()
    assert np.array_equal(smooth_constant_velocity(noisy, 0.0), noisy)


def test_smoother_treats_columns_independently() -> None:
    rng = np.random.default_rng(1)
    columns = rng.normal(size=(30, 3))
    together = smooth_constant_velocity(columns, 10.0)
    for j in range(3):
        assert np.allclose(together[:, j], smooth_constant_velocity(columns[:, j], 10.0))
    with pytest.raises(ValueError, match="smoothing"):
        smooth_constant_velocity(columns, -1.0)
    with pytest.raises(ValueError, match="finite"):
        smooth_constant_velocity(np.array([0.0, np.nan, 1.0]), 1.0)
