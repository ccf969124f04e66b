"""How much GPU memory an SVD job needs: activation accounting on the meta device, plus the weights.

The UNet, the VAE decoder and the VAE encoder are built from the loaded model's config on PyTorch's
``meta`` device (shapes and dtypes, no data, no arithmetic) and run once on inputs of the job's size under
a dispatch mode that adds up the bytes of every tensor storage created and subtracts them when the storage
is freed: the high-water mark is the activation peak of that forward pass, as PyTorch's caching allocator
would see it before its own rounding. Attention is counted as a fused kernel (flash / memory-efficient
SDPA, what CUDA runs in fp16/bf16): its output and its log-sum-exp, not the (L x L) score matrix that
the meta device's math fallback would make.

What this does not see, and how it is covered: the CUDA context and library workspaces (cuBLAS, cuDNN)
and the allocator's block rounding and fragmentation. :data:`CONTEXT_BYTES` and :data:`FRAGMENTATION`
are margins for those, not measurements. Every figure from here is an estimate until measured on CUDA
(``bench/gpu_memory.py`` prints both when a GPU is there).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

CONTEXT_BYTES = 1 << 30
"""CUDA context, cuBLAS and cuDNN workspaces: about 0.5-1 GiB on an H100; taken as 1 GiB."""
FRAGMENTATION = 1.10
"""The caching allocator's rounding and fragmentation on top of the live peak."""


class MemoryTooSmallError(ValueError):
    """A job that cannot fit in the memory there is."""


class _LiveBytes(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Bytes of the tensor storages made inside the mode and still alive; the peak of that sum."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.live = 0
        self.peak = 0
        self._storages: dict[int, tuple[StorageWeakRef, int]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        # Free first: an op's inputs that died before this output was made do not count with it.
        for key, (ref, size) in list(self._storages.items()):
            if ref.expired():  # type: ignore[no-untyped-call]
                del self._storages[key]
                self.live -= size
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                ref = StorageWeakRef(storage)  # type: ignore[no-untyped-call]
                if ref.cdata not in self._storages:
                    self._storages[ref.cdata] = (ref, storage.nbytes())
                    self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        return out


class _FusedAttentionCount:
    """An attention processor for counting: diffusers' ``AttnProcessor2_0`` with the fused kernel's memory
    (output and log-sum-exp) in place of the computation, which the meta device has no fused kernel for."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        four_d = hidden_states.ndim == 4
        if four_d:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        batch, length, inner = query.shape
        out = torch.empty((batch, attn.heads, length, inner // attn.heads), dtype=query.dtype, device=query.device)
        lse = torch.empty((batch, attn.heads, length), dtype=torch.float32, device=query.device)
        del key, value, lse
        hidden_states = out.transpose(1, 2).reshape(batch, length, inner)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if four_d:
            hidden_states = hidden_states.transpose(-1, -2).reshape(residual.shape)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor  # type: ignore[no-any-return]


def _on_meta(module_class: Any, config: Any, dtype: torch.dtype) -> Any:
    from diffusers.models.attention_processor import Attention

    with torch.device("meta"):
        module = module_class.from_config(config)
    # A few parameters (the spatio-temporal mix factors) are made with torch.Tensor([...]), which ignores
    # the device context: move everything to meta.
    torch.nn.Module.to(module.requires_grad_(False).eval(), device="meta", dtype=dtype)
    for layer in module.modules():
        if isinstance(layer, Attention):
            layer.set_processor(_FusedAttentionCount())  # type: ignore[arg-type]
    return module


def _peak_of(run: Callable[[], Any]) -> int:
    counter = _LiveBytes()
    with torch.no_grad(), counter:
        run()
    return counter.peak


def _bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


_PEAKS: dict[tuple[Any, ...], Any] = {}
"""Peaks already counted, by (what, config, sizes, dtype): counting the full UNet takes a second or two."""


def _memo(key: tuple[Any, ...], count: Callable[[], Any]) -> Any:
    if key not in _PEAKS:
        _PEAKS[key] = count()
    return _PEAKS[key]


def _unet_peak(config: Any, width: int, height: int, frames: int, batch: int, dtype: torch.dtype) -> int:
    key = ("unet", repr(sorted(dict(config).items())), width, height, frames, batch, dtype)
    return int(_memo(key, lambda: _count_unet(dict(config), width, height, frames, batch, dtype)))


def _count_unet(config: dict[str, Any], width: int, height: int, frames: int, batch: int, dtype: torch.dtype) -> int:
    from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel

    unet = _on_meta(UNetSpatioTemporalConditionModel, config, dtype)
    sample = torch.empty(batch, frames, config["in_channels"], height // 8, width // 8, device="meta", dtype=dtype)
    context = torch.empty(batch, 1, config["cross_attention_dim"], device="meta", dtype=dtype)
    time_ids = torch.empty(batch, 3, device="meta", dtype=dtype)
    timestep = torch.tensor(1.0, device="meta")
    return _peak_of(lambda: unet(sample, timestep, context, time_ids, return_dict=False))


def _vae_peaks(config: Any, width: int, height: int, chunk: int, dtype: torch.dtype) -> tuple[int, int]:
    """(decode of ``chunk`` frames in ``dtype``, encode of one image in float32 as SVD's upcast does)."""
    key = ("vae", repr(sorted(dict(config).items())), width, height, chunk, dtype)
    return _memo(key, lambda: _count_vae(dict(config), width, height, chunk, dtype))  # type: ignore[no-any-return]


def _count_vae(config: dict[str, Any], width: int, height: int, chunk: int, dtype: torch.dtype) -> tuple[int, int]:
    from diffusers.models.autoencoders.autoencoder_kl_temporal_decoder import AutoencoderKLTemporalDecoder

    vae = _on_meta(AutoencoderKLTemporalDecoder, config, dtype)
    latents = torch.empty(chunk, config["latent_channels"], height // 8, width // 8, device="meta", dtype=dtype)
    decode = _peak_of(lambda: vae.decode(latents, num_frames=chunk))
    torch.nn.Module.to(vae, dtype=torch.float32)
    image = torch.empty(1, config["in_channels"], height, width, device="meta", dtype=torch.float32)
    encode = _peak_of(lambda: vae.encode(image))
    return decode, encode


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers of ``module``."""
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
        b.numel() * b.element_size() for b in module.buffers()
    )


@dataclass(frozen=True)
class LatentMemory:
    """The latent stage's memory for one job, in bytes; ``total`` includes the margins."""

    weights: int
    unet_step: int
    vae_encode: int
    state: int

    @property
    def total(self) -> int:
        working = max(self.unet_step + self.state, self.vae_encode)
        return int((self.weights + working) * FRAGMENTATION) + CONTEXT_BYTES


def latent_memory(pipe: Any, width: int, height: int, frames: int, *, guided: bool = True) -> LatentMemory:
    """What the latent stage needs for a job of ``width`` x ``height`` x ``frames`` on ``pipe``'s model
    (its UNet, VAE and image encoder resident, in their dtype)."""
    dtype = pipe.unet.dtype
    batch = 2 if guided else 1
    unet_step = _unet_peak(pipe.unet.config, width, height, frames, batch, dtype)
    _decode, encode = _vae_peaks(pipe.vae.config, width, height, 1, dtype)
    weights = sum(weight_bytes(m) for m in (pipe.unet, pipe.vae, pipe.image_encoder))
    # The VAE is upcast to float32 for the encode when it is half precision: its weights twice more.
    vae_upcast = weight_bytes(pipe.vae) * (4 // _bytes(dtype) - 1) if dtype != torch.float32 else 0
    # Between steps: latents, conditioning latents (batch x), the UNet's input and output.
    latent_frame = 4 * (height // 8) * (width // 8) * _bytes(dtype) * frames
    state = latent_frame * (1 + 2 * batch + 2 * batch)
    return LatentMemory(weights=weights, unet_step=unet_step, vae_encode=encode + vae_upcast, state=state)


def decode_memory(vae: torch.nn.Module, width: int, height: int, chunk: int) -> int:
    """Bytes the decode stage needs for a chunk of ``chunk`` frames, weights and margins included."""
    dtype = next(vae.parameters()).dtype
    decode, _encode = _vae_peaks(vae.config, width, height, chunk, dtype)
    frames_out = chunk * 3 * height * width * 4  # the float32 copy made for the CPU
    return int((weight_bytes(vae) + decode + frames_out) * FRAGMENTATION) + CONTEXT_BYTES


def free_bytes(device: torch.device) -> int | None:
    """Free memory the caching allocator could use on ``device`` (free on the GPU plus what it holds
    unused); None off CUDA, where no figure is meaningful."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def check_latent_fits(
    pipe: Any, width: int, height: int, frames: int, budget: int | None, *, guided: bool = True
) -> None:
    """Raise :class:`MemoryTooSmallError` when the job's activations cannot fit in ``budget`` bytes beyond
    the weights already loaded (None: no check). The weights are resident, so they are not counted again."""
    if budget is None:
        return
    need = latent_memory(pipe, width, height, frames, guided=guided)
    working = int(max(need.unet_step + need.state, need.vae_encode) * FRAGMENTATION)
    if working > budget:
        raise MemoryTooSmallError(
            f"{width}x{height} with {frames} frames needs about {working / 2**30:.1f} GiB of GPU memory for the "
            f"denoising but {budget / 2**30:.1f} GiB is free; ask for a smaller size or fewer frames"
        )


def largest_chunk(vae: torch.nn.Module, width: int, height: int, frames: int, budget: int) -> int:
    """The largest decode chunk (1..frames) whose estimate fits in ``budget`` bytes (1 if none does)."""
    weights_and_margins = int(weight_bytes(vae) * FRAGMENTATION) + CONTEXT_BYTES
    low, high = 1, frames
    while low < high:
        middle = (low + high + 1) // 2
        if decode_memory(vae, width, height, middle) - weights_and_margins <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def gib(n: int) -> str:
    return f"{n / 2**30:.1f}"


def activation_budget(pipe: Any, limit: int | None) -> int | None:
    """Bytes left for a job's activations: ``limit`` (what this process may use) less the resident weights
    and the margins; without a limit, on CUDA, the GPU's total less what this process holds and the context;
    else None (the CPU: nothing to check)."""
    device = pipe.unet.device
    if limit is None:
        if device.type != "cuda":
            return None
        total = torch.cuda.get_device_properties(device).total_memory
        return int(total - torch.cuda.memory_allocated(device) - CONTEXT_BYTES)
    weights = sum(weight_bytes(m) for m in (pipe.unet, pipe.vae, pipe.image_encoder))
    return limit - int(weights * FRAGMENTATION) - CONTEXT_BYTES
