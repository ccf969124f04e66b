"""SVD-XT at full size from its published component configurations, written here; random weights.

Speed and memory do not depend on the weights' values, so this model costs what the real checkpoint
(stabilityai/stable-video-diffusion-img2vid-xt) costs, without a download. The numbers below are those of
the checkpoint's ``unet/``, ``vae/``, ``image_encoder/`` and ``scheduler/`` config files.
"""

from typing import Any

import torch
from diffusers.models.autoencoders.autoencoder_kl_temporal_decoder import AutoencoderKLTemporalDecoder
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipeline,
)
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

SVD_XT_FRAMES = 25
SVD_XT_RESOLUTION: tuple[int, int] = (1024, 576)
# The UNet's block layout, the same in every SVD checkpoint (and in the tiny one): only the widths differ.
SVD_DOWN_BLOCKS = (
    "CrossAttnDownBlockSpatioTemporal",
    "CrossAttnDownBlockSpatioTemporal",
    "CrossAttnDownBlockSpatioTemporal",
    "DownBlockSpatioTemporal",
)
SVD_UP_BLOCKS = (
    "UpBlockSpatioTemporal",
    "CrossAttnUpBlockSpatioTemporal",
    "CrossAttnUpBlockSpatioTemporal",
    "CrossAttnUpBlockSpatioTemporal",
)


def svd_xt_unet(device: torch.device | str = "cpu") -> UNetSpatioTemporalConditionModel:
    """The spatio-temporal UNet of SVD-XT (1.52 B parameters), random weights, float32 on ``device``
    (``"meta"`` builds it without memory, for counting)."""
    with torch.device(device):
        unet: UNetSpatioTemporalConditionModel = UNetSpatioTemporalConditionModel(
            sample_size=96,
            in_channels=8,
            out_channels=4,
            down_block_types=SVD_DOWN_BLOCKS,
            up_block_types=SVD_UP_BLOCKS,
            block_out_channels=(320, 640, 1280, 1280),
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=768,
            layers_per_block=2,
            cross_attention_dim=1024,
            transformer_layers_per_block=1,
            num_attention_heads=(5, 10, 20, 20),
            num_frames=SVD_XT_FRAMES,
        )
    return unet


def svd_xt_vae(device: torch.device | str = "cpu") -> AutoencoderKLTemporalDecoder:
    """SVD's temporal-decoder VAE (the same for SVD and SVD-XT), random weights, float32 on ``device``."""
    with torch.device(device):
        vae: AutoencoderKLTemporalDecoder = AutoencoderKLTemporalDecoder(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            sample_size=768,
            scaling_factor=0.18215,
            force_upcast=True,
        )
    return vae


def svd_xt_image_encoder(device: torch.device | str = "cpu") -> CLIPVisionModelWithProjection:
    """The CLIP ViT-H/14 image encoder with its 1024-d projection, random weights, float32 on ``device``."""
    config = CLIPVisionConfig(
        hidden_size=1280,
        intermediate_size=5120,
        num_attention_heads=16,
        num_hidden_layers=32,
        patch_size=14,
        image_size=224,
        projection_dim=1024,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    with torch.device(device):
        return CLIPVisionModelWithProjection(config)


def svd_xt_scheduler() -> EulerDiscreteScheduler:
    """SVD-XT's scheduler: Euler with Karras sigmas from 700 to 0.002, v-prediction, continuous timesteps."""
    scheduler: EulerDiscreteScheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        interpolation_type="linear",
        use_karras_sigmas=True,
        sigma_min=0.002,
        sigma_max=700.0,
        timestep_type="continuous",
        timestep_spacing="leading",
        steps_offset=1,
    )
    return scheduler


def build_svd_xt(device: torch.device, dtype: torch.dtype, *, seed: int = 0) -> StableVideoDiffusionPipeline:
    """Full-size SVD-XT with random weights (seeded), on ``device`` in ``dtype``.

    Each component is made on ``device`` in float32 and then cast, so a GPU never holds the CPU's copy;
    about 9 GB of float32 at the peak for the UNet.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet, vae, image_encoder = svd_xt_unet(device), svd_xt_vae(device), svd_xt_image_encoder(device)
    for module in (unet, vae, image_encoder):
        # device too: the UNet's mix factors are made with torch.Tensor([...]), on the CPU whatever the context
        torch.nn.Module.to(module.requires_grad_(False).eval(), device=device, dtype=dtype)
    scheduler: Any = svd_xt_scheduler()  # diffusers' stubs name a dummy class for the pipeline's argument
    pipe = StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )
    pipe.set_progress_bar_config(disable=True)  # type: ignore[no-untyped-call]
    return pipe
