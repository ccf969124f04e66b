"""Live previews of the denoising: the current denoised estimate as a small animated WebP, without the VAE.

SVD's latents live in Stable Diffusion's VAE space, whose four channels are close enough to a linear
image of the picture that a 4x3 matrix gives a recognisable, if muddy, RGB preview (the idea of
ComfyUI's latent previews; the factors are the ones it publishes for SD 1.x latents, which SVD shares).
Everything here is cheap by design: a few frames, pooled to the preview's size before the projection,
and a throttle by wall time; encoding is left to the caller's worker thread.
"""

import io
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

log = logging.getLogger("i2v.previews")

SD_LATENT_RGB_FACTORS: tuple[tuple[float, float, float], ...] = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
"""Rows: latent channels 0-3 (scaled latents, as the UNet sees them); columns: R, G, B in [-1, 1]."""
SD_LATENT_RGB_BIAS: tuple[float, float, float] = (0.0, 0.0, 0.0)
"""Added after the matrix; zero for SD 1.x latents, kept so another VAE's factors fit the same code."""

PREVIEW_LONG_SIDE = 256
"""The preview's longer side is at most this many pixels."""
PREVIEW_FRAMES = 8
"""Frames of the video a preview shows, evenly spaced; a preview plays them at :data:`PREVIEW_FPS`."""
PREVIEW_FPS = 8


def shrink_latents(
    latents: torch.Tensor, *, frames: int = PREVIEW_FRAMES, long_side: int = PREVIEW_LONG_SIDE
) -> torch.Tensor:
    """The part of ``latents`` (1, F, C, h, w) a preview needs: up to ``frames`` evenly spaced frames,
    average-pooled until the longer side is at most ``long_side``; float32 on the latents' device.

    Pooling before the projection gives the same picture as after it (both are linear) at a fraction of
    the work, and it is what the denoising thread keeps between steps.
    """
    if latents.ndim != 5 or latents.shape[0] < 1:
        raise ValueError(f"latents must be (batch, frames, channels, height, width), got {tuple(latents.shape)}")
    if frames < 1 or long_side < 1:
        raise ValueError(f"frames and long_side must be >= 1, got {frames} and {long_side}")
    count = latents.shape[1]
    picked = torch.linspace(0, count - 1, min(frames, count)).round().long().tolist()
    chosen = latents[0, picked].float()
    factor = math.ceil(max(chosen.shape[-2:]) / long_side)
    if factor > 1:
        chosen = F.avg_pool2d(chosen, kernel_size=factor, ceil_mode=True)
    return chosen


def euler_denoised(before: torch.Tensor, after: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """The denoised estimate an Euler step from ``sigma`` to ``sigma_next`` moved towards.

    Diffusers' Euler scheduler (without churn, as SVD runs it) steps ``after = before + (before - x0) /
    sigma * (sigma_next - sigma)``; solved for x0. The pipeline hands its callback only the latents after
    a step, so the latents before it are what a caller keeps from the previous step.
    """
    if sigma <= sigma_next:
        raise ValueError(f"an Euler step lowers sigma; got {sigma} -> {sigma_next}")
    return before + (after - before) * (sigma / (sigma - sigma_next))


def project_to_rgb(
    latents: torch.Tensor,
    factors: tuple[tuple[float, ...], ...] = SD_LATENT_RGB_FACTORS,
    bias: tuple[float, ...] = SD_LATENT_RGB_BIAS,
) -> np.ndarray:
    """(frames, C, h, w) latents to uint8 RGB frames (frames, h, w, 3) by ``rgb = latents @ factors + bias``,
    mapped from [-1, 1] to [0, 255] and clipped.

    The work is numpy's, not torch's: it runs on the preview worker thread while the denoising thread
    runs torch, and torch called from a second thread starts a second OpenMP team that fights the
    first for the cores (on 2 cores it made the tiny model's denoising 1.7 times slower)."""
    weights = np.asarray(factors, dtype=np.float32)
    if latents.ndim != 4 or latents.shape[1] != weights.shape[0]:
        raise ValueError(
            f"latents must be (frames, {weights.shape[0]}, height, width) for these factors, got {tuple(latents.shape)}"
        )
    values = latents.detach().to("cpu", torch.float32).numpy()
    rgb = np.einsum("fchw,ck->fhwk", values, weights) + np.asarray(bias, dtype=np.float32)
    pixels: np.ndarray = np.clip(np.rint((rgb + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return pixels


def encode_preview(frames: np.ndarray, fps: int = PREVIEW_FPS) -> bytes:
    """uint8 RGB frames (n, h, w, 3) as a looping animated WebP (one frame: a still WebP), fast and lossy."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 (n >= 1, height, width, 3), got {frames.dtype} {frames.shape}")
    images = [PIL.Image.fromarray(frame) for frame in frames]
    out = io.BytesIO()
    # method 0 is libwebp's fastest; a preview lives a second, so size matters less than time.
    images[0].save(
        out, "WEBP", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0, quality=60, method=0
    )
    return out.getvalue()


class Throttle:
    """Says when a preview is due: the last step always, otherwise at most once per ``interval_s`` of
    wall time (the first one ``interval_s`` after the throttle is made)."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self._interval = interval_s
        self._clock = clock
        self._last = clock()

    def due(self, step: int, total: int) -> bool:
        if step >= total:
            return True
        now = self._clock()
        if now - self._last < self._interval:
            return False
        self._last = now
        return True


@dataclass
class PreviewTap:
    """Follows the denoising loop and hands ``take(step, total, shrunk_denoised)`` a preview's latents when
    ``due(step, total)`` says so.

    A preview is the denoised estimate, not the noisy latents (which are mostly noise until the end). With
    the scheduler's sigmas, a due step keeps its shrunk latents and the next step yields the estimate from
    the pair (:func:`euler_denoised`); without them, the latents themselves are shown. The last step's
    latents are the result, shown as they are. A preview is never worth the denoising: the first error
    is logged and turns the tap off.
    """

    due: Callable[[int, int], bool]
    take: Callable[[int, int, torch.Tensor], None]
    _kept: torch.Tensor | None = None
    _off: bool = False

    def after_step(self, step: int, total: int, latents: torch.Tensor, sigmas: torch.Tensor | None) -> None:
        """Called after step ``step`` (1-based) of ``total``; ``sigmas[step]`` is the noise level now."""
        if self._off:
            return
        try:
            self._after_step(step, total, latents, sigmas)
        except Exception:
            log.warning("previews stop at step %d/%d: making one failed", step, total, exc_info=True)
            self._off, self._kept = True, None

    def _after_step(self, step: int, total: int, latents: torch.Tensor, sigmas: torch.Tensor | None) -> None:
        if step >= total:
            self._kept = None
            self.take(step, total, shrink_latents(latents))
            return
        if self._kept is not None and sigmas is not None:
            before, self._kept = self._kept, None
            sigma, sigma_next = float(sigmas[step - 1]), float(sigmas[step])
            self.take(step, total, euler_denoised(before, shrink_latents(latents), sigma, sigma_next))
            return
        if self.due(step, total):
            if sigmas is None:
                self.take(step, total, shrink_latents(latents))
            else:
                self._kept = shrink_latents(latents)
