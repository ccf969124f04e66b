"""The split is faithful: latents then our chunked VAE decode give diffusers' own one-call frames."""

import copy
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipeline,
)

from pipeline.decode import decode_latents, frames_to_uint8
from pipeline.latents import generate_latents
from pipeline.models import TINY_DEFAULT_RESOLUTION, TINY_NATIVE_FRAMES
from tests.pipeline.bad_images import noise
from tests.pipeline.diffusers_reference import diffusers_reference

# diffusers' Euler scheduler calls np.array() on a torch tensor, which numpy 2.4 flags with torch 2.13.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

WIDTH, HEIGHT, FRAMES = 128, 64, 5
KNOBS: dict[str, Any] = {
    "width": WIDTH,
    "height": HEIGHT,
    "num_frames": FRAMES,
    "steps": 2,
    "cfg_scale": 3.0,
    "motion_bucket_id": 127,
    "augmentation_level": 0.02,
    "fps_cond": 4,
    "seed": 1234,
}


@pytest.fixture(scope="module")
def image() -> PIL.Image.Image:
    return noise(WIDTH, HEIGHT, seed=5)


@pytest.fixture(scope="module")
def latents(pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image) -> torch.Tensor:
    return generate_latents(pipe, image, **KNOBS)


def diffusers_frames(pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image, chunk_size: int) -> np.ndarray:
    """What diffusers' own pipeline gives in one call with the same image, seed and knobs."""
    frames = diffusers_reference(pipe, image, KNOBS, decode_chunk_size=chunk_size, output_type="np")
    assert isinstance(frames, np.ndarray)
    video: np.ndarray = frames[0]
    return video


@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [FRAMES, 2, 1])
def test_split_equals_diffusers_in_one_call(
    pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image, latents: torch.Tensor, chunk_size: int
) -> None:
    ours = decode_latents(pipe.vae, latents, num_frames=FRAMES, chunk_size=chunk_size)
    theirs = diffusers_frames(pipe, image, chunk_size)
    assert ours.shape == theirs.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_chunk_size_is_part_of_the_output(pipe: StableVideoDiffusionPipeline, latents: torch.Tensor) -> None:
    # The temporal decoder mixes neighbouring frames within a chunk, so one chunk size must be used
    # throughout (diffusers' default decodes all frames at once).
    whole = decode_latents(pipe.vae, latents, num_frames=FRAMES, chunk_size=FRAMES)
    single = decode_latents(pipe.vae, latents, num_frames=FRAMES, chunk_size=1)
    assert not np.allclose(whole, single, atol=1e-3)
    assert whole.min() >= 0.0 and whole.max() <= 1.0 and whole.std() > 0.01


@pytest.mark.slow
def test_half_precision_vae_matches_diffusers(pipe: StableVideoDiffusionPipeline, latents: torch.Tensor) -> None:
    # CPU has no fast float16; bfloat16 takes the same cast-then-decode path that float16 takes on CUDA.
    half = copy.deepcopy(pipe)
    half.vae.to(torch.bfloat16)
    ours = decode_latents(half.vae, latents, num_frames=FRAMES, chunk_size=3)
    with torch.no_grad():
        decoded = half.decode_latents(latents.to(torch.bfloat16), FRAMES, 3)
    theirs = half.video_processor.postprocess_video(video=decoded, output_type="np")[0]
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "num_frames", "chunk_size", "message"),
    [
        ((FRAMES, 4, 8, 16), FRAMES, 1, r"shape \(1, frames, channels, h, w\)"),
        ((2, FRAMES, 4, 8, 16), FRAMES, 1, r"shape \(1, frames, channels, h, w\)"),
        ((1, FRAMES, 4, 8, 16), FRAMES + 1, 1, f"hold {FRAMES} frames but num_frames is {FRAMES + 1}"),
        ((1, FRAMES, 8, 8, 16), FRAMES, 1, "8 channels but the VAE expects 4"),
        ((1, FRAMES, 4, 8, 16), FRAMES, 0, "chunk_size must be >= 1, got 0"),
        # The frame count is checked before it is used to check the latents' shape.
        ((1, FRAMES, 4, 8, 16), 0, 1, "num_frames must be >= 1, got 0"),
        ((1, 0, 4, 8, 16), 0, 1, "num_frames must be >= 1, got 0"),
    ],
)
def test_bad_latents_are_named(
    pipe: StableVideoDiffusionPipeline, shape: tuple[int, ...], num_frames: int, chunk_size: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        decode_latents(pipe.vae, torch.zeros(shape), num_frames=num_frames, chunk_size=chunk_size)


def test_frames_to_uint8_rounds_and_clips() -> None:
    frames = np.array([-0.2, 0.0, 0.4 / 255, 0.6 / 255, 0.5, 254.6 / 255, 1.0, 1.3], dtype=np.float32)
    assert frames_to_uint8(frames).tolist() == [0, 0, 0, 1, 128, 255, 255, 255]
    assert frames_to_uint8(frames).dtype == np.uint8


def test_default_shape_smoke(pipe: StableVideoDiffusionPipeline) -> None:
    width, height = TINY_DEFAULT_RESOLUTION
    image = PIL.Image.new("RGB", (width, height), (200, 120, 40))
    latents = generate_latents(
        pipe, image, **(KNOBS | {"width": width, "height": height, "num_frames": TINY_NATIVE_FRAMES})
    )
    assert latents.shape == (1, TINY_NATIVE_FRAMES, 4, height // 8, width // 8)
    frames = frames_to_uint8(
        decode_latents(pipe.vae, latents, num_frames=TINY_NATIVE_FRAMES, chunk_size=TINY_NATIVE_FRAMES)
    )
    assert frames.shape == (TINY_NATIVE_FRAMES, height, width, 3) and frames.dtype == np.uint8
