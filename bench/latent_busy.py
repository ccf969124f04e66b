"""How much of the latent worker's wall time the denoiser runs, under a queue of jobs, with and without
the next command's inputs made ahead (``LatentStage.prefetch``).

The real ``LatentStage`` on a queue of N commands (default 10) over an object store that answers after a
set latency (``--store-ms``, a download from S3; the in-memory store is ours, the latency our fake's). The
commands run one after another as the prefetching runner runs them: when command k starts, command k+1 has
been taken and (with prefetch) its inputs are being made on the stage's prefetch thread. Busy time is, per
command, its denoising: from the first step's end to the last one's, plus one mean step for the first
(the step callbacks mark them, with ``torch.cuda.synchronize()`` on CUDA; nothing is hooked inside the
model, which a compiled UNet would have to trace); the fraction is their sum over the wall time from the
first command's start to the last one's end.

    .venv/bin/python bench/latent_busy.py                        # tiny on CPU, 10 jobs, 50 ms store
    .venv/bin/python bench/latent_busy.py --encode-ahead         # also CLIP + VAE encode ahead on the CPU
    python bench/latent_busy.py --device cuda --model svd-xt     # (not run yet) on a GPU
"""

import argparse
import io
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from contracts.keys import artifact_key  # noqa: E402
from contracts.messages import JobSpec, PointsReserved  # noqa: E402
from contracts.params import GenerationParams  # noqa: E402
from contracts.refs import ObjectRef  # noqa: E402
from infra.objectstore import MemoryObjectStore  # noqa: E402
from services.latent.stage import LatentStage  # noqa: E402


class SlowStore:
    """The in-memory store answering ``get`` after ``latency_s``, as a download from S3 does."""

    def __init__(self, latency_s: float) -> None:
        self._inner = MemoryObjectStore()
        self._latency_s = latency_s
        self.bucket = self._inner.bucket

    def get(self, ref: ObjectRef) -> bytes:
        time.sleep(self._latency_s)
        return self._inner.get(ref)

    def put(self, key: str, data: bytes, content_type: str) -> ObjectRef:
        return self._inner.put(key, data, content_type)

    def head(self, key: str) -> ObjectRef | None:
        return self._inner.head(key)

    def delete_prefix(self, prefix: str) -> int:
        return self._inner.delete_prefix(prefix)

    def delete_older_than(self, prefix: str, cutoff: datetime) -> int:
        return self._inner.delete_older_than(prefix, cutoff)

    def presigned_get_url(self, ref: ObjectRef, expires_s: int) -> str:
        return self._inner.presigned_get_url(ref, expires_s)


class Busy:
    """Sums, per command, its denoising time: last step's end less first's, times steps / (steps - 1)."""

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self.first: float | None = None
        self.total = 0.0

    def now(self) -> float:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        return time.perf_counter()

    def step(self, done: int, total: int) -> None:
        now = self.now()
        if done == 1:
            self.first = now
        if done == total and self.first is not None and total > 1:
            self.total += (now - self.first) * total / (total - 1)
            self.first = None


def commands(store: Any, count: int, model: str, width: int, height: int, steps: int) -> list[PointsReserved]:
    out = []
    rng = np.random.default_rng(1)
    for index in range(count):
        job = JobSpec(
            job_id=f"busy-{index:04d}",
            account="bench",
            params=GenerationParams(model=model, steps=steps, seed=index, duration=2, fps=8),
        )
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
        image = store.put(artifact_key(job.job_id, 0, "image.png"), buffer.getvalue(), "image/png")
        out.append(PointsReserved(job=job, image=image, width=width, height=height, price=1))
    return out


def run_queue(
    *,
    prefetch: bool,
    encode_ahead: bool | None,
    jobs: int,
    store_s: float,
    device: str,
    model: str,
    width: int,
    height: int,
    steps: int,
) -> dict[str, float]:
    """One queue through a fresh stage; the wall time, the busy time and their ratio."""
    store = SlowStore(store_s)
    never_cancelled: Callable[[str, int], bool] = lambda _job, _generation: False  # noqa: E731
    stage = LatentStage(store, device, never_cancelled, encode_ahead=encode_ahead)
    stage.warm_up(model)
    busy = Busy(torch.device(device))
    queue = commands(store, jobs, model, width, height, steps)
    began = busy.now()
    for index, cmd in enumerate(queue):
        if prefetch and index + 1 < len(queue):
            stage.prefetch(queue[index + 1])  # the runner has taken the next command as this one starts
        stage.run(cmd, busy.step)
    wall = busy.now() - began
    return {"wall_s": wall, "busy_s": busy.total, "fraction": busy.total / wall}


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--store-ms", type=float, default=50.0, help="latency of each object store read")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--encode-ahead", action="store_true", help="CLIP + VAE encode ahead (default: CUDA only)")
    args = parser.parse_args(argv)
    common: dict[str, Any] = {
        "jobs": args.jobs,
        "store_s": args.store_ms / 1000,
        "device": args.device,
        "model": args.model,
        "width": args.width,
        "height": args.height,
        "steps": args.steps,
    }
    out(
        f"latent worker, {args.jobs} jobs of {args.width}x{args.height}, {args.steps} steps, {args.model} on "
        f"{args.device}, store reads {args.store_ms:.0f} ms"
    )
    rows = []
    modes: list[tuple[str, bool, bool | None]] = [("no prefetch", False, None), ("prefetch", True, None)]
    if args.encode_ahead:
        modes.append(("prefetch + encode ahead", True, True))
    for label, prefetch, ahead in modes:
        figures = run_queue(prefetch=prefetch, encode_ahead=ahead, **common)
        rows.append({"mode": label, **figures})
        out(
            f"  {label:<24} wall {figures['wall_s']:7.2f} s  denoiser busy {figures['busy_s']:7.2f} s  "
            f"= {100 * figures['fraction']:.1f}% of wall time"
        )
    return rows


if __name__ == "__main__":
    main()
