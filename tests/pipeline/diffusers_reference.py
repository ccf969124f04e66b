"""diffusers' own StableVideoDiffusionPipeline, called in one go with our latent stage's knobs: the reference
that the split pipeline must reproduce."""

from collections.abc import Mapping
from typing import Any

import PIL.Image
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipeline,
)


def diffusers_reference(
    pipe: StableVideoDiffusionPipeline, image: PIL.Image.Image, knobs: Mapping[str, Any], **options: Any
) -> Any:
    """The ``frames`` of one diffusers call given ``generate_latents``' ``knobs`` under diffusers' names;
    ``options`` (output_type, decode_chunk_size) go through as they are."""
    return pipe(
        image,
        width=knobs["width"],
        height=knobs["height"],
        num_frames=knobs["num_frames"],
        num_inference_steps=knobs["steps"],
        # diffusers ramps guidance from here to cfg_scale, as generate_latents does (1.0 unless min_cfg is given)
        min_guidance_scale=knobs.get("min_cfg", 1.0),
        max_guidance_scale=knobs["cfg_scale"],
        motion_bucket_id=knobs["motion_bucket_id"],
        noise_aug_strength=knobs["augmentation_level"],
        fps=knobs["fps_cond"],
        generator=torch.Generator().manual_seed(knobs["seed"]),
        **options,
    ).frames
