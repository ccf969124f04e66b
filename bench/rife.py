"""What RIFE costs per in-between frame, beside today's DIS-flow method, on the same synthetic clip.

Without ``--weights`` the network has seeded random weights in the 4.25 layout: the time is the same
as with the published ones (same shapes, same operations), the pictures are not. Prints the median of
``--runs`` runs in milliseconds per in-between frame; on a CPU shared with other work, ``--threads 1``
gives steadier figures than an oversubscribed thread pool.

    .venv/bin/python bench/rife.py                      # 256x192 on CPU, fp32
    .venv/bin/python bench/rife.py --weights train_log  # the published flownet.pkl (file or folder)
"""

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.interpolate import interpolate_to_count  # noqa: E402
from pipeline.rife import RifeModel, default_rife_dtype, load_rife, rife_from_state_dict, rife_to_count  # noqa: E402
from pipeline.rife_net import DEFAULT_LAYOUT, RIFE_LAYOUTS, IFNet  # noqa: E402


def moving_clip(frames: int, height: int, width: int) -> NDArray[np.uint8]:
    """A smooth random texture panning 3 px right and 1 px down per frame."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (height // 8 + 4, width // 8 + 4, 3)).astype(np.float32)
    texture = np.kron(coarse, np.ones((8, 8, 1), dtype=np.float32))
    clip = [texture[k : k + height, 3 * k : 3 * k + width] for k in range(frames)]
    return np.stack(clip).astype(np.uint8)


def random_model(device: torch.device, dtype: torch.dtype) -> RifeModel:
    torch.manual_seed(425)
    net = IFNet(RIFE_LAYOUTS[DEFAULT_LAYOUT])
    state = {f"module.{key}": value for key, value in net.state_dict().items()}
    return rife_from_state_dict(state, device, dtype, source="random weights")


def timed(run: Callable[[], object], runs: int, per: int) -> str:
    """Median milliseconds per frame over ``runs``, with the fastest and slowest run to show the noise."""
    run()  # warm-up: allocator, oneDNN / cuDNN kernel choice
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - start) / per)
    return f"{statistics.median(times):7.1f} ms per in-between frame (runs {min(times):.1f}-{max(times):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--frames", type=int, default=8, help="native frames")
    parser.add_argument("--count", type=int, default=22, help="output frames")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (fewer than the cores steadies a shared machine)"
    )
    parser.add_argument("--weights", type=Path, default=None, help="flownet.pkl or its folder")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = default_rife_dtype(device)
    model = load_rife(args.weights, device, dtype) if args.weights else random_model(device, dtype)
    clip = moving_clip(args.frames, args.height, args.width)
    in_between = sum(1 for k in range(args.count) if k * (args.frames - 1) % (args.count - 1))
    weights = args.weights or "random weights"
    print(
        f"{args.width}x{args.height}, {args.frames} -> {args.count} frames ({in_between} in-between), "
        f"{device.type} {str(dtype).removeprefix('torch.')}, torch threads {torch.get_num_threads()}"
    )
    for batch in sorted({1, args.batch_size}):
        run = functools.partial(rife_to_count, clip, args.count, model, batch_size=batch)
        print(f"  rife {model.layout.name} ({weights}), batch {batch}: {timed(run, args.runs, in_between)}")
    dis = timed(lambda: interpolate_to_count(clip, args.count), args.runs, in_between)
    print(f"  dis (pipeline.interpolate):        {dis}")


if __name__ == "__main__":
    main()
