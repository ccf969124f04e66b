"""What the bus costs: the same tiny job run directly in one process and through NATS + S3.

Both paths run the same pure stage functions with warm models; the bus path goes through the embedded
stack (separate service processes, JetStream, SeaweedFS). Prints each run and the median ratio
bus / direct. Goal: under 1.10.

    .venv/bin/python bench/overhead.py --runs 5 --steps 10
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def direct_job(image_bytes: bytes, params: "GenerationParams") -> int:  # type: ignore[name-defined]  # noqa: F821
    """The whole job in this process: prepare, denoise, decode, interpolate, encode. Returns MP4 size."""
    from pipeline.decode import decode_latents, frames_to_uint8
    from pipeline.image import prepare_image
    from pipeline.interpolate import interpolate_to_count
    from pipeline.latents import generate_latents_for
    from pipeline.models import load_pipeline, model_defaults, pick_device
    from pipeline.video import encode_mp4, make_poster

    defaults = model_defaults(params.model)
    device, dtype = pick_device()
    pipe = load_pipeline(params.model, device, dtype)
    prepared = prepare_image(image_bytes, model_size=(defaults.width, defaults.height))
    latents = generate_latents_for(
        pipe, prepared.image, params, width=prepared.width, height=prepared.height, num_frames=defaults.native_frames
    )
    frames = frames_to_uint8(decode_latents(pipe.vae, latents, num_frames=defaults.native_frames, chunk_size=8))
    video = interpolate_to_count(frames, params.frame_count)
    mp4 = encode_mp4(video, params.fps)
    make_poster(video[0])
    return len(mp4)


async def bus_job(client: "JobClient", image_bytes: bytes, params: "GenerationParams") -> None:  # type: ignore[name-defined]  # noqa: F821
    from contracts.messages import JobCompleted

    job = await client.submit(image_bytes, params, "local")
    async for item in client.follow(job.job_id):
        if item.event.type in ("JobCompleted", "JobFailed", "JobRejected", "JobCancelled"):
            if not isinstance(item.event, JobCompleted):
                raise RuntimeError(f"bus job failed: {item.event}")
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--image", type=Path, default=ROOT / "examples" / "harbor.png")
    args = parser.parse_args()

    from contracts.params import GenerationParams
    from services.jobclient import JobClient
    from services.objectstore import object_store_from
    from services.stack.embedded import EmbeddedStack

    image_bytes = args.image.read_bytes()
    params = GenerationParams(steps=args.steps, seed=1234)

    direct_job(image_bytes, params)  # warm: model build, first-call allocations
    direct: list[float] = []
    bus: list[float] = []
    with tempfile.TemporaryDirectory(prefix="i2v-bench-") as state:
        stack = EmbeddedStack(Path(state), say=lambda line: print(line, flush=True))
        with stack:
            settings = stack.settings()
            store = object_store_from(settings)

            async def run_all() -> None:
                client = await JobClient.from_settings(settings, store)
                try:
                    await bus_job(client, image_bytes, params)  # warm: first pulls, connections
                    # Alternate the two paths so drift in machine load hits both alike.
                    for i in range(args.runs):
                        t0 = time.perf_counter()
                        direct_job(image_bytes, params)
                        direct.append(time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        await bus_job(client, image_bytes, params)
                        bus.append(time.perf_counter() - t0)
                        print(f"run {i + 1}: direct {direct[-1]:.2f}s  bus {bus[-1]:.2f}s", flush=True)
                finally:
                    await client.close()

            asyncio.run(run_all())

    d, b = statistics.median(direct), statistics.median(bus)
    print(f"median direct {d:.2f}s  median bus {b:.2f}s  ratio {b / d:.3f}  (goal < 1.10)")


if __name__ == "__main__":
    main()
