"""The decode stage's model half: SVD latents to RGB frames through the temporal-decoder VAE, in chunks."""

import numpy as np
import torch
from diffusers.models.autoencoders.autoencoder_kl_temporal_decoder import AutoencoderKLTemporalDecoder


def decode_latents(
    vae: AutoencoderKLTemporalDecoder, latents: torch.Tensor, *, num_frames: int, chunk_size: int
) -> np.ndarray:
    """Decode latents of shape (1, F, C, h, w) to float32 frames in [0, 1] of shape (F, H, W, 3).

    Mirrors diffusers' SVD pipeline: unscale, decode ``chunk_size`` frames at a time (the VAE's temporal
    layers see one chunk, so the chunk size is part of what the output is; use the pipeline's
    ``decode_chunk_size`` to compare), then map [-1, 1] to [0, 1]. Memory grows with the chunk, not the video.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if latents.ndim != 5 or latents.shape[0] != 1:
        raise ValueError(f"latents must have shape (1, frames, channels, h, w), got {tuple(latents.shape)}")
    if latents.shape[1] != num_frames:
        raise ValueError(f"latents hold {latents.shape[1]} frames but num_frames is {num_frames}")
    if latents.shape[2] != vae.config["latent_channels"]:
        raise ValueError(
            f"latents have {latents.shape[2]} channels but the VAE expects {vae.config['latent_channels']}"
        )

    # 1. Cast before unscaling, as diffusers does, so half-precision runs round the same way.
    scale = 1 / vae.config["scaling_factor"]
    frames: np.ndarray | None = None

    # 2. Decode chunk by chunk; only one chunk's activations live on the device at a time.
    with torch.inference_mode():
        for start in range(0, num_frames, chunk_size):
            chunk = latents[0, start : start + chunk_size].to(device=vae.device, dtype=vae.dtype) * scale
            decoded = vae.decode(chunk, num_frames=chunk.shape[0]).sample
            # 3. [-1, 1] -> [0, 1], channels last, as diffusers' video postprocessing does.
            pixels = (decoded.float() * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
            if frames is None:
                frames = np.empty((num_frames, *pixels.shape[1:]), dtype=np.float32)
            frames[start : start + chunk.shape[0]] = pixels
    assert frames is not None  # num_frames >= 1 was checked, so the loop ran
    return frames


def frames_to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] to uint8 (rounded, clipped), any shape."""
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)
