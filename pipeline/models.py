"""Which SVD checkpoint to run, on which device, and how to load it (or build the tiny one in code)."""

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from diffusers.models.autoencoders.autoencoder_kl_temporal_decoder import AutoencoderKLTemporalDecoder
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipeline,
)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from pipeline.model_catalog import (
    REAL_DEFAULT_RESOLUTION,
    TINY,
    TINY_DEFAULT_RESOLUTION,
    TINY_NATIVE_FRAMES,
    ModelDefaults,
    ModelNotFoundError,
    ResolvedModel,
    model_defaults,
    resolve_model,
)
from pipeline.svd_xt import SVD_DOWN_BLOCKS, SVD_UP_BLOCKS, svd_xt_scheduler

__all__ = [
    "REAL_DEFAULT_RESOLUTION",
    "TINY",
    "TINY_DEFAULT_RESOLUTION",
    "TINY_NATIVE_FRAMES",
    "ModelDefaults",
    "ModelNotFoundError",
    "ResolvedModel",
    "build_tiny_svd",
    "load_pipeline",
    "load_vae",
    "model_defaults",
    "pick_device",
    "resolve_model",
]

_TINY_SEED = 20231121
# Real SVD uses 1024-d CLIP ViT-H image embeddings; any size works for random weights as long as
# the image encoder's projection and the UNet's cross-attention agree.
_TINY_EMBED_DIM = 32
_CLIP_IMAGE_SIZE = 224  # the pipeline always resizes the conditioning image to 224x224 for CLIP


def pick_device(prefer: str | None = None) -> tuple[torch.device, torch.dtype]:
    """Return CUDA + float16 when a GPU is there, else CPU + float32; ``prefer`` ("cpu"/"cuda") overrides."""
    if prefer not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or unset, got {prefer!r}")
    if prefer == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU")
    if prefer == "cuda" or (prefer is None and torch.cuda.is_available()):
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32


def build_tiny_svd() -> StableVideoDiffusionPipeline:
    """Build a tiny random-weight SVD from the real diffusers/transformers classes, on CPU in float32.

    The weights are bit-identical in every process whatever the global RNG state, because the latent
    and decode services each build their own copy and must agree.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_TINY_SEED)
        unet = UNetSpatioTemporalConditionModel(
            sample_size=TINY_DEFAULT_RESOLUTION[1] // 8,
            in_channels=8,
            out_channels=4,
            down_block_types=SVD_DOWN_BLOCKS,
            up_block_types=SVD_UP_BLOCKS,
            block_out_channels=(32, 32, 64, 64),
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=3 * 8,  # fps, motion bucket, noise augmentation
            layers_per_block=1,
            cross_attention_dim=_TINY_EMBED_DIM,
            num_attention_heads=(2, 2, 4, 4),
            num_frames=TINY_NATIVE_FRAMES,
        )
        # Four blocks, like the real VAE, so latents are 1/8 of the image on each side.
        vae = AutoencoderKLTemporalDecoder(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            block_out_channels=(32, 32, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            sample_size=TINY_DEFAULT_RESOLUTION[1],
        )
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32,
                intermediate_size=64,
                projection_dim=_TINY_EMBED_DIM,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=_CLIP_IMAGE_SIZE,
                patch_size=32,
            )
        )
    feature_extractor = CLIPImageProcessor(crop_size=_CLIP_IMAGE_SIZE, size=_CLIP_IMAGE_SIZE)
    scheduler: Any = svd_xt_scheduler()  # the real sampler; diffusers' stubs name a dummy class for the argument
    for module in (unet, vae, image_encoder):
        module.requires_grad_(False).eval()  # inference only; also stops dropout in the CLIP encoder
    pipe = StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=feature_extractor,
    )
    pipe.set_progress_bar_config(disable=True)  # type: ignore[no-untyped-call]
    return pipe


def _fp16_variant(path: Path, subfolder: str) -> str | None:
    """``"fp16"`` when the checkpoint ships half-precision weight files next to (or instead of) full ones."""
    return "fp16" if any((path / subfolder).glob("*.fp16.*")) else None


def _place(modules: Iterable[torch.nn.Module], device: torch.device, dtype: torch.dtype) -> None:
    # torch's own Module.to: diffusers' override logs a spurious "keep in float32" warning for every cast
    for module in modules:
        torch.nn.Module.to(module.requires_grad_(False).eval(), device=device, dtype=dtype)


@functools.lru_cache(maxsize=4)
def load_pipeline(name: str, device: torch.device, dtype: torch.dtype) -> StableVideoDiffusionPipeline:
    """Load (once per name, device and dtype) the SVD pipeline ``name`` resolves to, on ``device``."""
    resolved = resolve_model(name)
    if resolved.path is None:
        pipe = build_tiny_svd()
    else:
        variant = _fp16_variant(resolved.path, "unet") if dtype == torch.float16 else None
        pipe = StableVideoDiffusionPipeline.from_pretrained(resolved.path, dtype=dtype, variant=variant)
        pipe.set_progress_bar_config(disable=True)  # type: ignore[no-untyped-call]
    _place((pipe.unet, pipe.vae, pipe.image_encoder), device, dtype)
    return pipe


@functools.lru_cache(maxsize=4)
def load_vae(name: str, device: torch.device, dtype: torch.dtype) -> AutoencoderKLTemporalDecoder:
    """Load (once per name, device and dtype) only the temporal-decoder VAE of model ``name``."""
    resolved = resolve_model(name)
    vae: AutoencoderKLTemporalDecoder
    if resolved.path is None:
        vae = build_tiny_svd().vae
    else:
        variant = _fp16_variant(resolved.path, "vae") if dtype == torch.float16 else None
        vae = AutoencoderKLTemporalDecoder.from_pretrained(resolved.path, subfolder="vae", dtype=dtype, variant=variant)
    _place([vae], device, dtype)
    return vae
