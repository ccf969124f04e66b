"""The latent stage on the tiny SVD: same latents as diffusers' pipeline, progress, cancellation, checks."""

from typing import Any

import PIL.Image
import pytest
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipeline,
)

from contracts.params import GenerationParams
from pipeline.latents import fps_conditioning, generate_latents, generate_latents_for, pixel_multiple
from tests.pipeline.bad_images import noise
from tests.pipeline.diffusers_reference import diffusers_reference

# diffusers' Euler scheduler calls np.array() on a torch tensor, which numpy 2.4 flags with torch 2.13.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

WIDTH, HEIGHT, FRAMES, STEPS = 128, 64, 4, 3


@pytest.fixture(scope="module")
def image() -> PIL.Image.Image:
    return noise(WIDTH, HEIGHT, seed=7)


def params(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "width": WIDTH,
        "height": HEIGHT,
        "num_frames": FRAMES,
        "steps": STEPS,
        "cfg_scale": 2.5,
        "motion_bucket_id": 90,
        "augmentation_level": 0.05,
        "fps_cond": 3,
        "seed": 42,
    }
    values.update(overrides)
    return values


class StopJob(Exception):
    pass


# --- fps_conditioning -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("native_frames", "duration_s", "expected"),
    [(8, 4, 2), (25, 4, 6), (14, 2, 7), (25, 2, 13), (25, 8, 3), (8, 8, 1), (3, 8, 1), (8, 1, 8)],
)
def test_fps_conditioning(native_frames: int, duration_s: int, expected: int) -> None:
    assert fps_conditioning(native_frames, duration_s) == expected


@pytest.mark.parametrize(("native_frames", "duration_s", "name"), [(0, 4, "native_frames"), (8, 0, "duration_s")])
def test_fps_conditioning_rejects_nonsense(native_frames: int, duration_s: int, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        fps_conditioning(native_frames, duration_s)


# --- generate_latents -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_jobs_latents_are_generate_latents_with_its_knobs(
    pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image
) -> None:
    job = GenerationParams(
        steps=2, duration=2, cfg_scale=2.5, motion_bucket_id=90, augmentation_level=0.05, min_cfg=1.5, seed=42
    )
    knobs = params(steps=2, fps_cond=fps_conditioning(FRAMES, 2))
    ours = generate_latents_for(pipe, image, job, width=WIDTH, height=HEIGHT, num_frames=FRAMES)
    assert torch.equal(ours, generate_latents(pipe, image, **knobs, min_cfg=1.5))
    # The job's own fps conditioning, when it has one, wins over the default.
    own = generate_latents_for(
        pipe, image, job.model_copy(update={"fps_conditioning": 9}), width=WIDTH, height=HEIGHT, num_frames=FRAMES
    )
    assert torch.equal(own, generate_latents(pipe, image, **{**knobs, "fps_cond": 9}, min_cfg=1.5))


@pytest.mark.slow
def test_latents_equal_the_diffusers_pipeline(pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image) -> None:
    ours = generate_latents(pipe, image, **params())
    theirs = diffusers_reference(pipe, image, params(), output_type="latent")
    assert ours.shape == (1, FRAMES, 4, HEIGHT // 8, WIDTH // 8)
    assert ours.dtype == torch.float32 and ours.device.type == "cpu"
    assert torch.equal(ours, theirs)


def test_min_cfg_is_the_start_of_diffusers_guidance_ramp(
    pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image
) -> None:
    knobs = params(steps=1, min_cfg=1.8)
    assert torch.equal(
        generate_latents(pipe, image, **knobs), diffusers_reference(pipe, image, knobs, output_type="latent")
    )
    # The default is SVD's own ramp from 1: passing 1.0 changes nothing, bit for bit.
    assert torch.equal(
        generate_latents(pipe, image, **params(steps=1)), generate_latents(pipe, image, **params(steps=1, min_cfg=1.0))
    )
    with pytest.raises(ValueError, match="min_cfg"):
        generate_latents(pipe, image, **params(steps=1, min_cfg=3.0))


def test_seed_decides_the_latents(pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image) -> None:
    torch.manual_seed(0)
    first = generate_latents(pipe, image, **params(steps=2))
    torch.manual_seed(1)  # the global RNG must not matter
    again = generate_latents(pipe, image, **params(steps=2))
    other = generate_latents(pipe, image, **params(steps=2, seed=43))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_every_knob_reaches_the_model(pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image) -> None:
    base = generate_latents(pipe, image, **params(steps=1))
    knobs = (
        {"cfg_scale": 1.0},
        {"motion_bucket_id": 200},
        {"augmentation_level": 0.5},
        {"fps_cond": 7},
        {"min_cfg": 2.0},
    )
    for knob in knobs:
        changed = generate_latents(pipe, image, **params(steps=1, **knob))
        assert not torch.allclose(base, changed), knob


def test_progress_is_reported_after_each_step(pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image) -> None:
    seen: list[tuple[int, int]] = []
    generate_latents(pipe, image, **params(), on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(1, STEPS), (2, STEPS), (3, STEPS)]


def test_raising_from_on_step_stops_denoising(pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image) -> None:
    unet_calls: list[int] = []
    handle = pipe.unet.register_forward_hook(lambda *_: unet_calls.append(1))

    def cancel(done: int, total: int) -> None:
        raise StopJob(f"cancelled at {done}/{total}")

    try:
        with pytest.raises(StopJob, match="cancelled at 1/3"):
            generate_latents(pipe, image, **params(), on_step=cancel)
    finally:
        handle.remove()
    assert len(unet_calls) == 1


def test_pixel_multiple_of_the_tiny_model_is_svds(pipe: StableVideoDiffusionPipeline) -> None:
    assert pixel_multiple(pipe) == 64


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"width": 96}, "width must be a positive multiple of 64 for this model, got 96"),
        ({"height": 0}, "height must be a positive multiple of 64 for this model, got 0"),
        ({"num_frames": 0}, "num_frames must be >= 1, got 0"),
        ({"steps": 0}, "steps must be >= 1, got 0"),
        ({"cfg_scale": 0.5}, "cfg_scale must be >= 1.0"),
        ({"motion_bucket_id": -1}, "motion_bucket_id must be >= 0, got -1"),
        ({"augmentation_level": -0.1}, "augmentation_level must be >= 0, got -0.1"),
        ({"fps_cond": 0}, "fps_cond must be >= 1, got 0"),
        ({"seed": -1}, "seed must be in"),
        ({"width": 64}, "image is 128x64 but 64x64 was asked for"),
    ],
)
def test_bad_inputs_are_named(
    pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        generate_latents(pipe, image, **params(**overrides))


def test_non_rgb_image_is_refused(pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image) -> None:
    with pytest.raises(ValueError, match="'RGBA'"):
        generate_latents(pipe, image.convert("RGBA"), **params())
