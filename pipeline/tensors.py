"""Latents and frames as bytes for the object store: safetensors, so reading never runs code and is exact."""

import json
import struct

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch
from safetensors import SafetensorError

_LATENTS_KEY = "latents"
_FRAMES_KEY = "frames"
_HEADER_LENGTH = struct.Struct("<Q")  # safetensors files start with the JSON header's length


def _check_latents(latents: torch.Tensor) -> None:
    if latents.dtype != torch.float32:
        raise ValueError(f"latents must be float32, got {latents.dtype}")
    if latents.ndim != 5 or latents.shape[0] != 1:
        raise ValueError(f"latents must have shape (1, frames, channels, h, w), got {tuple(latents.shape)}")


def _check_frames(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (frames, height, width, 3), got {frames.shape}")


def _read_header(data: bytes, what: str) -> tuple[list[str], dict[str, str]]:
    """Tensor names and ``__metadata__`` from a safetensors header, with errors that say which blob is bad."""
    try:
        (length,) = _HEADER_LENGTH.unpack_from(data)
        header = json.loads(data[_HEADER_LENGTH.size : _HEADER_LENGTH.size + length])
    except (struct.error, ValueError) as exc:
        raise ValueError(f"{what} blob is not a safetensors file: {exc}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{what} blob is not a safetensors file: header is not an object")
    metadata = header.pop("__metadata__", None) or {}
    return sorted(header), metadata


def latents_to_bytes(latents: torch.Tensor, metadata: dict[str, str]) -> bytes:
    """Serialize float32 latents of shape (1, F, C, h, w) with string metadata."""
    _check_latents(latents)
    tensor = latents.detach().to("cpu").contiguous()
    return safetensors.torch.save({_LATENTS_KEY: tensor}, metadata=dict(metadata))


def latents_from_bytes(data: bytes) -> tuple[torch.Tensor, dict[str, str]]:
    """Read what :func:`latents_to_bytes` wrote: the exact latents and their metadata."""
    names, metadata = _read_header(data, "latents")
    if names != [_LATENTS_KEY]:
        raise ValueError(f"latents blob must hold one tensor named {_LATENTS_KEY!r}, found {names}")
    try:
        latents = safetensors.torch.load(data)[_LATENTS_KEY]
    except SafetensorError as exc:
        raise ValueError(f"latents blob is corrupt: {exc}") from None
    _check_latents(latents)
    return latents, metadata


def frames_to_bytes(frames: np.ndarray) -> bytes:
    """Serialize uint8 video frames of shape (F, H, W, 3)."""
    _check_frames(frames)
    return safetensors.numpy.save({_FRAMES_KEY: np.ascontiguousarray(frames)})


def frames_from_bytes(data: bytes) -> np.ndarray:
    """Read what :func:`frames_to_bytes` wrote."""
    names, _ = _read_header(data, "frames")
    if names != [_FRAMES_KEY]:
        raise ValueError(f"frames blob must hold one tensor named {_FRAMES_KEY!r}, found {names}")
    try:
        frames = safetensors.numpy.load(data)[_FRAMES_KEY]
    except SafetensorError as exc:
        raise ValueError(f"frames blob is corrupt: {exc}") from None
    _check_frames(frames)
    return frames
