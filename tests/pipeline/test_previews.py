"""Live previews: the latent->RGB projection, the denoised estimate, the WebP, the throttle and the tap.

What is tested is the arithmetic on the published SD factors and on diffusers' own Euler scheduler, with
synthetic latents. Not tested: that a real SVD latent's preview looks like its video (the tiny model's
VAE has random weights, so its latents are not in SD's latent space; that is a property of the factors).
"""

import io

import numpy as np
import pytest
import torch
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from PIL import Image

from pipeline.models import build_tiny_svd
from pipeline.previews import (
    PREVIEW_FRAMES,
    PREVIEW_LONG_SIDE,
    SD_LATENT_RGB_FACTORS,
    PreviewTap,
    Throttle,
    encode_preview,
    euler_denoised,
    project_to_rgb,
    shrink_latents,
)

FACTORS = np.array(SD_LATENT_RGB_FACTORS, dtype=np.float64)  # (4, 3)


def latents_showing(rgb: np.ndarray) -> torch.Tensor:
    """Latents (frames, 4, h, w) whose projection is ``rgb`` (frames, h, w, 3) in [-1, 1]: the factors have
    rank 3, so ``rgb @ pinv(factors)`` maps back exactly onto ``rgb``."""
    latent = rgb @ np.linalg.pinv(FACTORS)  # (frames, h, w, 4)
    return torch.from_numpy(latent.transpose(0, 3, 1, 2).astype(np.float32))


def a_picture(frames: int, height: int, width: int) -> np.ndarray:
    """Smooth colour gradients in [-0.9, 0.9], different in each frame."""
    y, x = np.mgrid[0:height, 0:width]
    out = np.empty((frames, height, width, 3))
    for f in range(frames):
        out[f, ..., 0] = np.sin(x / width * 3 + f)
        out[f, ..., 1] = np.cos(y / height * 2 - f)
        out[f, ..., 2] = np.sin((x + y) / (width + height) * 4)
    return 0.9 * out


def test_projection_applies_the_published_factors_then_maps_minus_one_one_to_bytes() -> None:
    latents = torch.randn(3, 4, 5, 7, generator=torch.Generator().manual_seed(1)) * 2
    expected = np.einsum("fchw,ck->fhwk", latents.double().numpy(), FACTORS)
    expected = np.clip(np.round((expected + 1) * 127.5), 0, 255)

    pixels = project_to_rgb(latents)

    assert pixels.dtype == np.uint8 and pixels.shape == (3, 5, 7, 3)
    assert np.abs(pixels.astype(int) - expected).max() <= 1  # float32 against float64 rounding
    assert pixels.min() == 0 and pixels.max() == 255  # latents of std 2 reach past both ends: clipped
    assert (project_to_rgb(torch.zeros(1, 4, 2, 2)) == 128).all()  # zero latents: mid grey (no bias for SD)


def test_a_latent_made_to_show_a_picture_previews_as_that_picture() -> None:
    picture = a_picture(4, 24, 32)
    pixels = project_to_rgb(latents_showing(picture))
    assert np.abs(pixels.astype(float) - (picture + 1) * 127.5).max() <= 1.0


def test_shrinking_keeps_a_few_frames_and_pools_to_the_long_side_like_the_picture_downscaled() -> None:
    picture = a_picture(25, 144, 520)  # a 4160x1152 video's latents: more than 256 across
    latents = latents_showing(picture)[None]  # (1, 25, 4, 144, 520)

    shrunk = shrink_latents(latents)

    assert shrunk.shape == (PREVIEW_FRAMES, 4, 48, 174)  # pooled by ceil(520 / 256) = 3
    assert max(shrunk.shape[-2:]) <= PREVIEW_LONG_SIDE
    preview = project_to_rgb(shrunk).astype(float)
    # The first and last frames are among those shown, and pooling commutes with the linear projection:
    # the preview is the picture box-downscaled by the same factor.
    factor = 3  # ceil(520 / 256)
    for shown, source in ((0, 0), (PREVIEW_FRAMES - 1, 24)):
        frame = picture[source]
        h, w = preview.shape[1:3]
        padded = np.pad(frame, ((0, h * factor - 144), (0, w * factor - 520), (0, 0)), mode="edge")
        # ceil_mode pools a partial window over the cells inside only; edge padding gives the same mean
        # only approximately there, so compare the full windows.
        boxes = padded.reshape(h, factor, w, factor, 3).mean(axis=(1, 3))
        full_h, full_w = 144 // factor, 520 // factor
        assert np.abs(preview[shown, :full_h, :full_w] - (boxes[:full_h, :full_w] + 1) * 127.5).max() <= 1.0


def test_shrinking_small_latents_keeps_their_size_and_all_frames_when_few() -> None:
    latents = torch.randn(1, 5, 4, 24, 32)
    shrunk = shrink_latents(latents)
    assert shrunk.shape == (5, 4, 24, 32)
    assert torch.equal(shrunk, latents[0])


def test_bad_shapes_are_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="batch, frames, channels"):
        shrink_latents(torch.zeros(4, 8, 8))
    with pytest.raises(ValueError, match="for these factors"):
        project_to_rgb(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="uint8"):
        encode_preview(np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="lowers sigma"):
        euler_denoised(torch.zeros(1), torch.zeros(1), 1.0, 2.0)


def test_the_denoised_estimate_is_what_diffusers_euler_step_predicted() -> None:
    """SVD's own scheduler (the tiny model's, configured as SVD's): the estimate recovered from the latents
    before and after each step equals the step's ``pred_original_sample``."""
    scheduler = build_tiny_svd().scheduler
    assert isinstance(scheduler, EulerDiscreteScheduler)
    scheduler.set_timesteps(6)
    generator = torch.Generator().manual_seed(5)
    sample = torch.randn(1, 3, 4, 6, 8, generator=generator) * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        scheduler.scale_model_input(sample, t)  # what the pipeline does; the scheduler expects it
        model_output = torch.randn(sample.shape, generator=generator)
        out = scheduler.step(model_output, t, sample)
        sigma, sigma_next = float(scheduler.sigmas[i]), float(scheduler.sigmas[i + 1])
        estimate = euler_denoised(sample, out.prev_sample, sigma, sigma_next)
        # The estimate is about 3 in size; the noisy latents about 550 at first (float32 rounding of those
        # is the 2e-4 seen at sigma 700). Showing the latents instead would be off by hundreds.
        assert torch.allclose(estimate, out.pred_original_sample, rtol=0, atol=1e-3), i
        sample = out.prev_sample


def test_the_preview_is_an_animated_webp_of_its_frames() -> None:
    frames = (np.random.default_rng(2).random((8, 24, 32, 3)) * 255).astype(np.uint8)
    data = encode_preview(frames)
    image = Image.open(io.BytesIO(data))
    assert image.format == "WEBP" and image.size == (32, 24) and getattr(image, "n_frames", 1) == 8
    still = Image.open(io.BytesIO(encode_preview(frames[:1])))
    assert still.format == "WEBP" and getattr(still, "n_frames", 1) == 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_allows_one_per_interval_and_always_the_last_step() -> None:
    clock = Clock()
    throttle = Throttle(1.0, clock)
    seen = []
    for step in range(1, 21):  # 20 steps of 0.3 s
        clock.now += 0.3
        if throttle.due(step, 20):
            seen.append(step)
    # Due at 1.2 s, 2.4 s, 3.6 s, 4.8 s, 6.0 s (steps 4, 8, 12, 16, 20); the last step whatever the time.
    assert seen == [4, 8, 12, 16, 20]
    never = Throttle(3600.0, clock)
    assert [s for s in range(1, 6) if never.due(s, 5)] == [5]
    every = Throttle(0.0, clock)
    assert [s for s in range(1, 4) if every.due(s, 3)] == [1, 2, 3]
    with pytest.raises(ValueError, match="interval_s"):
        Throttle(-1.0)


def test_the_tap_shows_the_estimate_one_step_after_a_due_step_and_always_the_last() -> None:
    taken: list[tuple[int, torch.Tensor]] = []
    tap = PreviewTap(due=lambda step, total: step == 2, take=lambda step, total, x: taken.append((step, x)))
    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.0])
    x0 = torch.full((1, 2, 4, 3, 3), 0.5)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    for step in range(1, 5):  # latents after each step: x0 plus noise at that step's sigma
        tap.after_step(step, 4, x0 + noise * sigmas[step], sigmas)
    assert [step for step, _ in taken] == [3, 4]
    # From x0 + n*sigma the Euler estimate is exactly x0; the last step's latents are x0 themselves.
    for _, shown in taken:
        assert torch.allclose(shown, torch.full((2, 4, 3, 3), 0.5), atol=1e-5)


def test_the_tap_shows_the_latents_at_once_without_the_schedulers_sigmas() -> None:
    taken: list[int] = []
    tap = PreviewTap(due=lambda step, total: step == 2, take=lambda step, total, x: taken.append(step))
    for step in range(1, 5):
        tap.after_step(step, 4, torch.zeros(1, 2, 4, 3, 3), None)
    assert taken == [2, 4]


def test_a_failing_preview_turns_the_tap_off_and_never_reaches_the_denoising() -> None:
    calls: list[int] = []

    def take(step: int, total: int, latents: torch.Tensor) -> None:
        calls.append(step)
        raise OSError("the disk is full")

    tap = PreviewTap(due=lambda step, total: True, take=take)
    for step in range(1, 5):
        tap.after_step(step, 4, torch.zeros(1, 2, 4, 3, 3), None)  # does not raise
    assert calls == [1]
