"""A capacity model: what a job costs on the bus, in the store and on the GPUs, and what 10,000 and
1,000,000 jobs a day need. Prints docs/CAPACITY.md (``--write`` writes it).

Three kinds of figure, each labelled where it appears:

- measured on the bus: tiny jobs run through the embedded stack (real nats-server and SeaweedFS, one
  process per service) at two step counts; the command bodies the stages stored, the events stream's
  bytes and messages, and every object a job left in the store. Commands and events do not depend on the
  resolution; progress events grow with the steps, so the two runs give a fixed part and a per-step part.
- measured on this CPU at SVD-XT's size (1024x576, 25 native frames, 4 s at 8 fps): ingest's
  ``prepare_image``, decode's interpolation to 32 frames, mux's H.264 encode and poster, on the harbor
  example moved by a slow camera zoom (real picture, smooth motion), and the sizes they produce.
- counted, not timed, for the GPUs: torch's FlopCounterMode over diffusers' SVD UNet and temporal VAE
  decoder at SVD-XT's configuration on fake tensors (no weights, no GPU), then divided by a GPU's dense
  16-bit tensor TFLOPS at an assumed utilisation (``--mfu``). The GPU benchmark replaces the assumption
  with measured seconds per step (``--step-s GPU=SECONDS``).

    .venv/bin/python bench/capacity.py --write docs/CAPACITY.md
"""

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HARBOR = ROOT / "examples" / "harbor.png"
T = TypeVar("T")

# SVD-XT's job at the defaults (contracts/params.py): 1024x576, 25 native frames, 25 steps, 4 s at 8 fps.
WIDTH, HEIGHT = 1024, 576
NATIVE_FRAMES = 25
STEPS = 25
FRAMES_OUT = 4 * 8
LATENT_FACTOR = 8  # the VAE's spatial downsampling
CFG_BATCH = 2  # classifier-free guidance runs the UNet on the unconditioned and conditioned halves at once

GPUS = {"H200": 989.0, "A100": 312.0}
"""Dense BF16/FP16 tensor-core TFLOPS, SXM parts, from NVIDIA's data sheets (without sparsity)."""

DAILY_VOLUMES = (10_000, 1_000_000)
RETENTION_DAYS = 30  # I2V_RETENTION_DAYS's default; the events stream keeps 30 days too
BUSY_TARGET = 0.8  # plan each worker pool to be busy at most this share of the peak hour
NATS_MSGS_PER_STREAM_S = 10_000.0
"""Assumed persisted messages per second one R3 file stream takes (its leader does all the writing):
a conservative figure for small messages; check on the cluster with `nats bench --js`."""
STORE_NODE_GBPS = 1.0
"""Assumed GB/s one object-store node (the compose file's single MinIO) serves, reads and writes together."""


def timed(work: Callable[[], T], repeats: int = 3) -> tuple[T, float]:
    """The result of ``work`` and its best wall time over ``repeats`` runs."""
    best = math.inf
    result: T | None = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - t0)
    assert result is not None
    return result, best


# -- measured on the bus -------------------------------------------------------------------------------


@dataclass
class BusRun:
    steps: int
    command_bytes: int  # bodies of the five commands (what each stage stored under commands/)
    commands: int
    event_bytes: int  # the events stream's stored bytes for the job: subject, headers and body
    events: int
    objects: dict[str, int] = field(default_factory=dict)  # key under the job's prefix -> bytes


def measure_bus(steps: tuple[int, int]) -> list[BusRun]:
    """Run one tiny job per step count through the embedded stack and read what it left behind."""
    import nats

    from contracts.params import GenerationParams
    from contracts.subjects import EVENTS_STREAM
    from infra.objectstore import minio_client
    from services.bus.connection import nats_options, nats_servers
    from services.jobclient import JobClient
    from services.objectstore import object_store_from
    from services.stack.embedded import EmbeddedStack

    image = HARBOR.read_bytes()
    runs: list[BusRun] = []
    with tempfile.TemporaryDirectory(prefix="i2v-capacity-") as state, EmbeddedStack(Path(state)) as stack:
        settings = stack.settings()
        listing = minio_client(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key)

        async def run_all() -> None:
            client = await JobClient.from_settings(settings, object_store_from(settings))
            nc = await nats.connect(nats_servers(settings.nats_url), **nats_options(settings))
            try:
                js = nc.jetstream()
                for count in steps:
                    before = (await js.stream_info(EVENTS_STREAM)).state
                    job = await client.submit(image, GenerationParams(steps=count, seed=7), "local")
                    async for item in client.follow(job.job_id):
                        if item.event.type in ("JobCompleted", "JobFailed", "JobRejected", "JobCancelled"):
                            if item.event.type != "JobCompleted":
                                raise RuntimeError(f"capacity job ended {item.event.type}: {item.event}")
                            break
                    after = (await js.stream_info(EVENTS_STREAM)).state
                    prefix = f"jobs/{job.job_id}/"
                    objects = {
                        (obj.object_name or "").removeprefix(prefix): obj.size or 0
                        for obj in listing.list_objects(settings.s3_bucket, prefix=prefix, recursive=True)
                    }
                    commands = {k: v for k, v in objects.items() if k.startswith("commands/")}
                    runs.append(
                        BusRun(
                            steps=count,
                            command_bytes=sum(commands.values()),
                            commands=len(commands),
                            event_bytes=after.bytes - before.bytes,
                            events=after.messages - before.messages,
                            objects=objects,
                        )
                    )
            finally:
                await nc.close()
                await client.close()

        asyncio.run(run_all())
    return runs


# -- measured on this CPU at SVD-XT's size -------------------------------------------------------------


@dataclass
class CpuStages:
    prepare_s: float
    interpolate_s: float
    encode_s: float
    png_bytes: int
    video_bytes: int
    poster_bytes: int
    upload_bytes: int


def measure_cpu_stages() -> CpuStages:
    import numpy as np

    from pipeline.camera import apply_camera, camera_path, parse_motion_prompt
    from pipeline.image import prepare_image
    from pipeline.interpolate import interpolate_to_count
    from pipeline.video import encode_video, make_poster

    upload = HARBOR.read_bytes()
    prepared, prepare_s = timed(lambda: prepare_image(upload, model_size=(WIDTH, HEIGHT)))
    still = np.asarray(prepared.image, dtype=np.uint8)
    # Native frames with smooth motion: the picture under a slow zoom, as SVD's output might move.
    native = apply_camera(
        np.repeat(still[None], NATIVE_FRAMES, axis=0), camera_path(parse_motion_prompt("slow zoom in"), NATIVE_FRAMES)
    )
    frames, interpolate_s = timed(lambda: interpolate_to_count(native, FRAMES_OUT), repeats=2)

    def encode() -> tuple[bytes, bytes]:
        return encode_video(frames, 8, format="mp4", quality="high"), make_poster(frames[0])

    (video, poster), encode_s = timed(encode, repeats=2)
    return CpuStages(prepare_s, interpolate_s, encode_s, len(prepared.png), len(video), len(poster), len(upload))


# -- counted for the GPUs --------------------------------------------------------------------------------


@dataclass
class Flops:
    unet_step: float  # one denoising step, both CFG halves
    vae_decode: float  # the native frames, one pass
    unet_params: float


def count_flops() -> Flops:
    """FLOPs of SVD-XT's UNet (one step, CFG batch) and temporal VAE decode, counted on fake tensors."""
    import torch
    from diffusers.models.autoencoders.autoencoder_kl_temporal_decoder import AutoencoderKLTemporalDecoder
    from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    h, w = HEIGHT // LATENT_FACTOR, WIDTH // LATENT_FACTOR
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        # diffusers' defaults for this class are SVD's UNet (1.5 B parameters, 25 frames).
        unet = UNetSpatioTemporalConditionModel()
        latents = torch.randn(CFG_BATCH, NATIVE_FRAMES, 8, h, w)  # noisy latents + the image's, channel-stacked
        with FlopCounterMode(display=False) as unet_count:
            unet(latents, torch.ones(CFG_BATCH), torch.randn(CFG_BATCH, 1, 1024), torch.randn(CFG_BATCH, 3))
        params = float(sum(p.numel() for p in unet.parameters()))
        # SVD's VAE: SD's autoencoder widths with the temporal decoder.
        vae = AutoencoderKLTemporalDecoder(
            down_block_types=("DownEncoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2
        )
        with FlopCounterMode(display=False) as vae_count:
            vae.decode(torch.randn(NATIVE_FRAMES, 4, h, w), num_frames=NATIVE_FRAMES)
    return Flops(float(unet_count.get_total_flops()), float(vae_count.get_total_flops()), params)


# -- the model -------------------------------------------------------------------------------------------


@dataclass
class PerJob:
    bus_bytes: float
    bus_messages: float
    store_written: float
    store_read: float
    objects: dict[str, float]


def per_job(runs: list[BusRun], cpu: CpuStages) -> PerJob:
    """One SVD-XT job at the defaults: bus from the two tiny runs, objects from sizes at 1024x576."""
    from pipeline.tensors import frames_to_bytes, latents_to_bytes

    low, high = runs
    per_step_bytes = (high.event_bytes - low.event_bytes) / (high.steps - low.steps)
    per_step_events = (high.events - low.events) / (high.steps - low.steps)
    events = low.events + per_step_events * (STEPS - low.steps)
    event_bytes = low.event_bytes + per_step_bytes * (STEPS - low.steps)
    # Safetensors sizes are exact from the shapes: float32 latents, uint8 frames.
    import numpy as np
    import torch

    h, w = HEIGHT // LATENT_FACTOR, WIDTH // LATENT_FACTOR
    latents = len(
        latents_to_bytes(torch.zeros(1, NATIVE_FRAMES, 4, h, w), {"job_id": "x" * 26, "seed": "0", "model": "svd-xt"})
    )
    frames = len(frames_to_bytes(np.zeros((FRAMES_OUT, HEIGHT, WIDTH, 3), dtype=np.uint8)))
    objects = {
        "upload": float(cpu.upload_bytes),
        "g0/image.png": float(cpu.png_bytes),
        "g0/latents.safetensors": float(latents),
        "g0/frames.safetensors": float(frames),
        "g0/video.mp4": float(cpu.video_bytes),
        "g0/poster.jpg": float(cpu.poster_bytes),
        "commands/*.json": float(low.command_bytes),
    }
    written = sum(objects.values())
    # Each artifact is read once by the next stage, the video and poster once by the client; commands are
    # read only on a replay.
    read = written - objects["commands/*.json"]
    return PerJob(low.command_bytes + event_bytes, low.commands + events, written, read, objects)


@dataclass
class Sizing:
    daily: int
    peak_jobs_s: float
    latent_gpus: dict[str, int]
    decode_pods: dict[str, int]
    mux_cores: int
    nats_msgs_s: float
    nats_mb_s: float  # replicated three times
    nats_disk_gb_per_node: float
    events_history_h: float  # what the code's EVENTS_MAX_BYTES keeps at this rate
    store_gb_s: float
    store_tb: float
    bottleneck: str


def size_for(daily: int, job: PerJob, cpu: CpuStages, gpu_s: dict[str, tuple[float, float]], peak: float) -> Sizing:
    from services.bus.streams import EVENTS_MAX_BYTES

    peak_rate = daily / 86_400 * peak
    latent = {gpu: math.ceil(peak_rate * s[0] / BUSY_TARGET) for gpu, s in gpu_s.items()}
    # A decode pod holds its GPU while it interpolates on the CPU.
    decode = {gpu: math.ceil(peak_rate * (s[1] + cpu.interpolate_s) / BUSY_TARGET) for gpu, s in gpu_s.items()}
    mux = math.ceil(peak_rate * cpu.encode_s / BUSY_TARGET)
    msgs = peak_rate * job.bus_messages
    mb_s = peak_rate * job.bus_bytes * 3 / 1e6
    disk = daily * job.bus_bytes * RETENTION_DAYS / 1e9  # each node holds a replica of each stream
    history_h = EVENTS_MAX_BYTES / (daily / 24 * job.bus_bytes)
    store_gb_s = peak_rate * (job.store_written + job.store_read) / 1e9
    store_tb = daily * job.store_written * RETENTION_DAYS / 1e12
    # Against what infra/deploy ships: one latent GPU, one decode GPU, two mux pods of 2 cores, one
    # events stream, one MinIO. The largest ratio is what runs out first as the volume grows.
    loads = {
        "latent GPU time (H200)": latent["H200"] / 1,
        "decode pods (GPU decode + CPU interpolation)": decode["H200"] / 1,
        "mux CPU (H.264 encode)": mux / 4,
        "events stream writes": msgs / NATS_MSGS_PER_STREAM_S,
        "object-store bandwidth": store_gb_s / STORE_NODE_GBPS,
    }
    bottleneck = max(loads, key=lambda k: loads[k])
    return Sizing(
        daily, peak_rate, latent, decode, mux, msgs, mb_s, disk, history_h, store_gb_s, store_tb,
        f"{bottleneck} ({loads[bottleneck]:.0f}x what infra/deploy ships)",
    )  # fmt: skip


# -- the report ------------------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB"


def report(runs: list[BusRun], cpu: CpuStages, flops: Flops, args: argparse.Namespace, took_s: float) -> str:
    job = per_job(runs, cpu)
    step_s = {gpu: flops.unet_step / (tflops * 1e12 * args.mfu) for gpu, tflops in GPUS.items()}
    step_s.update(args.step_s)
    vae_s = {gpu: flops.vae_decode / (tflops * 1e12 * args.mfu) for gpu, tflops in GPUS.items()}
    gpu_s = {gpu: (STEPS * step_s[gpu], vae_s[gpu]) for gpu in GPUS}
    lines = [
        "# Capacity",
        "",
        "What one job costs and what 10,000 and 1,000,000 jobs a day need, for SVD-XT at its defaults",
        f"({WIDTH}x{HEIGHT}, {NATIVE_FRAMES} native frames, {STEPS} steps, 4 s at 8 fps = {FRAMES_OUT} frames, "
        "MP4 at high quality).",
        "Written by `.venv/bin/python bench/capacity.py --write docs/CAPACITY.md` (its measurements took "
        f"{took_s:.0f} s",
        "on the development machine: 2 CPU cores shared with other work, no GPU). Rerun it after a change; pass",
        "the GPU benchmark's seconds per step with `--step-s H200=...` to replace the utilisation assumption",
        "(`--save FILE` keeps the measurements, `--load FILE` reports from them again).",
        "",
        "Each figure says how it was obtained: **measured** (run here), **exact** (from a shape),",
        "**counted** (FLOPs from the model's real layers), or **assumed** (a stated figure to replace).",
        "",
        "## One job on the bus",
        "",
        "Measured: tiny jobs through the embedded stack (real nats-server, SeaweedFS, one process per",
        "service), one at each step count; the command bodies are what each stage stored under",
        "`commands/`, the events are the events stream's stored bytes (subject, headers and body).",
        "Neither depends on the resolution; progress events grow with the steps.",
        "",
        "| tiny run | commands | command bytes | events | event bytes |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        lines.append(
            f"| {run.steps} steps | {run.commands} | {run.command_bytes:,} | {run.events} | {run.event_bytes:,} |"
        )
    lines += [
        "",
        f"At {STEPS} steps, by the line through the two runs: **{job.bus_messages:.0f} messages, "
        f"{job.bus_bytes / 1e3:,.1f} kB per job** stored on the bus (three times that with three replicas).",
        "",
        "## One job in the store",
        "",
        "| object | bytes | how |",
        "|---|---|---|",
    ]
    from pipeline.model_catalog import TINY_DEFAULT_RESOLUTION

    tiny_w, tiny_h = TINY_DEFAULT_RESOLUTION
    tiny_pixels = tiny_w * tiny_h * FRAMES_OUT  # the tiny job ran at the same duration and fps
    noise_video = runs[0].objects.get("g0/video.mp4", 0) / tiny_pixels * WIDTH * HEIGHT * FRAMES_OUT
    how = {
        "upload": "measured: the harbor example as uploaded",
        "g0/image.png": f"measured: `prepare_image` to {WIDTH}x{HEIGHT}",
        "g0/latents.safetensors": f"exact: float32 (1, {NATIVE_FRAMES}, 4, {HEIGHT // 8}, {WIDTH // 8})",
        "g0/frames.safetensors": f"exact: uint8 ({FRAMES_OUT}, {HEIGHT}, {WIDTH}, 3)",
        "g0/video.mp4": "measured: H.264 CRF 18 of the interpolated frames (harbor under a slow zoom), a low bound; "
        f"random frames at the tiny job's bytes per pixel would be {_mb(noise_video)}",
        "g0/poster.jpg": "measured: `make_poster` of the first frame",
        "commands/*.json": "measured: the five stored commands (tiny run)",
    }
    for key, size in job.objects.items():
        lines.append(f"| `{key}` | {size:,.0f} | {how[key]} |")
    lines += [
        "",
        f"Written per job: **{_mb(job.store_written)}**; read: **{_mb(job.store_read)}** (each artifact once by",
        "the next stage, video and poster once by the client). The intermediate frames are most of it, and",
        f"they stay for the retention ({RETENTION_DAYS} days) like everything under `jobs/`.",
        "",
        "Tiny job objects, measured, for comparison:",
        "",
        "| object | bytes |",
        "|---|---|",
    ]
    for key, size in sorted(runs[0].objects.items()):
        lines.append(f"| `{key}` | {size:,} |")
    lines += [
        "",
        "## One job on the GPUs and CPUs",
        "",
        f"Counted: torch's FlopCounterMode over diffusers' SVD UNet ({flops.unet_params / 1e9:.2f} B parameters) and",
        "temporal VAE decoder at SVD-XT's configuration, on fake tensors (no weights, no GPU).",
        "",
        f"- UNet, one step, both CFG halves (batch {CFG_BATCH}): **{flops.unet_step / 1e12:,.1f} TFLOP**; "
        f"x {STEPS} steps = {STEPS * flops.unet_step / 1e15:,.2f} PFLOP per job.",
        f"- VAE decode of the {NATIVE_FRAMES} native frames: **{flops.vae_decode / 1e12:,.1f} TFLOP**.",
        "- The image encoder and the conditioning image's VAE encode run once per job and are left out (small",
        "  beside one UNet step).",
        "",
        f"Assumed: {args.mfu:.0%} of the GPU's dense 16-bit tensor TFLOPS (H200 989, A100 312) is reached"
        + (
            "; measured seconds per step given: " + ", ".join(f"{g} {s:.3f} s" for g, s in args.step_s.items())
            if args.step_s
            else ""
        )
        + ".",
        "",
        "| GPU | s per step | latent s per job | latent jobs/hour/GPU | VAE decode s |",
        "|---|---|---|---|---|",
    ]
    for gpu in GPUS:
        latent_s, vae = gpu_s[gpu]
        lines.append(f"| {gpu} | {step_s[gpu]:.3f} | {latent_s:.1f} | {3600 / latent_s:,.0f} | {vae:.2f} |")
    lines += [
        "",
        "Measured on this CPU at SVD-XT's size (best of a few runs; these stages run on CPU in every",
        "deployment, and a decode pod holds its GPU while it interpolates):",
        "",
        f"- ingest `prepare_image` to {WIDTH}x{HEIGHT}: {cpu.prepare_s:.2f} s",
        f"- decode's DIS interpolation, {NATIVE_FRAMES} to {FRAMES_OUT} frames: {cpu.interpolate_s:.2f} s",
        f"- mux's H.264 encode and poster: {cpu.encode_s:.2f} s",
        "",
        "## 10,000 and 1,000,000 jobs a day",
        "",
        f"Assumed: the peak hour runs at {args.peak:g}x the day's average; pools are sized to be busy at most",
        f"{BUSY_TARGET:.0%} of it; one R3 JetStream stream takes {NATS_MSGS_PER_STREAM_S:,.0f} persisted",
        "messages/s (its leader writes them all, so more servers do not raise it); one object-store node",
        f"serves {STORE_NODE_GBPS:g} GB/s. Storage at rest is the {RETENTION_DAYS}-day retention.",
        "",
    ]
    sizes = [size_for(daily, job, cpu, gpu_s, args.peak) for daily in DAILY_VOLUMES]
    header = "| | " + " | ".join(f"{s.daily:,} jobs/day" for s in sizes) + " |"
    lines += [header, "|---|" + "---|" * len(sizes)]
    rows: list[tuple[str, Callable[[Sizing], str]]] = [
        ("peak jobs/s", lambda s: f"{s.peak_jobs_s:.2f}"),
        ("latent GPUs, H200", lambda s: f"{s.latent_gpus['H200']}"),
        ("latent GPUs, A100", lambda s: f"{s.latent_gpus['A100']}"),
        ("decode pods (GPU each), H200", lambda s: f"{s.decode_pods['H200']}"),
        ("mux CPU cores", lambda s: f"{s.mux_cores}"),
        ("NATS persisted messages/s at peak", lambda s: f"{s.nats_msgs_s:,.0f}"),
        ("NATS MB/s at peak, 3 replicas", lambda s: f"{s.nats_mb_s:,.2f}"),
        ("NATS nodes", lambda s: "3" if s.nats_msgs_s < NATS_MSGS_PER_STREAM_S else "3, and split the events stream"),
        (f"NATS disk per node, {RETENTION_DAYS} days of events", lambda s: f"{s.nats_disk_gb_per_node:,.1f} GB"),
        ("events history kept by today's EVENTS_MAX_BYTES (1 GiB)", lambda s: f"{s.events_history_h:,.1f} h"),
        ("object-store bandwidth at peak", lambda s: f"{s.store_gb_s:,.3f} GB/s"),
        (f"object store at rest, {RETENTION_DAYS} days", lambda s: f"{s.store_tb:,.1f} TB"),
        ("first bottleneck", lambda s: s.bottleneck),
    ]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(s) for s in sizes) + " |")
    lines += ["", "## Reading it", "", *reading(job, cpu, gpu_s, sizes), ""]
    return "\n".join(lines)


def reading(job: PerJob, cpu: CpuStages, gpu_s: dict[str, tuple[float, float]], sizes: list[Sizing]) -> list[str]:
    """What the tables say, worded from their figures."""
    from services.bus.streams import EVENTS_MAX_BYTES

    latent_s, vae_s = gpu_s["H200"]
    decode_s = vae_s + cpu.interpolate_s
    first = {s.bottleneck.split(" (")[0] for s in sizes}
    frames_share = job.objects["g0/frames.safetensors"] / job.store_written
    lines = [f"- First bottleneck: {' and '.join(sorted(first))}, at both sizes."]
    if decode_s > latent_s:
        lines += [
            f"  A decode pod spends {cpu.interpolate_s:.1f} s per job interpolating on the CPU (measured here, on",
            f"  {os.cpu_count()} cores shared with other work) against {vae_s:.2f} s of VAE on the GPU, and holds",
            f"  its GPU all along; latent needs {latent_s:.1f} s of H200 per job. Moving interpolation off the",
            "  GPU pods (a CPU stage of its own), or running RIFE on the GPU, would leave latent's UNet steps as",
            "  the limit.",
        ]
    else:
        lines.append(f"  Latent's UNet steps ({latent_s:.1f} s of H200 per job) are nearly all of a job's arithmetic.")
    lines += [
        "- KEDA adds latent and decode workers on their consumers' backlogs (infra/deploy/k8s/keda-latent.yaml,",
        "  keda-decode.yaml); their maximum replica counts must be raised to the GPU counts above.",
        f"- The bus is small beside the rest: {job.bus_messages:.0f} messages of "
        f"{job.bus_bytes / job.bus_messages:,.0f} bytes on average per job, so",
        "  no size here needs more than three NATS servers. But the events stream's cap",
        f"  (EVENTS_MAX_BYTES, {EVENTS_MAX_BYTES / 2**30:g} GiB, services/bus/streams.py) keeps "
        f"{sizes[0].events_history_h / 24:,.1f} days of history at "
        f"{sizes[0].daily:,} jobs a day and {sizes[-1].events_history_h:,.1f} hours at {sizes[-1].daily:,},",
        f"  not the {RETENTION_DAYS} days the stream's age limit means: raise it with the traffic.",
        f"- The store is dominated by `frames.safetensors` ({frames_share:.0%} of what a job writes), the uncompressed",
        "  frames decode hands to mux. It stays for the whole retention like everything under `jobs/`; deleting",
        "  it once the video is stored would cut the bytes at rest and the store's traffic by about that share.",
        "- GPU figures are counted FLOPs at an assumed utilisation until the GPU benchmark measures seconds per",
        "  step; the bus and store figures are measured or exact; CPU times are this machine's.",
    ]
    return lines


def _step_arg(text: str) -> tuple[str, float]:
    gpu, _, seconds = text.partition("=")
    if gpu not in GPUS or not seconds:
        raise argparse.ArgumentTypeError(f"expected GPU=SECONDS with GPU one of {', '.join(GPUS)}, got {text!r}")
    return gpu, float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mfu", type=float, default=0.4, help="share of the GPU's peak TFLOPS reached (0.4)")
    parser.add_argument("--peak", type=float, default=2.0, help="peak hour over the day's average (2)")
    parser.add_argument(
        "--step-s", type=_step_arg, action="append", default=[], help="measured seconds per UNet step, e.g. H200=0.31"
    )
    parser.add_argument("--steps", type=int, nargs=2, default=(2, 6), help="step counts of the two tiny bus runs")
    parser.add_argument("--write", type=Path, help="write the markdown here as well as printing it")
    parser.add_argument("--save", type=Path, help="also write the raw measurements here (JSON)")
    parser.add_argument("--load", type=Path, help="report from measurements saved by --save instead of measuring")
    args = parser.parse_args()
    if not 0 < args.mfu <= 1:
        parser.error(f"--mfu must be in (0, 1], got {args.mfu}")
    if args.steps[0] >= args.steps[1]:
        parser.error(f"--steps: the second count must be larger, got {args.steps[0]} {args.steps[1]}")
    args.step_s = dict(args.step_s)

    if args.load:
        saved = json.loads(args.load.read_text())
        runs = [BusRun(**run) for run in saved["runs"]]
        cpu, flops, took_s = CpuStages(**saved["cpu"]), Flops(**saved["flops"]), float(saved["took_s"])
    else:
        t0 = time.perf_counter()
        flops = count_flops()
        cpu = measure_cpu_stages()
        runs = measure_bus((args.steps[0], args.steps[1]))
        took_s = time.perf_counter() - t0
    if args.save:
        measured = {"runs": [asdict(r) for r in runs], "cpu": asdict(cpu), "flops": asdict(flops), "took_s": took_s}
        args.save.write_text(json.dumps(measured, indent=1))
    text = report(runs, cpu, flops, args, took_s)
    print(text)
    if args.write:
        args.write.write_text(text)


if __name__ == "__main__":
    main()
