"""The decode stage's model half: SVD latents to RGB frames through the temporal-decoder VAE, in chunks."""

import logging
from collections.abc import Callable

import numpy as np
import torch
from diffusers.models.autoencoders.autoencoder_kl_temporal_decoder import AutoencoderKLTemporalDecoder

from pipeline.memory import free_bytes, largest_chunk

log = logging.getLogger("i2v.decode")

ChunkDecode = Callable[[torch.Tensor, int], torch.Tensor]
"""Decodes one chunk of scaled latents (n, C, h, w) of ``n`` frames to pixels (n, 3, H, W) in [-1, 1]."""


def vae_chunk_decode(vae: AutoencoderKLTemporalDecoder) -> ChunkDecode:
    """The VAE's own decode as a :data:`ChunkDecode`."""
    return lambda chunk, frames: vae.decode(chunk, num_frames=frames).sample


def pick_chunk_size(
    vae: AutoencoderKLTemporalDecoder, width: int, height: int, frames: int, *, default: int, budget: int | None = None
) -> int:
    """The largest chunk whose estimated memory (pipeline/memory.py) fits in ``budget`` bytes or, when that is
    None, in the GPU's free memory; ``default`` where there is no figure (the CPU)."""
    room = budget if budget is not None else free_bytes(vae.device)
    if room is None:
        return min(default, frames)
    return largest_chunk(vae, width, height, frames, room)


def decode_latents(
    vae: AutoencoderKLTemporalDecoder,
    latents: torch.Tensor,
    *,
    num_frames: int,
    chunk_size: int,
    decode: ChunkDecode | None = None,
) -> np.ndarray:
    """Decode latents of shape (1, F, C, h, w) to float32 frames in [0, 1] of shape (F, H, W, 3).

    Mirrors diffusers' SVD pipeline: unscale, decode ``chunk_size`` frames at a time (the VAE's temporal
    layers see one chunk, so the chunk size is part of what the output is; use the pipeline's
    ``decode_chunk_size`` to compare), then map [-1, 1] to [0, 1]. Memory grows with the chunk, not the video.
    When a chunk runs out of GPU memory, the chunk is halved and that chunk tried again, down to one frame;
    the chunks already decoded are kept. ``decode`` replaces the VAE's decode (a seam for tests).
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

    run = decode or vae_chunk_decode(vae)

    # 2. Decode chunk by chunk; only one chunk's activations live on the device at a time.
    start = 0
    with torch.inference_mode():
        while start < num_frames:
            chunk = latents[0, start : start + chunk_size].to(device=vae.device, dtype=vae.dtype) * scale
            try:
                decoded = run(chunk, chunk.shape[0])
            except torch.OutOfMemoryError:
                if chunk_size == 1:
                    raise
                del chunk
                if vae.device.type == "cuda":
                    torch.cuda.empty_cache()
                log.warning("VAE decode of %d frames ran out of GPU memory; trying %d", chunk_size, chunk_size // 2)
                chunk_size //= 2
                continue
            # 3. [-1, 1] -> [0, 1], channels last, as diffusers' video postprocessing does.
            pixels = (decoded.float() * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
            if frames is None:
                frames = np.empty((num_frames, *pixels.shape[1:]), dtype=np.float32)
            frames[start : start + chunk.shape[0]] = pixels
            start += chunk.shape[0]
    assert frames is not None  # num_frames >= 1 was checked, so the loop ran
    return frames


def frames_to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] to uint8 (rounded, clipped), any shape."""
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)
