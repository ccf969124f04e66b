"""Interpolation to an exact frame count: counts, identities, and motion that lands midway."""

import numpy as np
import pytest
from numpy.typing import NDArray

from pipeline.interpolate import interpolate_to_count

HEIGHT, WIDTH, SQUARE, TOP = 96, 160, 32, 32


def square_at(left: int) -> NDArray[np.uint8]:
    """A textured bright square with its left edge at ``left`` on a dark background."""
    texture = np.random.default_rng(7).integers(150, 256, (SQUARE, SQUARE, 3), dtype=np.uint8)
    frame = np.full((HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
    frame[TOP : TOP + SQUARE, left : left + SQUARE] = texture
    return frame


def bright_mask(frame: NDArray[np.uint8]) -> NDArray[np.bool_]:
    mask: NDArray[np.bool_] = frame.astype(np.int32).sum(axis=-1) > 3 * 100
    return mask


def centroid_x(frame: NDArray[np.uint8]) -> float:
    return float(np.nonzero(bright_mask(frame))[1].mean())


def random_frames(n: int, height: int = 16, width: int = 24, seed: int = 0) -> NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def test_midpoint_moves_the_square_halfway_without_ghosting() -> None:
    frames = np.stack([square_at(40), square_at(56)])
    middle = interpolate_to_count(frames, 3)[1]
    assert abs(centroid_x(middle) - centroid_x(square_at(48))) < 1.0
    # A cross-fade would leave two half-bright squares: twice the area, a mid-grey band, no full square.
    assert abs(int(bright_mask(middle).sum()) - SQUARE * SQUARE) < 0.05 * SQUARE * SQUARE
    grey_sum = middle.astype(np.int32).sum(axis=-1)
    assert int(((grey_sum > 3 * 60) & (grey_sum < 3 * 140)).sum()) < 0.05 * SQUARE * SQUARE
    assert np.abs(middle.astype(np.int32) - square_at(48)).mean() < 4.0


def test_quarter_positions_follow_the_motion() -> None:
    frames = np.stack([square_at(40), square_at(56), square_at(72)])
    out = interpolate_to_count(frames, 9)
    start = centroid_x(square_at(40))
    for k, frame in enumerate(out):
        assert abs(centroid_x(frame) - (start + 4 * k)) < 1.0, f"frame {k}"


@pytest.mark.parametrize(
    ("n", "count"),
    [(8, 32), (14, 96), (25, 4), (2, 2), (3, 7), (7, 3), (5, 5), (14, 14), (25, 192), (2, 100)],
)
def test_exact_count_and_native_frames_at_whole_positions(n: int, count: int) -> None:
    frames = random_frames(n)
    out = interpolate_to_count(frames, count)
    assert out.shape == (count, 16, 24, 3) and out.dtype == np.uint8
    assert np.array_equal(out[0], frames[0]) and np.array_equal(out[-1], frames[-1])
    for k in range(count):
        position, remainder = divmod(k * (n - 1), count - 1)
        if remainder == 0:
            assert np.array_equal(out[k], frames[position]), f"output {k} is native frame {position}"


def test_same_count_is_an_identical_copy() -> None:
    frames = random_frames(6)
    out = interpolate_to_count(frames, 6)
    assert np.array_equal(out, frames)
    assert not np.shares_memory(out, frames)


def test_single_frame_is_repeated() -> None:
    frames = random_frames(1)
    out = interpolate_to_count(frames, 5)
    assert out.shape == (5, 16, 24, 3)
    assert all(np.array_equal(frame, frames[0]) for frame in out)


def test_count_one_is_the_first_frame() -> None:
    frames = random_frames(4)
    out = interpolate_to_count(frames, 1)
    assert out.shape == (1, 16, 24, 3)
    assert np.array_equal(out[0], frames[0])


def test_downsampling_picks_evenly_spaced_frames() -> None:
    frames = random_frames(25)
    out = interpolate_to_count(frames, 4)
    for k, native in enumerate((0, 8, 16, 24)):
        assert np.array_equal(out[k], frames[native])


def test_static_clip_stays_static() -> None:
    frame = random_frames(1, 32, 48)[0]
    out = interpolate_to_count(np.stack([frame, frame]), 5)
    assert np.abs(out.astype(np.int32) - frame).max() <= 1


@pytest.mark.parametrize(
    ("frames", "count", "message"),
    [
        (np.zeros((2, 8, 8, 3), dtype=np.float32), 4, "uint8, got dtype float32"),
        (np.zeros((8, 8, 3), dtype=np.uint8), 4, "ndim 3"),
        (np.zeros((2, 8, 8, 4), dtype=np.uint8), 4, r"shape \(2, 8, 8, 4\)"),
        (np.zeros((0, 8, 8, 3), dtype=np.uint8), 4, "at least one frame"),
        (np.zeros((2, 16, 16, 3), dtype=np.uint8), 0, "count must be at least 1, got 0"),
        (np.zeros((2, 8, 20, 3), dtype=np.uint8), 4, "at least 16x16 pixels for optical flow, got 20x8"),
    ],
)
def test_bad_inputs_are_named(frames: NDArray[np.uint8], count: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        interpolate_to_count(frames, count)


def test_count_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="count must be an int, got float"):
        interpolate_to_count(random_frames(2), 3.0)  # type: ignore[arg-type]
