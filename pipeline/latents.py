"""The latent stage: image encoding and UNet denoising, diffusers' SVD pipeline taken apart at the encoding."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import PIL.Image
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipeline,
)
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor

from contracts.params import GenerationParams
from pipeline.accel import DEFAULT, FastOptions, attention_backend
from pipeline.previews import PreviewTap
from pipeline.step_cache import StepCache

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


@dataclass(frozen=True)
class Conditioning:
    """What the denoising needs from the image: made before it, and in the latent service while the previous
    job denoises (:meth:`services.latent.stage.LatentStage.prefetch`)."""

    image_embeddings: torch.Tensor
    """CLIP image embedding, (1, 1, D); with guidance (2, 1, D), the unconditional zeros first."""
    image_latents: torch.Tensor
    """VAE latents of the noise-augmented image repeated per frame, (1 or 2, F, C, h, w), zeros first."""
    added_time_ids: torch.Tensor
    """(fps - 1, motion bucket, augmentation) per batch row."""
    generator: torch.Generator
    """The job's CPU generator after the augmentation noise: the initial latents' noise is drawn from it next."""
    width: int
    height: int
    num_frames: int

    @property
    def guided(self) -> bool:
        return self.image_embeddings.shape[0] == 2


def encode_conditioning(
    pipe: StableVideoDiffusionPipeline,
    image: PIL.Image.Image,
    *,
    width: int,
    height: int,
    num_frames: int,
    cfg_scale: float,
    motion_bucket_id: int,
    augmentation_level: float,
    fps_cond: int,
    seed: int,
) -> Conditioning:
    """Steps 1-5 of diffusers' ``StableVideoDiffusionPipeline.__call__`` (CLIP embedding, augmented VAE image
    latents, added time ids) with its own helper methods, in its order, drawing from the job's generator as
    it does. Inputs are not checked here: :func:`generate_latents` checks them."""
    guided = cfg_scale > 1.0
    device = pipe._execution_device
    with torch.no_grad():
        embeddings = pipe._encode_image(image, device, 1, guided)
        # A CPU generator draws the same noise whatever device runs the UNet, so a seed means one video.
        generator = torch.Generator(device="cpu").manual_seed(seed)
        pixels = pipe.video_processor.preprocess(image, height=height, width=width).to(device)
        noise = randn_tensor(pixels.shape, generator=generator, device=device, dtype=pixels.dtype)
        pixels = pixels + augmentation_level * noise
        # SVD's VAE overflows in float16: diffusers encodes in float32 when the config says so; so do we.
        upcast = pipe.vae.dtype == torch.float16 and pipe.vae.config.force_upcast
        if upcast:
            torch.nn.Module.to(pipe.vae, dtype=torch.float32)
        try:
            image_latents = pipe._encode_vae_image(
                pixels, device=device, num_videos_per_prompt=1, do_classifier_free_guidance=guided
            ).to(embeddings.dtype)
        finally:
            if upcast:
                torch.nn.Module.to(pipe.vae, dtype=torch.float16)
        image_latents = image_latents.unsqueeze(1).repeat(1, num_frames, 1, 1, 1)
        # SVD was trained on fps - 1 (diffusers subtracts it too).
        time_ids = pipe._get_add_time_ids(
            fps_cond - 1, motion_bucket_id, augmentation_level, embeddings.dtype, 1, 1, guided
        ).to(device)
    return Conditioning(embeddings, image_latents, time_ids, generator, width, height, num_frames)


def denoise(
    pipe: StableVideoDiffusionPipeline,
    conditioning: Conditioning,
    *,
    steps: int,
    cfg_scale: float,
    min_cfg: float = 1.0,
    on_step: StepCallback | None = None,
    previews: PreviewTap | None = None,
    fast: FastOptions = DEFAULT,
) -> torch.Tensor:
    """Steps 6-8 of diffusers' SVD ``__call__``: the Euler loop with per-frame guidance, up to the latents
    (on the pipeline's device and dtype). With the default ``fast`` options it computes what diffusers
    computes, op for op; ``fast.step_cache`` and ``fast.skip_cfg`` trade exactness for speed."""
    cond = conditioning
    device = pipe._execution_device
    scheduler = pipe.scheduler
    unet = pipe.unet
    cache = StepCache(unet) if fast.step_cache else None
    guided_steps = math.ceil(steps * fast.skip_cfg) if cond.guided else 0
    with torch.no_grad(), attention_backend(fast):
        scheduler.set_timesteps(steps, device=device)
        latents: torch.Tensor = pipe.prepare_latents(
            1,
            cond.num_frames,
            unet.config.in_channels,
            cond.height,
            cond.width,
            cond.image_embeddings.dtype,
            device,
            cond.generator,
        )
        # Guidance ramps over the frames, from min_cfg on the first to cfg_scale on the last.
        guidance = torch.linspace(min_cfg, cfg_scale, cond.num_frames).unsqueeze(0).to(device, latents.dtype)
        guidance = guidance.repeat(1, 1)[..., None, None, None]
        for i, t in enumerate(scheduler.timesteps):
            guided = i < guided_steps
            # Rows: [unconditional, conditional] when guided, else the conditional row alone.
            rows = slice(0, 2) if guided else slice(-1, None)
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = scheduler.scale_model_input(model_input, t)
            model_input = torch.cat([model_input, cond.image_latents[rows]], dim=2)
            if cache is None:
                noise_pred: torch.Tensor = unet(
                    model_input,
                    t,
                    encoder_hidden_states=cond.image_embeddings[rows],
                    added_time_ids=cond.added_time_ids[rows],
                    return_dict=False,
                )[0]
            else:
                noise_pred = cache(
                    model_input,
                    t,
                    cond.image_embeddings[rows],
                    cond.added_time_ids[rows],
                    full=i % fast.step_cache == 0,
                )
            if guided:
                uncond, conditional = noise_pred.chunk(2)
                noise_pred = uncond + guidance * (conditional - uncond)
            latents = scheduler.step(noise_pred, t, latents).prev_sample
            if previews is not None:
                # The denoised estimate is read off the Euler step: that needs the noise levels of this run.
                sigmas = scheduler.sigmas if isinstance(scheduler, EulerDiscreteScheduler) else None
                previews.after_step(i + 1, steps, latents, sigmas)
            if on_step is not None:
                on_step(i + 1, steps)
    return latents


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
    fast: FastOptions = DEFAULT,
) -> torch.Tensor:
    """Denoise SVD latents for ``image``; returns CPU float32 of shape (1, num_frames, 4, height/8, width/8).

    :func:`encode_conditioning` then :func:`denoise`: diffusers' ``StableVideoDiffusionPipeline.__call__``
    with ``output_type="latent"`` taken apart where the image's encoding ends, so the latent service can
    encode the next job's image while this one denoises. Decoding these latents gives what the one-process
    pipeline gives. Guidance ramps linearly from ``min_cfg`` on the first frame to ``cfg_scale`` on the last,
    as SVD does. An exception raised by ``on_step`` propagates and stops the denoising after the current
    step. ``previews``, when given, sees the latents after each step (before ``on_step``) and makes previews
    of the denoised estimate when its throttle says so.
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
    conditioning = encode_conditioning(
        pipe,
        image,
        width=width,
        height=height,
        num_frames=num_frames,
        cfg_scale=cfg_scale,
        motion_bucket_id=motion_bucket_id,
        augmentation_level=augmentation_level,
        fps_cond=fps_cond,
        seed=seed,
    )
    latents = denoise(
        pipe,
        conditioning,
        steps=steps,
        cfg_scale=cfg_scale,
        min_cfg=min_cfg,
        on_step=on_step,
        previews=previews,
        fast=fast,
    )
    return latents.detach().to(device="cpu", dtype=torch.float32)


def _knobs(params: GenerationParams, num_frames: int) -> dict[str, Any]:
    # The fps conditioning is the job's own or, by default, the native frames spread over its duration.
    return {
        "cfg_scale": params.cfg_scale,
        "motion_bucket_id": params.motion_bucket_id,
        "augmentation_level": params.augmentation_level,
        "fps_cond": params.fps_conditioning or fps_conditioning(num_frames, params.duration),
        "seed": params.seed,
    }


def conditioning_for(
    pipe: StableVideoDiffusionPipeline,
    image: PIL.Image.Image,
    params: GenerationParams,
    *,
    width: int,
    height: int,
    num_frames: int,
) -> Conditioning:
    """A job's inputs checked, then :func:`encode_conditioning` with the knobs its ``params`` hold."""
    knobs = _knobs(params, num_frames)
    _check_inputs(pipe, image, width=width, height=height, num_frames=num_frames, steps=params.steps, **knobs)
    if not 1.0 <= params.min_cfg <= params.cfg_scale:
        raise ValueError(f"min_cfg must be in [1.0, cfg_scale={params.cfg_scale}], got {params.min_cfg}")
    return encode_conditioning(pipe, image, width=width, height=height, num_frames=num_frames, **knobs)


def denoise_for(
    pipe: StableVideoDiffusionPipeline,
    conditioning: Conditioning,
    params: GenerationParams,
    *,
    on_step: StepCallback | None = None,
    previews: PreviewTap | None = None,
    fast: FastOptions = DEFAULT,
) -> torch.Tensor:
    """:func:`denoise` with the job's steps and guidance; CPU float32 latents, as :func:`generate_latents`."""
    latents = denoise(
        pipe,
        conditioning,
        steps=params.steps,
        cfg_scale=params.cfg_scale,
        min_cfg=params.min_cfg,
        on_step=on_step,
        previews=previews,
        fast=fast,
    )
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
    fast: FastOptions = DEFAULT,
) -> torch.Tensor:
    """:func:`generate_latents` with the knobs a job's ``params`` hold (:func:`conditioning_for`, then
    :func:`denoise_for`)."""
    conditioning = conditioning_for(pipe, image, params, width=width, height=height, num_frames=num_frames)
    return denoise_for(pipe, conditioning, params, on_step=on_step, previews=previews, fast=fast)
