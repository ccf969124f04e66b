"""The latent stage: image encoding and UNet denoising by diffusers' own SVD pipeline, up to latents."""

from collections.abc import Callable
from typing import Any

import PIL.Image
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipeline,
)
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler

from contracts.params import GenerationParams
from pipeline.previews import PreviewTap

StepCallback = Callable[[int, int], None]
"""Called as ``on_step(done, total)`` after each denoising step; raising from it stops the denoising."""


def fps_conditioning(native_frames: int, duration_s: int) -> int:
    """Frame rate SVD is conditioned on: the rate at which its native frames span the requested duration.

    The video is interpolated to the user's fps afterwards, so the UNet must be told how far apart in time
    its own frames are, not the fps of the delivered video. Rounded half up, at least 1.
    """
    if native_frames < 1:
        raise ValueError(f"native_frames must be >= 1, got {native_frames}")
    if duration_s < 1:
        raise ValueError(f"duration_s must be >= 1, got {duration_s}")
    return max(1, (2 * native_frames + duration_s) // (2 * duration_s))


def pixel_multiple(pipe: StableVideoDiffusionPipeline) -> int:
    """Width and height must be multiples of this: the VAE's downscale times the UNet's (64 for real SVD)."""
    unet_downscale = 1 << (len(pipe.unet.config.down_block_types) - 1)
    return int(pipe.vae_scale_factor) * unet_downscale


def _check_inputs(
    pipe: StableVideoDiffusionPipeline,
    image: PIL.Image.Image,
    *,
    width: int,
    height: int,
    num_frames: int,
    steps: int,
    cfg_scale: float,
    motion_bucket_id: int,
    augmentation_level: float,
    fps_cond: int,
    seed: int,
) -> None:
    multiple = pixel_multiple(pipe)
    for label, side in (("width", width), ("height", height)):
        if side < multiple or side % multiple:
            raise ValueError(f"{label} must be a positive multiple of {multiple} for this model, got {side}")
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"image must be a PIL image, got {type(image).__name__}")
    if image.mode != "RGB":
        raise ValueError(f"image must be RGB, got mode {image.mode!r}")
    if image.size != (width, height):
        raise ValueError(f"image is {image.width}x{image.height} but {width}x{height} was asked for; resize it first")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if cfg_scale < 1.0:
        raise ValueError(f"cfg_scale must be >= 1.0 (1.0 turns guidance off), got {cfg_scale}")
    if motion_bucket_id < 0:
        raise ValueError(f"motion_bucket_id must be >= 0, got {motion_bucket_id}")
    if augmentation_level < 0.0:
        raise ValueError(f"augmentation_level must be >= 0, got {augmentation_level}")
    if fps_cond < 1:
        raise ValueError(f"fps_cond must be >= 1, got {fps_cond}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")


def generate_latents(
    pipe: StableVideoDiffusionPipeline,
    image: PIL.Image.Image,
    *,
    width: int,
    height: int,
    num_frames: int,
    steps: int,
    cfg_scale: float,
    motion_bucket_id: int,
    augmentation_level: float,
    fps_cond: int,
    seed: int,
    on_step: StepCallback | None = None,
    min_cfg: float = 1.0,
    previews: PreviewTap | None = None,
) -> torch.Tensor:
    """Denoise SVD latents for ``image``; returns CPU float32 of shape (1, num_frames, 4, height/8, width/8).

    Runs diffusers' own ``StableVideoDiffusionPipeline.__call__`` with ``output_type="latent"``, so decoding
    these latents gives what the one-process pipeline gives. Guidance ramps linearly from 1 on the first
    frame to ``cfg_scale`` on the last, as SVD does. An exception raised by ``on_step`` propagates and
    stops the denoising after the current step. ``previews``, when given, sees the latents after each step
    (before ``on_step``) and makes previews of the denoised estimate when its throttle says so.
    """
    _check_inputs(
        pipe,
        image,
        width=width,
        height=height,
        num_frames=num_frames,
        steps=steps,
        cfg_scale=cfg_scale,
        motion_bucket_id=motion_bucket_id,
        augmentation_level=augmentation_level,
        fps_cond=fps_cond,
        seed=seed,
    )
    if not 1.0 <= min_cfg <= cfg_scale:
        raise ValueError(f"min_cfg must be in [1.0, cfg_scale={cfg_scale}], got {min_cfg}")

    def step_end(
        _pipe: StableVideoDiffusionPipeline, step_index: int, _timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        if previews is not None:
            # The denoised estimate is read off the Euler step: that needs the noise levels of this run.
            scheduler = _pipe.scheduler
            sigmas = scheduler.sigmas if isinstance(scheduler, EulerDiscreteScheduler) else None
            previews.after_step(step_index + 1, steps, tensors["latents"], sigmas)
        if on_step is not None:
            on_step(step_index + 1, steps)
        return tensors

    # A CPU generator draws the same noise whatever device runs the UNet, so a seed means one video.
    generator = torch.Generator(device="cpu").manual_seed(seed)
    latents = pipe(
        image,
        height=height,
        width=width,
        num_frames=num_frames,
        num_inference_steps=steps,
        min_guidance_scale=min_cfg,
        max_guidance_scale=cfg_scale,
        fps=fps_cond,
        motion_bucket_id=motion_bucket_id,
        noise_aug_strength=augmentation_level,
        generator=generator,
        output_type="latent",
        callback_on_step_end=step_end,
        return_dict=False,
    )
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"the pipeline returned {type(latents).__name__} for output_type='latent', not a tensor")
    return latents.detach().to(device="cpu", dtype=torch.float32)


def generate_latents_for(
    pipe: StableVideoDiffusionPipeline,
    image: PIL.Image.Image,
    params: GenerationParams,
    *,
    width: int,
    height: int,
    num_frames: int,
    on_step: StepCallback | None = None,
    previews: PreviewTap | None = None,
) -> torch.Tensor:
    """:func:`generate_latents` with the knobs a job's ``params`` hold; the fps conditioning is the job's own or,
    by default, the native frames spread over its duration."""
    return generate_latents(
        pipe,
        image,
        width=width,
        height=height,
        num_frames=num_frames,
        steps=params.steps,
        cfg_scale=params.cfg_scale,
        motion_bucket_id=params.motion_bucket_id,
        augmentation_level=params.augmentation_level,
        fps_cond=params.fps_conditioning or fps_conditioning(num_frames, params.duration),
        seed=params.seed,
        on_step=on_step,
        min_cfg=params.min_cfg,
        previews=previews,
    )
