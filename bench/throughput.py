"""Throughput on one machine: N jobs submitted at once to the embedded stack against the same N run one
after another in one process.

The one-process path is the stages' own work without the bus: prepare the picture, denoise, VAE decode,
render (interpolate to duration x fps), encode, decode the video back as mux checks it, poster; with
the model loaded once and every core this process may use. The staged path is the embedded stack (one
process per service, each with its thread budget, services/threads.py), all N jobs submitted at once,
timed from the first submit to the last completion. One run of each, after a warm-up job on each path.

Prints both times, the ratio staged / one-process throughput (goal >= 1.0 on 2 cores), and what
explains it: each stage's busy time (sum of its StageFinished seconds) and CPU seconds per process.

    .venv/bin/python bench/throughput.py --jobs 6 --steps 10
    I2V_THREADS_LATENT=2 .venv/bin/python bench/throughput.py     # try another split
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contracts.params import GenerationParams  # noqa: E402

TERMINAL = ("JobCompleted", "JobFailed", "JobRejected", "JobCancelled")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_process_job(pipe: Any, image_bytes: bytes, params: GenerationParams, parts: dict[str, float]) -> None:
    """One job as the stages do it, in this process, adding each part's seconds to ``parts``."""
    from pipeline.decode import decode_latents, frames_to_uint8
    from pipeline.image import prepare_image
    from pipeline.latents import generate_latents_for
    from pipeline.models import model_defaults
    from pipeline.render import render
    from pipeline.video import encode_video, make_poster, probe_video, video_mismatch

    defaults = model_defaults(params.model)
    t = time.perf_counter()

    def lap(part: str) -> None:
        nonlocal t
        now = time.perf_counter()
        parts[part] += now - t
        t = now

    prepared = prepare_image(image_bytes, model_size=(defaults.width, defaults.height))
    lap("prepare")
    latents = generate_latents_for(
        pipe, prepared.image, params, width=prepared.width, height=prepared.height, num_frames=defaults.native_frames
    )
    lap("denoise")
    native = frames_to_uint8(decode_latents(pipe.vae, latents, num_frames=defaults.native_frames, chunk_size=8))
    lap("vae decode")
    frames = render(native, params.frame_count).frames
    lap("render")
    video = encode_video(frames, params.fps, format=params.format, quality=params.quality)
    lap("encode")
    mismatch = video_mismatch(probe_video(video), frame_count=params.frame_count, fps=params.fps)
    if mismatch is not None:
        raise RuntimeError(f"one-process video is wrong: {mismatch}")
    make_poster(frames[0])
    lap("probe + poster")


def run_one_process(
    image_bytes: bytes, params: GenerationParams, jobs: int, threads: int
) -> tuple[float, float, dict[str, float]]:
    """Wall seconds, CPU seconds and per-part seconds of ``jobs`` jobs in a row (after a warm-up job) on
    ``threads`` torch and OpenCV threads."""
    import cv2
    import torch

    from pipeline.models import load_pipeline, pick_device

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    device, dtype = pick_device()
    pipe = load_pipeline(params.model, device, dtype)
    one_process_job(pipe, image_bytes, params, defaultdict(float))  # warm: first-call allocations, imports
    parts: dict[str, float] = defaultdict(float)
    cpu0, t0 = cpu_seconds(os.getpid()), time.perf_counter()
    for _ in range(jobs):
        one_process_job(pipe, image_bytes, params, parts)
    return time.perf_counter() - t0, cpu_seconds(os.getpid()) - cpu0, parts


def occupied(intervals: list[tuple[float, float]]) -> float:
    """Seconds during which at least one of ``intervals`` was open (their union's length)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


async def staged_jobs(
    client: Any, image_bytes: bytes, params: GenerationParams, jobs: int
) -> dict[str, list[tuple[float, float]]]:
    """Submit ``jobs`` jobs at once and follow them all to the end. Returns each stage's (started,
    finished) times per job, as this process saw the StageStarted and StageFinished events arrive."""
    from contracts.messages import JobCompleted, StageFinished, StageStarted

    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)

    async def follow(job_id: str) -> None:
        started: dict[str, float] = {}
        async for item in client.follow(job_id):
            event, now = item.event, time.perf_counter()
            if isinstance(event, StageStarted):
                started[str(event.stage)] = now
            elif isinstance(event, StageFinished):
                spans[str(event.stage)].append((started.pop(str(event.stage), now), now))
            elif event.type in TERMINAL and not isinstance(event, JobCompleted):
                raise RuntimeError(f"staged job failed: {event}")

    specs = await asyncio.gather(*(client.submit(image_bytes, params, "local") for _ in range(jobs)))
    await asyncio.gather(*(follow(spec.job_id) for spec in specs))
    return spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--image", type=Path, default=ROOT / "examples" / "harbor.png")
    parser.add_argument(
        "--one-process-threads", type=int, default=0, help="threads of the one-process run (default: every core)"
    )
    args = parser.parse_args()

    from infra.nats_server import NatsServer
    from services.jobclient import JobClient
    from services.objectstore import object_store_from
    from services.stack.embedded import SERVICES, EmbeddedStack
    from services.threads import available_cores, thread_shares

    image_bytes = args.image.read_bytes()
    params = GenerationParams(steps=args.steps, duration=args.duration, fps=args.fps, seed=1234)
    cores = available_cores()
    print(f"{args.jobs} jobs of {args.duration} s at {args.fps} fps, {args.steps} steps, model tiny; {cores} cores")

    # The stack's servers and services idle (waiting on the bus) while the one-process run works.
    with tempfile.TemporaryDirectory(prefix="i2v-bench-") as state:
        stack = EmbeddedStack(Path(state), say=lambda line: print(line, flush=True))
        with stack:
            settings = stack.settings()
            budget = thread_shares(settings, SERVICES)
            print("thread budget: " + ", ".join(f"{name} {n}" for name, n in budget.items()), flush=True)

            one_threads = args.one_process_threads or cores
            one_wall, one_cpu, parts = run_one_process(image_bytes, params, args.jobs, one_threads)
            print(
                f"one process ({one_threads} threads): {one_wall:.2f}s for {args.jobs} jobs ({one_cpu:.1f} CPU s)",
                flush=True,
            )

            pids = {name: stack.pid(name) for name in SERVICES}
            if isinstance(stack.nats, NatsServer) and stack.nats.pid is not None:
                pids["nats-server"] = stack.nats.pid
            if stack.s3 is not None and stack.s3.pid is not None:
                pids["seaweedfs"] = stack.s3.pid
            store = object_store_from(settings)

            async def run_staged() -> tuple[float, dict[str, float], dict[str, list[tuple[float, float]]]]:
                client = await JobClient.from_settings(settings, store)
                try:
                    await staged_jobs(client, image_bytes, params, 1)  # warm: first pulls, connections
                    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    t0 = time.perf_counter()
                    spans = await staged_jobs(client, image_bytes, params, args.jobs)
                    wall = time.perf_counter() - t0
                    return wall, {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}, spans
                finally:
                    await client.close()

            staged_wall, staged_cpu, spans = asyncio.run(run_staged())

    print(f"staged:      {staged_wall:.2f}s for {args.jobs} jobs ({sum(staged_cpu.values()):.1f} CPU s)")
    print("one process, seconds per part (all jobs): " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    print("staged, per process: busy s (some job between StageStarted and StageFinished) / share of the wall / CPU s")
    for name in pids:
        if name in spans:
            busy = occupied(spans[name])
            print(f"  {name:12s} {busy:7.2f} / {busy / staged_wall:4.0%} / {staged_cpu[name]:7.2f}")
        else:
            print(f"  {name:12s} {'':7s}   {'':4s}   {staged_cpu[name]:7.2f}")
    ratio = one_wall / staged_wall
    print(f"throughput staged / one process: {ratio:.2f}  (goal >= 1.0; {one_wall:.2f}s / {staged_wall:.2f}s)")


if __name__ == "__main__":
    main()
