"""What a warm stack saves: `i2v generate` of the default tiny job as a user types it, once starting the
embedded stack for the one job (no stack running) and once with `--stack DIR` against a stack already up.

Each run is the whole command in a process of its own, as wall time. Prints every run and the median
ratio one-shot / warm.

    .venv/bin/python bench/warm_generate.py --runs 3
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HARBOR = ROOT / "examples" / "harbor.png"
I2V = Path(sys.executable).parent / "i2v"


def generate_s(folder: Path, *options: str) -> float:
    """Seconds `i2v generate` takes from launch to exit, run from ``folder`` with no I2V_* variable."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("I2V_")}
    started = time.perf_counter()
    result = subprocess.run(
        [str(I2V), "generate", str(HARBOR), "-o", str(folder / "out.mp4"), "--seed", "1", *options],
        cwd=folder,
        env=clean,
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"i2v generate failed: {result.stderr[-2000:]}")
    return took


def main() -> None:
    from services.stack.embedded import WITH_GATEWAY, EmbeddedStack

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="i2v-bench-") as tmp:
        home = Path(tmp)
        one_shot = [generate_s(home) for _ in range(args.runs)]  # nothing in ./.i2v: each starts its own
        with EmbeddedStack(home / "warm", services=WITH_GATEWAY):
            warm = [generate_s(home, "--stack", str(home / "warm")) for _ in range(args.runs)]
    for n, (cold_s, warm_s) in enumerate(zip(one_shot, warm, strict=True), start=1):
        print(f"run {n}: one-shot {cold_s:6.1f} s   warm --stack {warm_s:6.1f} s")
    cold_median, warm_median = statistics.median(one_shot), statistics.median(warm)
    print(
        f"median: one-shot {cold_median:.1f} s, warm {warm_median:.1f} s; "
        f"one-shot / warm = {cold_median / warm_median:.2f}"
    )


if __name__ == "__main__":
    main()
