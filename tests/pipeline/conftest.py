"""Fixtures shared by the pipeline tests."""

import numpy as np
import pytest
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipeline,
)
from numpy.typing import NDArray

from pipeline.models import build_tiny_svd
from tests.pipeline.pictures import PICTURES


@pytest.fixture(scope="module")
def pipe() -> StableVideoDiffusionPipeline:
    """The tiny random SVD, built once per test module; a test that changes it works on a deep copy."""
    return build_tiny_svd()


@pytest.fixture(params=sorted(PICTURES))
def picture(request: pytest.FixtureRequest) -> NDArray[np.uint8]:
    """Each real picture in :data:`tests.pipeline.pictures.PICTURES` in turn."""
    name: str = request.param
    return PICTURES[name]()
