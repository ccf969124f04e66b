"""bench/gpu.py's comparison at tiny size on the CPU: the code path a GPU run takes, and its faithfulness."""

import math

import pytest
import torch

from bench.gpu import main, measure, psnr
from pipeline.accel import DEFAULT, parse_fast

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

JOB = {"width": 64, "height": 64, "frames": 2, "chunk": 2}


def test_stock_and_i2v_give_the_same_frames_and_both_are_timed() -> None:
    lines: list[str] = []
    results = measure(
        model="tiny",
        device=torch.device("cpu"),
        dtype=torch.float32,
        job=JOB,
        total_steps=25,
        timed_steps=2,
        fast=DEFAULT,
        warmup=False,
        out=lines.append,
    )
    assert results["max_abs_diff"] == 0.0 and math.isinf(results["psnr_db"])
    for path in ("stock", "i2v"):
        timing = results[path]
        assert timing["steps_timed"] == 2
        assert timing["step_s"] > 0 and timing["decode_s"] > 0
        # A video: encoding, 25 mean steps, decoding (the first step's own time stands in for one of them).
        assert timing["video_s"] == pytest.approx(timing["encode_s"] + 25 * timing["step_s"] + timing["decode_s"])
        assert timing["peak_gib"] is None and timing["limit_fraction"] is None  # CPU, not the reference job
    assert results["ratio"] == pytest.approx(results["stock"]["video_s"] / results["i2v"]["video_s"])
    assert any("ratio stock / i2v" in line for line in lines)


def test_a_step_skipping_mode_shows_its_drift() -> None:
    results = measure(
        model="tiny",
        device=torch.device("cpu"),
        dtype=torch.float32,
        job=JOB,
        total_steps=2,
        timed_steps=2,
        fast=parse_fast("skip_cfg=0.5"),
        warmup=False,
        out=lambda _line: None,
    )
    assert results["max_abs_diff"] > 0 and math.isfinite(results["psnr_db"])


def test_psnr() -> None:
    assert math.isinf(psnr([0.5], [0.5]))
    assert psnr([0.0], [0.1]) == pytest.approx(20.0)


def test_one_timed_step_is_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--model", "tiny", "--device", "cpu", "--steps", "1"])


def test_the_busy_fraction_bench_times_the_denoiser() -> None:
    from bench.latent_busy import main as busy

    rows = busy(["--jobs", "2", "--steps", "3", "--width", "64", "--height", "64", "--store-ms", "0"], lambda _: None)

    assert [row["mode"] for row in rows] == ["no prefetch", "prefetch"]
    for row in rows:
        # Not busy <= wall: the first step's time is estimated by the mean step, which load can skew.
        assert row["busy_s"] > 0 and row["fraction"] == row["busy_s"] / row["wall_s"]
