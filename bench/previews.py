"""What live previews cost the denoising: the tiny model's denoise with previews on and off, interleaved.

Loads the tiny model once, then runs ``--runs`` pairs of denoises (off then on, the order alternating) in
this process, previews stored in memory and announced to nowhere (the bus is not what is measured).
Prints the median of the pairs' ratios of wall time and of the process's CPU time (every thread, the
preview worker's included; steadier than wall time on a shared machine), and the previews a run made. The tiny model's
steps take milliseconds, so its ratio overstates what previews cost a real model; the script also times
one preview's parts on latents of real SVD's size (25 frames at 1024x576), for comparison with a step
of the real model (about a second on a datacenter GPU, minutes on a CPU).

    .venv/bin/python bench/previews.py --runs 9 --steps 20 --threads 1
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from contracts.messages import JobSpec, StagePreview  # noqa: E402
from contracts.params import GenerationParams  # noqa: E402
from infra.objectstore import MemoryObjectStore  # noqa: E402
from pipeline.latents import generate_latents  # noqa: E402
from pipeline.models import TINY_DEFAULT_RESOLUTION, TINY_NATIVE_FRAMES, load_pipeline, pick_device  # noqa: E402
from pipeline.previews import encode_preview, project_to_rgb, shrink_latents  # noqa: E402
from services.latent.previews import preview_tap  # noqa: E402


def denoise(pipe: object, image: Image.Image, steps: int, interval_s: float | None) -> tuple[float, float, int]:
    """Wall and CPU seconds of one denoise, and the previews it announced (``interval_s`` None: off)."""
    announced: list[StagePreview] = []
    job = JobSpec(job_id="bench-previews", account="bench", params=GenerationParams(steps=steps, seed=1))
    width, height = image.size
    started, cpu_started = time.perf_counter(), time.process_time()
    # The stage's own path: the tap on the denoising thread, encoding and storing on the worker, and
    # leaving the block waits for the last preview, as the stage does before it finishes.
    with preview_tap(MemoryObjectStore(), job, 1, announced.append, interval_s) as previews:
        generate_latents(
            pipe,  # type: ignore[arg-type]
            image,
            width=width,
            height=height,
            num_frames=TINY_NATIVE_FRAMES,
            steps=steps,
            cfg_scale=2.5,
            motion_bucket_id=127,
            augmentation_level=0.02,
            fps_cond=6,
            seed=1,
            previews=previews,
        )
    return time.perf_counter() - started, time.process_time() - cpu_started, len(announced)


def preview_parts_ms(repeats: int) -> tuple[float, float]:
    """Median ms of one preview on real SVD-sized latents: (on the denoising thread, on the worker)."""
    latents = torch.randn(1, 25, 4, 576 // 8, 1024 // 8)
    tap_ms, worker_ms = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        shrunk = shrink_latents(latents)
        tap_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        encode_preview(project_to_rgb(shrunk))
        worker_ms.append((time.perf_counter() - started) * 1000)
    return statistics.median(tap_ms), statistics.median(worker_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="denoises of each kind (interleaved)")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps per run")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between previews (I2V_PREVIEW_INTERVAL_S)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's default); 1 on a busy shared machine"
    )
    parser.add_argument("--width", type=int, default=TINY_DEFAULT_RESOLUTION[0])
    parser.add_argument("--height", type=int, default=TINY_DEFAULT_RESOLUTION[1])
    args = parser.parse_args()

    if args.threads:
        # Two OpenMP threads on two busy cores spin-wait for each other: a step then takes 5-10x longer,
        # at random, and the ratio means nothing.
        torch.set_num_threads(args.threads)
    device, dtype = pick_device("cpu")
    pipe = load_pipeline("tiny", device, dtype)
    width, height = args.width, args.height
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    denoise(pipe, image, 2, None)  # warm-up: first-call allocations, lazy imports
    denoise(pipe, image, 2, 0.0)

    wall: list[float] = []
    cpu: list[float] = []
    every_wall: list[float] = []
    off_s: list[float] = []
    counts: list[int] = []
    for run in range(args.runs):
        # Alternate which goes first, so a drift in the machine's load does not favour one side.
        kinds = [None, args.interval, 0.0] if run % 2 == 0 else [0.0, args.interval, None]
        results = {kind: denoise(pipe, image, args.steps, kind) for kind in kinds}
        off, on, every = results[None], results[args.interval], results[0.0]
        wall.append(on[0] / off[0])
        cpu.append(on[1] / off[1])
        every_wall.append(every[0] / off[0])
        off_s.append(off[0])
        counts.append(on[2])

    step_ms = statistics.median(off_s) / args.steps * 1000
    print(
        f"tiny model at {width}x{height}, {args.steps} steps, {args.runs} interleaved runs,"
        f" torch threads {torch.get_num_threads()}"
    )
    print(f"  previews off: {statistics.median(off_s) * 1000:.0f} ms per denoise ({step_ms:.1f} ms per step)")
    print(f"  previews on, every {args.interval:g} s: {statistics.median(counts):.0f} previews per denoise")
    print(
        f"  ratio on/off, wall time: median {statistics.median(wall):.3f} (runs: {' '.join(f'{r:.3f}' for r in wall)})"
    )
    print(f"  ratio on/off, CPU time:  median {statistics.median(cpu):.3f} (runs: {' '.join(f'{r:.3f}' for r in cpu)})")
    print(
        f"  a preview after every step (interval 0, the worst case), wall: median {statistics.median(every_wall):.3f}"
    )
    tap_ms, worker_ms = preview_parts_ms(20)
    print("one preview of real SVD-sized latents (1x25x4x72x128), CPU:")
    print(f"  on the denoising thread (keep 8 pooled frames): {tap_ms:.2f} ms")
    print(f"  on the worker (project + encode WebP): {worker_ms:.2f} ms")
    print(
        f"  at one preview a second against a 1 s step: {tap_ms / 10:.3f}% of the denoising thread's time"
        f" (worker, on another core: {worker_ms / 10:.2f}%)"
    )


if __name__ == "__main__":
    main()
