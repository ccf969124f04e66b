"""Thread budgets: how many CPU threads each service's compute (torch, OpenCV, OpenMP/BLAS) may use.

A service alone on its host takes every core (``I2V_THREADS``, default all this process may run on).
Services sharing one host (the embedded stack) split them instead: every library would otherwise start
one thread per core in each process, and on a busy host torch's OpenMP threads wait on each other at
every parallel region (measured on 2 shared cores: a 10-step denoise 4-9x slower with 2 threads than
with 1). The split gives the GPU-side stages the cores in proportion to their work on the tiny model
on a CPU (denoise and VAE decode alike, encoding a fraction) and at least one thread each; ingest
prepares one picture per job and takes one. ``I2V_THREADS_<SERVICE>`` sets one service's own. A service
run as several processes (replicas) splits its share among them: they do the same work per job as one.
"""

import logging
import math
import os
import sys
from collections.abc import Iterable, Mapping

from services.config import Settings, settings_from

log = logging.getLogger("i2v.threads")

SHARE_WEIGHTS = {"latent": 3, "decode": 3, "mux": 1}
"""Relative CPU work per job of the stages that split the cores (tiny model, 4 s at 24 fps, on a CPU)."""
ONE_THREAD = frozenset({"ingest"})
"""Services with a little compute per job: one thread, outside the split."""
_ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")
"""Read when each library loads: covers a library this process has not imported yet."""


def available_cores() -> int:
    """The CPUs this process may run on (its affinity, which containers and ``taskset`` narrow)."""
    return len(os.sched_getaffinity(0))


def split_cores(cores: int, services: Iterable[str]) -> dict[str, int]:
    """Each of ``services``' threads when they share ``cores``: one-thread services 1, the others in
    proportion to :data:`SHARE_WEIGHTS`, at least 1 each (largest remainder); services with no
    compute (billing, the gateway) are left out."""
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    names = list(dict.fromkeys(services))
    heavy = [name for name in names if name in SHARE_WEIGHTS]
    shares = {name: 1 for name in names if name in ONE_THREAD}
    if heavy:
        total = sum(SHARE_WEIGHTS[name] for name in heavy)
        exact = {name: cores * SHARE_WEIGHTS[name] / total for name in heavy}
        split = {name: max(1, math.floor(value)) for name, value in exact.items()}
        by_remainder = sorted(heavy, key=lambda name: (split[name] - exact[name], heavy.index(name)))
        for name in by_remainder[: max(0, cores - sum(split.values()))]:
            split[name] += 1
        shares.update(split)
    return {name: shares[name] for name in names if name in shares}


def split_among(threads: int, replicas: int) -> list[int]:
    """A service's ``threads`` split among its ``replicas`` processes on one host: equal parts, the first
    ones taking what does not divide, and never under 1 (a replica has its one thread even when the
    service's share is smaller than its processes: it then waits on the others for a core)."""
    if threads < 1 or replicas < 1:
        raise ValueError(f"threads and replicas must be at least 1, got {threads} and {replicas}")
    part, left = divmod(threads, replicas)
    return [max(1, part + (1 if n < left else 0)) for n in range(replicas)]


def service_threads(settings: Settings, service: str) -> int:
    """This service's budget: ``I2V_THREADS_<SERVICE>``, else all of ``I2V_THREADS`` (it runs alone)."""
    own: int | None = getattr(settings, f"threads_{service}", None)
    return own or settings.threads or available_cores()


def thread_shares(settings: Settings, services: Iterable[str]) -> dict[str, int]:
    """Each service's threads when ``services`` share this host: its own setting, else its split share."""
    split = split_cores(settings.threads or available_cores(), services)
    return {name: getattr(settings, f"threads_{name}", None) or share for name, share in split.items()}


def shared_host_env(environ: Mapping[str, str], services: Iterable[str]) -> dict[str, str]:
    """``I2V_THREADS_<SERVICE>`` for each of ``services`` run together with the settings ``environ``
    gives: what the embedded stack hands its children so that they split the host's cores."""
    shares = thread_shares(settings_from(environ), services)
    return {f"I2V_THREADS_{name.upper()}": str(threads) for name, threads in shares.items()}


def apply_thread_budget(threads: int) -> None:
    """Hold this process's compute to ``threads`` threads: torch's and OpenCV's pools now if loaded,
    and every OpenMP/BLAS/OpenCV pool loaded later through its environment variable."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    for variable in _ENVIRONMENT:
        os.environ[variable] = str(threads)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)
    if "cv2" in sys.modules:
        import cv2

        cv2.setNumThreads(threads)


def threads_in_use() -> str:
    """What the loaded compute libraries will use, for the service's start-up line: ``torch 1, OpenCV 1``."""
    parts = []
    if "torch" in sys.modules:
        import torch

        parts.append(f"torch {torch.get_num_threads()}")
    if "cv2" in sys.modules:
        import cv2

        parts.append(f"OpenCV {cv2.getNumThreads()}")
    return ", ".join(parts) or "no torch or OpenCV loaded"


def budget_service(settings: Settings, service: str) -> int:
    """Apply ``service``'s budget in this process (call before its model loads) and return it."""
    threads = service_threads(settings, service)
    apply_thread_budget(threads)
    return threads


def settle_threads(service: str, threads: int) -> None:
    """Once the service's warm-up has loaded its libraries: hold them to ``threads`` (torch takes no more
    than the cores from its environment variable) and log what they use."""
    apply_thread_budget(threads)
    log.info("%s thread budget %d (%s)", service, threads, threads_in_use())
