"""The opt-in speed options on the tiny SVD (CPU): parsing, refusals, and what each does to the output."""

import copy
from typing import Any

import PIL.Image
import pytest
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipeline,
)

from pipeline.accel import DEFAULT, FastOptionError, apply_to_unet, check_device, fuse_qkv, parse_fast
from pipeline.latents import encode_conditioning, generate_latents
from pipeline.step_cache import StepCache
from tests.pipeline.bad_images import noise

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

KNOBS: dict[str, Any] = {
    "width": 64,
    "height": 64,
    "num_frames": 2,
    "steps": 2,
    "cfg_scale": 2.5,
    "motion_bucket_id": 90,
    "augmentation_level": 0.05,
    "fps_cond": 3,
    "seed": 42,
}


@pytest.fixture(scope="module")
def image() -> PIL.Image.Image:
    return noise(64, 64, seed=7)


@pytest.fixture(scope="module")
def default_latents(pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image) -> torch.Tensor:
    return generate_latents(pipe, image, **KNOBS)


def test_options_read_back_what_they_say() -> None:
    text = "channels_last,compile,sdpa=flash,fuse_qkv,dtype=bf16,step_cache=3,skip_cfg=0.6,auto_chunk"
    options = parse_fast(text)
    assert parse_fast(",".join(options.names())) == options
    assert options.step_cache == 3 and options.skip_cfg == 0.6 and options.sdpa == "flash"
    assert parse_fast("") == DEFAULT and DEFAULT.names() == []


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("turbo", "unknown fast option 'turbo'"),
        ("step_cache=two", "'step_cache' takes a int"),
        ("step_cache=1", "step_cache must be 0 (off) or >= 2"),
        ("skip_cfg=1.5", "skip_cfg must be in [0, 1]"),
        ("sdpa=fastest", "sdpa must be one of"),
        ("dtype=fp8", "dtype must be one of"),
        ("cuda_graphs", "cuda_graphs works through torch.compile"),
    ],
)
def test_bad_options_are_named(text: str, words: str) -> None:
    with pytest.raises(FastOptionError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_fast(text)


@pytest.mark.parametrize("text", ["fp8", "compile,cuda_graphs", "sdpa=cudnn"])
def test_what_needs_cuda_is_refused_on_the_cpu(text: str) -> None:
    with pytest.raises(FastOptionError, match="CUDA"):
        check_device(parse_fast(text), torch.device("cpu"))


@pytest.mark.parametrize("text", ["channels_last", "fuse_qkv", "sdpa=flash", "sdpa=math"])
def test_exact_options_keep_the_output(
    pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image, default_latents: torch.Tensor, text: str
) -> None:
    options = parse_fast(text)
    fast_pipe = copy.deepcopy(pipe)
    apply_to_unet(fast_pipe.unet, options)
    ours = generate_latents(fast_pipe, image, **KNOBS, fast=options)
    # Float rounding only (other kernels, other summation order), but the first step's noise level of 700
    # multiplies it: measured 8e-4 for channels_last, 1e-4 for fuse_qkv, 0 for the backends, on values up to 1.8.
    torch.testing.assert_close(ours, default_latents, rtol=0, atol=2e-3)


def test_fusing_reaches_every_attention_of_the_unet_and_the_vae(pipe: StableVideoDiffusionPipeline) -> None:
    fused = copy.deepcopy(pipe)
    assert fuse_qkv(fused.unet) > 0 and fuse_qkv(fused.vae) > 0
    assert fuse_qkv(fused.unet) == 0  # already fused: left alone


def test_step_cache_with_every_step_full_is_the_unet_itself(
    pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image
) -> None:
    cond = encode_conditioning(pipe, image, **{k: v for k, v in KNOBS.items() if k != "steps"})
    sample = torch.randn(2, 2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    model_input = torch.cat([sample, cond.image_latents], dim=2)
    t = torch.tensor(0.5)
    with torch.no_grad():
        expected = pipe.unet(model_input, t, cond.image_embeddings, cond.added_time_ids, return_dict=False)[0]
        cache = StepCache(pipe.unet)
        full = cache(model_input, t, cond.image_embeddings, cond.added_time_ids, full=True)
        cached = cache(model_input, t, cond.image_embeddings, cond.added_time_ids, full=False)
    torch.testing.assert_close(full, expected, rtol=0, atol=1e-5)
    # Same input, deep features from the same step: the cheap step gives the same output.
    torch.testing.assert_close(cached, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("text", ["step_cache=2", "skip_cfg=0.5"])
def test_step_skipping_modes_change_the_output(
    pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image, default_latents: torch.Tensor, text: str
) -> None:
    ours = generate_latents(pipe, image, **KNOBS, fast=parse_fast(text))
    assert ours.shape == default_latents.shape and torch.isfinite(ours).all()
    assert not torch.equal(ours, default_latents)
