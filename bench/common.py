"""What more than one bench runs the same way: the latent stage's denoise for one job."""

from typing import Any

import torch

from contracts.params import GenerationParams
from pipeline.image import PreparedImage


def denoise(pipe: Any, prepared: PreparedImage, params: GenerationParams) -> torch.Tensor:
    """The job's latents from its prepared picture, with the model's native frame count and the knobs the
    latent stage passes (services/latent/stage.py)."""
    from pipeline.latents import fps_conditioning, generate_latents
    from pipeline.models import model_defaults

    native_frames = model_defaults(params.model).native_frames
    return generate_latents(
        pipe,
        prepared.image,
        width=prepared.width,
        height=prepared.height,
        num_frames=native_frames,
        steps=params.steps,
        cfg_scale=params.cfg_scale,
        motion_bucket_id=params.motion_bucket_id,
        augmentation_level=params.augmentation_level,
        fps_cond=params.fps_conditioning or fps_conditioning(native_frames, params.duration),
        seed=params.seed,
        min_cfg=params.min_cfg,
    )
