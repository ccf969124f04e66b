"""Fixtures shared by the pipeline tests."""

import pytest
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipeline,
)

from pipeline.models import build_tiny_svd


@pytest.fixture(scope="module")
def pipe() -> StableVideoDiffusionPipeline:
    """The tiny random SVD, built once per test module; a test that changes it works on a deep copy."""
    return build_tiny_svd()
