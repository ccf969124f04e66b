"""Which models exist and what they generate by default, from names and config files only: no torch.

The gateway, the CLI and ingest ask this before any weights load; ``pipeline.models`` loads them.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

TINY = "tiny"
STILL = "still"
"""No diffusion: every native frame is the prepared picture itself, moved only by the camera, stabilise,
loops and formats (a Ken Burns clip, in seconds, with no weights). The latent stage stores the picture's
frames where latents would go and the decode stage skips the VAE."""
STILL_NATIVE_FRAMES = 2
"""Native frames of the still model: two copies of the picture, so interpolation has one (still) pair."""
TINY_DEFAULT_RESOLUTION: tuple[int, int] = (256, 192)
"""(width, height) the tiny model runs at by default: landscape like SVD's 1024x576, small enough for 2 CPU cores."""
TINY_NATIVE_FRAMES = 8
"""Frames the tiny UNet generates natively (its ``num_frames`` config)."""
REAL_DEFAULT_RESOLUTION: tuple[int, int] = (1024, 576)
"""(width, height) SVD and SVD-XT were trained at."""

ModelKind = Literal["tiny", "still", "folder", "hub"]


class ModelNotFoundError(Exception):
    """The configured model is neither ``tiny``, a local diffusers folder, nor a cached hub id."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name points: the built-in tiny model, a local folder or a hub snapshot in the cache."""

    name: str
    kind: ModelKind
    path: Path | None


@dataclass(frozen=True)
class ModelDefaults:
    """Resolution and frame count a model generates when the job does not ask for others."""

    width: int
    height: int
    native_frames: int


def _not_found(name: str, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model {name!r} not found ({why}): --model / I2V_MODEL must be 'tiny', 'still', a local diffusers SVD folder "
        "(with model_index.json) or a hub id already in the local Hugging Face cache"
    )


def resolve_model(name: str, *, hf_cache: Path | None = None) -> ResolvedModel:
    """Find what ``name`` refers to without touching the network; raise ModelNotFoundError otherwise.

    ``hf_cache`` overrides the Hugging Face cache folder (default: the one huggingface_hub uses).
    """
    if name == TINY:
        return ResolvedModel(name=name, kind="tiny", path=None)
    if name == STILL:
        return ResolvedModel(name=name, kind="still", path=None)
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise _not_found(name, f"the folder has no model_index.json: {folder.resolve()}")
        return ResolvedModel(name=name, kind="folder", path=folder.resolve())
    if folder.exists():
        raise _not_found(name, "it is a file, not a folder")
    try:
        snapshot = snapshot_download(name, cache_dir=hf_cache, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError):
        raise _not_found(name, "no such folder, and not in the local Hugging Face cache") from None
    path = Path(str(snapshot))
    if not (path / "model_index.json").is_file():
        raise _not_found(name, f"the cached snapshot has no model_index.json: {path}")
    return ResolvedModel(name=name, kind="hub", path=path)


def is_still(name: str) -> bool:
    """Whether ``name`` is the :data:`STILL` model (no diffusion, no weights)."""
    return name == STILL


def model_defaults(name: str) -> ModelDefaults:
    """Default width, height and native frame count of model ``name``, read from config files only."""
    resolved = resolve_model(name)
    if resolved.kind == "still":
        width, height = REAL_DEFAULT_RESOLUTION
        return ModelDefaults(width=width, height=height, native_frames=STILL_NATIVE_FRAMES)
    if resolved.path is None:
        width, height = TINY_DEFAULT_RESOLUTION
        return ModelDefaults(width=width, height=height, native_frames=TINY_NATIVE_FRAMES)
    config_file = resolved.path / "unet" / "config.json"
    try:
        num_frames = json.loads(config_file.read_text())["num_frames"]
    except (OSError, ValueError, KeyError) as exc:
        raise _not_found(name, f"cannot read num_frames from {config_file}: {exc}") from None
    width, height = REAL_DEFAULT_RESOLUTION
    return ModelDefaults(width=width, height=height, native_frames=int(num_frames))
