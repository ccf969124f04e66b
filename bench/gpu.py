"""Stock diffusers against i2v's latent + decode code on one SVD job, same process, same weights.

Builds SVD-XT at full size from its real configurations with random weights (pipeline/svd_xt.py; speed does
not depend on the weights' values), or the tiny model, runs one job (default 1024x576, 25 frames, 25 steps,
CFG) through diffusers' ``StableVideoDiffusionPipeline.__call__`` and then through i2v's
``conditioning_for`` + ``denoise_for`` + ``decode_latents`` with the fast options, and prints for each:
seconds per video, seconds per UNet step, VAE decode seconds, peak GPU memory, the fraction of the
physical limit (3,390 TFLOP at 790 TFLOP/s, the reference job only), then the ratio and the drift (PSNR of
i2v's frames against stock's).

``--steps K`` times K steps and extrapolates: a video is the time from the start to the first step's end
(encoding and step 1), plus ``total steps - 1`` times the mean of steps 2..K, plus the time after the last
step (VAE decode and post-processing). Both paths are timed the same way, by their step callbacks, with
``torch.cuda.synchronize()`` at each mark; nothing is hooked inside the models, which a compiled UNet would
have to trace. The encode time printed is the first step's end less a mean step. ``step_cache`` and
``skip_cfg`` vary the cost from step to step, so time them with K = the total.

    .venv/bin/python bench/gpu.py --model tiny --device cpu --steps 3            # CI-sized, the same code
    python bench/gpu.py --steps 4                                                # SVD-XT on CUDA, fp16
    python bench/gpu.py --steps 4 --dtype bf16 --fast channels_last,fuse_qkv,compile
    python bench/gpu.py --steps 4 --only channels_last                           # one option on its own
    .venv/bin/python bench/gpu.py --model tiny --device cpu --each               # every option, time and drift
"""

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402

from contracts.params import GenerationParams  # noqa: E402
from pipeline.accel import FastOptions, apply_to_unet, apply_to_vae, check_device, parse_fast  # noqa: E402

LIMIT_TFLOP = 3390.0
"""SVD-XT, 1024x576, 25 frames, 25 steps with CFG: 25 x 128.7 TFLOP of UNet plus 169 TFLOP of VAE decode."""
DENSE_TFLOPS = 790.0
"""Dense bf16 matrix throughput measured on an H200 (an H100 is close)."""
REFERENCE_JOB = (1024, 576, 25, 25)
CUDA_DEFAULT_FAST = "channels_last,fuse_qkv,compile"


@dataclass
class Timing:
    """One path's figures for one job."""

    path: str
    video_s: float
    step_s: float
    encode_s: float
    decode_s: float
    peak_gib: float | None
    limit_fraction: float | None
    steps_timed: int


class Marks:
    """Wall-clock marks of one run: start, each step's end, end."""

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self.start = 0.0
        self.steps: list[float] = []
        self.end = 0.0

    def now(self) -> float:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        return time.perf_counter()

    def begin(self) -> None:
        self.start, self.steps = self.now(), []

    def step_done(self) -> None:
        self.steps.append(self.now())

    def finish(self) -> None:
        self.end = self.now()

    def timing(self, path: str, total_steps: int, peak_gib: float | None, reference: bool) -> Timing:
        assert len(self.steps) >= 2, "time at least 2 steps: the mean step leaves out the first"
        step_s = statistics.fmean(b - a for a, b in itertools.pairwise(self.steps))
        encode_s = self.steps[0] - self.start - step_s
        decode_s = self.end - self.steps[-1]
        video_s = (self.steps[0] - self.start) + (total_steps - 1) * step_s + decode_s
        fraction = (LIMIT_TFLOP / DENSE_TFLOPS) / video_s if reference else None
        return Timing(path, video_s, step_s, encode_s, decode_s, peak_gib, fraction, len(self.steps))


def build(model: str, device: torch.device, dtype: torch.dtype) -> Any:
    """The pipeline: full-size SVD-XT with random weights, or the tiny model, on ``device`` in ``dtype``."""
    if model == "svd-xt":
        from pipeline.svd_xt import build_svd_xt

        return build_svd_xt(device, dtype)
    from pipeline.models import build_tiny_svd

    pipe = build_tiny_svd()
    for module in (pipe.unet, pipe.vae, pipe.image_encoder):
        torch.nn.Module.to(module, device=device, dtype=dtype)
    return pipe


def test_image(width: int, height: int) -> PIL.Image.Image:
    rng = np.random.default_rng(7)
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_stock(pipe: Any, image: PIL.Image.Image, params: GenerationParams, job: dict[str, int], marks: Marks) -> Any:
    """diffusers' own ``__call__`` for the job, frames as float numpy (F, H, W, 3) in [0, 1]."""
    from pipeline.latents import fps_conditioning

    def step_end(_pipe: Any, _i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        marks.step_done()
        return tensors

    marks.begin()
    frames = pipe(
        image,
        width=job["width"],
        height=job["height"],
        num_frames=job["frames"],
        num_inference_steps=params.steps,
        min_guidance_scale=params.min_cfg,
        max_guidance_scale=params.cfg_scale,
        fps=fps_conditioning(job["frames"], params.duration),
        motion_bucket_id=params.motion_bucket_id,
        noise_aug_strength=params.augmentation_level,
        generator=torch.Generator().manual_seed(params.seed),
        decode_chunk_size=job["chunk"],
        output_type="np",
        callback_on_step_end=step_end,
    ).frames[0]
    marks.finish()
    return frames


def run_i2v(
    pipe: Any, image: PIL.Image.Image, params: GenerationParams, job: dict[str, int], marks: Marks, fast: FastOptions
) -> Any:
    """The latent stage's calls then the decode stage's, frames as float numpy (F, H, W, 3) in [0, 1]."""
    from pipeline.decode import decode_latents, pick_chunk_size
    from pipeline.latents import conditioning_for, denoise_for

    marks.begin()
    conditioning = conditioning_for(
        pipe, image, params, width=job["width"], height=job["height"], num_frames=job["frames"]
    )
    latents = denoise_for(pipe, conditioning, params, on_step=lambda _done, _total: marks.step_done(), fast=fast)
    chunk = job["chunk"]
    if fast.auto_chunk:
        chunk = pick_chunk_size(pipe.vae, job["width"], job["height"], job["frames"], default=chunk)
    frames = decode_latents(pipe.vae, latents, num_frames=job["frames"], chunk_size=chunk)
    marks.finish()
    return frames


def psnr(ours: Any, reference: Any) -> float:
    """PSNR in dB of frames in [0, 1]; inf when equal."""
    mse = float(np.mean((np.asarray(ours, dtype=np.float64) - np.asarray(reference, dtype=np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def accelerate(pipe: Any, fast: FastOptions) -> None:
    """The fast options on the pipeline's models, as the stages apply them (a dtype option casts first)."""
    if fast.dtype:
        for module in (pipe.unet, pipe.vae, pipe.image_encoder):
            torch.nn.Module.to(module, dtype=fast.torch_dtype(module.dtype))
    apply_to_unet(pipe.unet, fast)
    apply_to_vae(pipe.vae, fast)


EACH = (
    "channels_last",
    "fuse_qkv",
    "sdpa=flash",
    "sdpa=efficient",
    "sdpa=cudnn",
    "dtype=bf16",
    "dtype=fp16",
    "compile",
    "compile,cuda_graphs",
    "fp8",
    "step_cache=2",
    "step_cache=3",
    "skip_cfg=0.8",
    "skip_cfg=0.6",
    "auto_chunk",
)
"""Every option on its own, for ``--each``; those that cannot run on the device are left out."""


def each_option(
    *,
    model: str,
    device: torch.device,
    dtype: torch.dtype,
    job: dict[str, int],
    total_steps: int,
    timed_steps: int,
    options: tuple[str, ...] = EACH,
    out: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Stock once, then i2v with each option alone on a copy of the same weights: time and drift (PSNR
    against stock's frames) per option. On CUDA the peaks include the stock copy's weights."""
    import copy

    pipe = build(model, device, dtype)
    image = test_image(job["width"], job["height"])
    params = GenerationParams(model="tiny", steps=timed_steps, cfg_scale=2.5, min_cfg=1.0, seed=11, duration=4)
    marks = Marks(device)

    def stock_run() -> tuple[Any, Timing]:
        frames = run_stock(pipe, image, params, job, marks)
        return frames, marks.timing("stock diffusers", total_steps, _peak(device), False)

    stock_frames, _first = stock_run()
    out(f"{model} on {device} {dtype}: {job}, {total_steps} steps ({timed_steps} timed), CFG")
    out("  each option's ratio is against a stock run made just before it (a shared machine's load drifts)")
    rows: list[dict[str, Any]] = []
    for text in ("", *options):
        fast = parse_fast(text)
        try:
            check_device(fast, device)
        except ValueError as exc:
            out(f"  {text:<22} skipped: {exc}")
            continue
        _frames, stock = stock_run()
        trial = copy.deepcopy(pipe)
        accelerate(trial, fast)
        trial_marks = Marks(device)
        if fast.compile:
            run_i2v(trial, image, params.model_copy(update={"steps": 2}), job, Marks(device), fast)
        _reset_peak(device)
        frames = run_i2v(trial, image, params, job, trial_marks, fast)
        timing = trial_marks.timing(text or "(none)", total_steps, _peak(device), False)
        row = {"option": text or "(none)", **asdict(timing), "psnr_db": psnr(frames, stock_frames)}
        row["ratio"] = stock.video_s / timing.video_s
        row["stock_video_s"] = stock.video_s
        rows.append(row)
        out(
            f"  {row['option']:<22} {timing.video_s:8.2f} s/video  {timing.step_s:7.3f} s/step  "
            f"(stock {stock.video_s:.2f})  x{row['ratio']:.2f}  PSNR {row['psnr_db']:.1f} dB"
        )
        del trial
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def measure(
    *,
    model: str,
    device: torch.device,
    dtype: torch.dtype,
    job: dict[str, int],
    total_steps: int,
    timed_steps: int,
    fast: FastOptions,
    stock: bool = True,
    warmup: bool = True,
    out: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build the model, run both paths (each after a warm-up run of 2 steps), print and return the figures."""
    check_device(fast, device)
    pipe = build(model, device, dtype)
    image = test_image(job["width"], job["height"])
    params = GenerationParams(model="tiny", steps=timed_steps, cfg_scale=2.5, min_cfg=1.0, seed=11, duration=4)
    warm = params.model_copy(update={"steps": 2})
    reference = model == "svd-xt" and (job["width"], job["height"], job["frames"], total_steps) == REFERENCE_JOB
    marks = Marks(device)
    results: dict[str, Any] = {"model": model, "device": str(device), "dtype": str(dtype), "job": job}
    results["fast"] = ",".join(fast.names()) or "(none)"
    stock_frames = None
    if stock:
        if warmup:
            run_stock(pipe, image, warm, job, Marks(device))
        _reset_peak(device)
        stock_frames = run_stock(pipe, image, params, job, marks)
        results["stock"] = asdict(marks.timing("stock diffusers", total_steps, _peak(device), reference))
    # 2. The same weights, changed in place by the fast options; compile (if on) happens in the warm-up run.
    began = time.perf_counter()
    accelerate(pipe, fast)
    if warmup:
        run_i2v(pipe, image, warm, job, Marks(device), fast)
    results["warmup_s"] = time.perf_counter() - began
    _reset_peak(device)
    i2v_frames = run_i2v(pipe, image, params, job, marks, fast)
    results["i2v"] = asdict(marks.timing("i2v latent+decode", total_steps, _peak(device), reference))
    if stock_frames is not None:
        results["ratio"] = results["stock"]["video_s"] / results["i2v"]["video_s"]
        results["psnr_db"] = psnr(i2v_frames, stock_frames)
        results["max_abs_diff"] = float(np.max(np.abs(np.asarray(i2v_frames) - np.asarray(stock_frames))))
    report(results, total_steps, timed_steps, out)
    return results


def report(results: dict[str, Any], total_steps: int, timed_steps: int, out: Callable[[str], None]) -> None:
    job = results["job"]
    out(
        f"{results['model']} on {results['device']} {results['dtype']}: {job['width']}x{job['height']}, "
        f"{job['frames']} frames, {total_steps} steps, CFG, decode chunk {job['chunk']}; fast: {results['fast']}"
    )
    if timed_steps < total_steps:
        out(f"  ({timed_steps} steps timed; per video = to step 1's end + {total_steps - 1} x mean step 2..K + decode)")
    for key in ("stock", "i2v"):
        if key not in results:
            continue
        t = results[key]
        peak = f"{t['peak_gib']:.2f} GiB" if t["peak_gib"] is not None else "n/a (cpu)"
        limit = f"{100 * t['limit_fraction']:.1f}% of limit" if t["limit_fraction"] is not None else "limit n/a"
        out(
            f"  {t['path']:<18} {t['video_s']:8.2f} s/video  {t['step_s']:7.3f} s/step  "
            f"encode {t['encode_s']:6.2f} s  VAE decode {t['decode_s']:6.2f} s  peak {peak}  {limit}"
        )
    out(
        f"  i2v warm-up (options + 2-step run{', compile' if 'compile' in results['fast'] else ''}): "
        f"{results['warmup_s']:.1f} s"
    )
    if "ratio" in results:
        out(
            f"  ratio stock / i2v: {results['ratio']:.2f}x  drift: PSNR {results['psnr_db']:.1f} dB, "
            f"max |diff| {results['max_abs_diff']:.2e}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from pipeline.models import TINY_DEFAULT_RESOLUTION, TINY_NATIVE_FRAMES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("svd-xt", "tiny"), default="svd-xt")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default=None, help="default fp16 on cuda")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--total-steps", type=int, default=25, help="steps of the job the figures are for")
    parser.add_argument("--steps", type=int, default=None, help="steps actually timed (>= 2; default all)")
    parser.add_argument("--chunk", type=int, default=8, help="VAE decode chunk of both paths")
    parser.add_argument("--fast", default=None, help=f"i2v's options (default on cuda: {CUDA_DEFAULT_FAST})")
    parser.add_argument("--only", default=None, help="one option alone, e.g. channels_last or sdpa=flash")
    parser.add_argument("--no-stock", action="store_true", help="i2v's path only")
    parser.add_argument("--each", action="store_true", help="every option alone, with its drift (PSNR)")
    parser.add_argument("--options", default=None, help="with --each: these, separated by ';' (default: all)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    tiny = args.model == "tiny"
    width = args.width or (TINY_DEFAULT_RESOLUTION[0] if tiny else 1024)
    height = args.height or (TINY_DEFAULT_RESOLUTION[1] if tiny else 576)
    frames = args.frames or (TINY_NATIVE_FRAMES if tiny else 25)
    dtype_name = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    timed = args.steps or args.total_steps
    if timed < 2:
        parser.error("--steps must be >= 2: the mean step leaves out the first")
    text = args.only if args.only is not None else args.fast
    if text is None:
        text = CUDA_DEFAULT_FAST if device.type == "cuda" else ""
    fast = parse_fast(text)
    job = {"width": width, "height": height, "frames": frames, "chunk": min(args.chunk, frames)}
    if args.each:
        rows = each_option(
            model=args.model,
            device=device,
            dtype=dtype,
            job=job,
            total_steps=args.total_steps,
            timed_steps=timed,
            options=tuple(args.options.split(";")) if args.options else EACH,
        )
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return {"each": rows}
    results = measure(
        model=args.model,
        device=device,
        dtype=dtype,
        job=job,
        total_steps=args.total_steps,
        timed_steps=timed,
        fast=fast,
        stock=not args.no_stock,
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
