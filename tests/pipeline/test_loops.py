"""Loops on a real photo moved by a camera: exact counts, mirror symmetry, seamless wraps."""

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from pipeline.interpolate import interpolate_to_count
from pipeline.loops import LoopMode, loop

HARBOR = Path(__file__).resolve().parents[2] / "examples" / "harbor.png"
Frames = NDArray[np.uint8]


def harbor_clip(count: int, width: int = 96, height: int = 64) -> Frames:
    """The harbor photo under a camera that zooms in by a quarter while panning right: real texture, real motion."""
    photo = Image.open(HARBOR).convert("RGB")
    frames = []
    for i in range(count):
        t = i / max(count - 1, 1)
        scale = 1 - 0.25 * t
        box_w, box_h = photo.width * scale, photo.height * scale
        left = (photo.width - box_w) * (0.2 + 0.6 * t)
        top = (photo.height - box_h) / 2
        box = (left, top, left + box_w, top + box_h)
        frames.append(np.asarray(photo.resize((width, height), Image.Resampling.BICUBIC, box=box)))
    return np.stack(frames)


def psnr(a: Frames, b: Frames) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def occurrences(frames: Frames, frame: Frames) -> int:
    return sum(1 for f in frames if np.array_equal(f, frame))


def cyclic_neighbours_differ(frames: Frames) -> bool:
    """No frame is shown twice in a row, including across the wrap from the last frame to the first."""
    return all(not np.array_equal(frames[k], frames[(k + 1) % len(frames)]) for k in range(len(frames)))


class RecordingResample:
    """A resampler that records the counts it was asked for and delegates to the real one."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def __call__(self, frames: Frames, count: int) -> Frames:
        self.counts.append(count)
        return interpolate_to_count(frames, count)


@pytest.fixture(scope="module")
def clip() -> Frames:
    return harbor_clip(9)


def test_pingpong_even_count_mirrors_without_repeating_the_turns(clip: Frames) -> None:
    out = loop(clip, "pingpong", 24)
    assert out.shape == (24, *clip.shape[1:]) and out.dtype == np.uint8
    # N = L = 24: frame k equals frame 24 - k.
    for k in range(1, 24):
        assert np.array_equal(out[k], out[24 - k]), k
    # The way forward is the whole clip resampled to 13 frames: first and last native frames included.
    assert np.array_equal(out[:13], interpolate_to_count(clip, 13))
    assert np.array_equal(out[0], clip[0]) and np.array_equal(out[12], clip[-1])
    assert occurrences(out, clip[0]) == 1 and occurrences(out, clip[-1]) == 1
    assert cyclic_neighbours_differ(out)


def test_pingpong_odd_count_returns_one_step_slower_instead_of_holding_a_frame(clip: Frames) -> None:
    out = loop(clip, LoopMode.PINGPONG, 25)
    assert out.shape[0] == 25
    assert np.array_equal(out[:13], interpolate_to_count(clip, 13))
    assert np.array_equal(out[13:], interpolate_to_count(clip, 14)[12:0:-1])
    assert occurrences(out, clip[0]) == 1 and occurrences(out, clip[-1]) == 1
    assert cyclic_neighbours_differ(out)


def test_pingpong_uses_the_clip_as_is_when_it_already_has_the_forward_length(clip: Frames) -> None:
    resample = RecordingResample()
    out = loop(clip, "pingpong", 16, resample=resample)
    assert resample.counts == []
    assert np.array_equal(out, np.concatenate([clip, clip[7:0:-1]]))


def test_crossfade_last_frame_flows_into_the_first(clip: Frames) -> None:
    out = loop(clip, "crossfade", 24)
    plain = loop(clip, "none", 24)
    assert out.shape == plain.shape == (24, *clip.shape[1:])
    # Without the fade the wrap jumps from the end of the camera move back to its start.
    assert psnr(plain[-1], plain[0]) < 20
    wrap = psnr(out[-1], out[0])
    assert wrap >= 30
    # The wrap is no bigger a step than the steps inside the loop.
    steps = [psnr(out[k], out[k + 1]) for k in range(23)]
    assert wrap >= min(steps) - 1.0


def test_crossfade_plays_the_motion_then_blends_its_end_into_its_start(clip: Frames) -> None:
    resample = RecordingResample()
    out = loop(clip, "crossfade", 24, resample=resample)
    assert resample.counts == [30]  # 24 frames plus a fade of 6
    stretched = interpolate_to_count(clip, 30)
    assert np.array_equal(out[:18], stretched[6:24])
    for j in range(6):
        weight = (j + 1) / 7
        expected = (1 - weight) * stretched[24 + j].astype(np.float64) + weight * stretched[j].astype(np.float64)
        assert np.max(np.abs(out[18 + j].astype(np.float64) - expected)) <= 0.5 + 1e-6


@pytest.mark.parametrize("mode", list(LoopMode))
@pytest.mark.parametrize("count", [1, 2, 3, 7, 24, 25])
def test_every_mode_keeps_exactly_count_frames(clip: Frames, mode: LoopMode, count: int) -> None:
    out = loop(clip[:5], mode, count)
    assert out.shape == (count, *clip.shape[1:]) and out.dtype == np.uint8


def test_none_stretches_to_count_and_leaves_a_clip_of_that_length_alone(clip: Frames) -> None:
    assert np.array_equal(loop(clip, "none", 17), interpolate_to_count(clip, 17))
    same = loop(clip, "none", 9)
    assert np.array_equal(same, clip) and same is not clip


def test_a_single_frame_loops_to_a_still() -> None:
    still = harbor_clip(1)
    for mode in LoopMode:
        assert np.array_equal(loop(still, mode, 4), np.repeat(still, 4, axis=0))


@pytest.mark.parametrize(
    ("frames", "mode", "count", "message"),
    [
        (
            np.zeros((2, 16, 16, 3), dtype=np.uint8),
            "boomerang",
            4,
            "loop must be one of none, pingpong, crossfade; got 'boomerang'",
        ),
        (np.zeros((2, 16, 16, 3), dtype=np.uint8), "pingpong", 0, "count must be a positive int, got 0"),
        (np.zeros((2, 16, 16, 3), dtype=np.float32), "none", 4, "uint8, got dtype float32"),
        (np.zeros((0, 16, 16, 3), dtype=np.uint8), "none", 4, r"shape \(N >= 1, H, W, 3\), got shape \(0, 16, 16, 3\)"),
    ],
)
def test_bad_inputs_are_named(frames: Frames, mode: str, count: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        loop(frames, mode, count)


def test_a_resampler_that_returns_the_wrong_count_is_reported(clip: Frames) -> None:
    with pytest.raises(ValueError, match="resample returned uint8 frames of shape"):
        loop(clip, "none", 12, resample=lambda frames, count: frames)
