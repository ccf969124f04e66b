"""The gateway's peak memory while large uploads arrive at once.

Starts nats-server and SeaweedFS on loopback and one gateway process (``i2v serve gateway``), then sends
``--uploads`` submits at the same moment, each a 40-megapixel image (default: a 6320x6320 RGBA PNG of
about 170 KB, the upload that once took one gateway to 1 GB), from an account whose points and job
limit let every one of them through to the decode. Samples the gateway's resident memory every few
milliseconds and prints its peak (the kernel's high-water mark) beside the goal of 600 MB. Nothing
consumes the queued jobs; loopback only, bounded in time, and ``--rss-cap-mib`` stops the gateway
before it takes the machine's memory.

    .venv/bin/python bench/upload_memory.py --uploads 10
"""

import argparse
import asyncio
import io
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from bench.gateway_process import served_gateway, status_kib  # noqa: E402
from infra.ports import LOOPBACK  # noqa: E402

GOAL_MIB = 600
"""The issue's goal: the gateway stays under 600 MB while 10 such uploads arrive at once."""


def big_image(kind: str) -> bytes:
    """A 40-megapixel image that compresses to almost nothing: the cheapest upload that costs a full decode."""
    out = io.BytesIO()
    if kind == "png":
        Image.new("RGBA", (6320, 6320), (30, 120, 200, 255)).save(out, format="PNG")
    else:
        Image.new("RGB", (7680, 5184), (30, 120, 200)).save(out, format="JPEG", quality=90)
    return out.getvalue()


@dataclass
class UploadMemory:
    """What one run saw."""

    uploads: int
    image_bytes: int
    idle_mib: float
    peak_mib: float
    seconds: float
    statuses: list[int]
    capped: bool

    def report(self) -> str:
        ratio = self.peak_mib / GOAL_MIB
        capped = f" (stopped at the --rss-cap: at least {self.peak_mib:.0f} MiB)" if self.capped else ""
        return "\n".join(
            [
                f"uploads     {self.uploads} at once, each {self.image_bytes / 1024:.0f} KB of 40 megapixels",
                f"answers     {sorted(self.statuses)} in {self.seconds:.1f} s",
                f"gateway     {self.idle_mib:.0f} MiB idle, peak {self.peak_mib:.0f} MiB{capped}",
                f"goal        < {GOAL_MIB} MiB: peak / goal = {ratio:.2f} ({'met' if ratio < 1 else 'NOT met'})",
            ]
        )


class PeakSampler:
    """Polls a process's resident memory from a thread; stops it past ``cap_kib``."""

    def __init__(self, pid: int, cap_kib: int, every_s: float = 0.005) -> None:
        self.pid, self.cap_kib, self.every_s = pid, cap_kib, every_s
        self.peak_kib = 0
        self.capped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = status_kib(self.pid, "VmRSS")
            except (OSError, RuntimeError):
                return
            self.peak_kib = max(self.peak_kib, rss)
            if rss > self.cap_kib:
                self.capped = True
                os.kill(self.pid, 9)
                return
            time.sleep(self.every_s)


async def send_all(port: int, key: str, image: bytes, uploads: int) -> list[int]:
    import httpx

    limits = httpx.Limits(max_connections=uploads)
    async with httpx.AsyncClient(
        base_url=f"http://{LOOPBACK}:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=300, limits=limits
    ) as client:
        fields = {"duration": "1", "fps": "8", "steps": "1"}

        async def one() -> int:
            try:
                response = await client.post("/v1/jobs", files={"image": ("big.png", image, "image/png")}, data=fields)
            except httpx.HTTPError:
                return 0  # the gateway went away (the cap stopped it)
            return response.status_code

        return list(await asyncio.gather(*(one() for _ in range(uploads))))


def measure(uploads: int = 10, kind: str = "png", rss_cap_mib: int = 8000, timeout_s: float = 300.0) -> UploadMemory:
    """Run one gateway process and send ``uploads`` 40-megapixel submits to it at once."""
    image = big_image(kind)
    with tempfile.TemporaryDirectory(prefix="i2v-bench-upload-") as tmp:
        state = Path(tmp)
        with served_gateway(state, max_active_jobs=uploads) as gateway:
            time.sleep(0.5)
            idle = status_kib(gateway.pid, "VmRSS")
            started = time.perf_counter()
            with PeakSampler(gateway.pid, rss_cap_mib * 1024) as sampler:
                statuses = asyncio.run(asyncio.wait_for(send_all(gateway.port, gateway.key, image, uploads), timeout_s))
                seconds = time.perf_counter() - started
                # The kernel's high-water mark catches a peak between two samples.
                peak = sampler.peak_kib if sampler.capped else status_kib(gateway.pid, "VmHWM")
            return UploadMemory(
                uploads,
                len(image),
                idle / 1024,
                max(peak, sampler.peak_kib) / 1024,
                seconds,
                statuses,
                sampler.capped,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=10)
    parser.add_argument("--image", choices=["png", "jpeg"], default="png", help="6320x6320 RGBA PNG or 7680x5184 JPEG")
    parser.add_argument("--rss-cap-mib", type=int, default=8000, help="stop the gateway past this resident size")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    if not 1 <= args.uploads <= 50:
        parser.error("keep it bounded: 1-50 uploads")
    result = measure(args.uploads, args.image, args.rss_cap_mib, args.timeout)
    print(result.report())
    return 0 if all(s == 202 for s in result.statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
