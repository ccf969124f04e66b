"""Opt-in speed options for the SVD pipeline: what they change in a loaded model and in the denoising.

Every option is off by default, and with all off the latent and decode stages give diffusers' own output
(tests/pipeline/test_accel.py). ``parse_fast("channels_last,compile,sdpa=flash")`` reads them from the
``I2V_FAST`` setting; ``bench/gpu.py --only NAME`` measures one at a time. The two step-skipping modes
(``step_cache``, ``skip_cfg``) and ``fp8`` change the output: their drift is measured in docs/GPU.md.
"""

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")
DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class FastOptionError(ValueError):
    """An option that is unknown, malformed, or cannot run where it was asked for."""


@dataclass(frozen=True)
class FastOptions:
    """What ``I2V_FAST`` turns on; the defaults are diffusers' behaviour."""

    channels_last: bool = False
    """UNet and VAE weights in channels-last memory format (NHWC convolutions)."""
    compile: bool = False
    """``torch.compile`` of the UNet and of the VAE decoder, warmed up when the service starts."""
    cuda_graphs: bool = False
    """With ``compile``: mode "reduce-overhead", which replays CUDA graphs for each shape seen (CUDA only)."""
    sdpa: str = ""
    """Attention kernel to insist on: flash, efficient, cudnn or math; empty lets torch choose."""
    fuse_qkv: bool = False
    """One matmul for q, k and v in self-attention (k and v in cross-attention)."""
    dtype: str = ""
    """fp16, bf16 or fp32 instead of the device's default (fp16 on CUDA, fp32 on CPU)."""
    fp8: bool = False
    """FP8 weights and activations in the UNet's linear layers through torchao (CUDA, compute capability 8.9+)."""
    step_cache: int = 0
    """N >= 2: the whole UNet every Nth step only; between, the deep features of the last full step are
    reused and only the outermost blocks run (DeepCache). Changes the output."""
    skip_cfg: float = 1.0
    """Fraction of the steps that run guidance (the unconditional half); the rest run the conditional
    half only, halving their cost. 1.0 guides every step. Changes the output."""
    auto_chunk: bool = False
    """The decode stage picks its chunk from free GPU memory instead of ``I2V_DECODE_CHUNK_SIZE``."""

    def torch_dtype(self, default: torch.dtype) -> torch.dtype:
        return DTYPES[self.dtype] if self.dtype else default

    def names(self) -> list[str]:
        """The options that differ from the default, as ``parse_fast`` reads them back."""
        out: list[str] = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value == field.default:
                continue
            out.append(field.name if value is True else f"{field.name}={value}")
        return out


DEFAULT = FastOptions()


def parse_fast(text: str) -> FastOptions:
    """``"channels_last,compile,sdpa=flash,dtype=bf16,step_cache=2,skip_cfg=0.6"`` to :class:`FastOptions`."""
    fields = {field.name: field for field in dataclasses.fields(FastOptions)}
    values: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, has_value, raw = item.partition("=")
        name = name.strip()
        if name not in fields:
            raise FastOptionError(f"unknown fast option {name!r}; known: {', '.join(fields)}")
        kind: type[Any] = type(fields[name].default)
        try:
            if kind is bool:
                if has_value and raw.strip() not in ("1", "true", "on"):
                    raise ValueError(raw)
                values[name] = True
            else:
                values[name] = kind(raw.strip())
        except ValueError:
            raise FastOptionError(f"fast option {name!r} takes a {kind.__name__}, got {raw!r}") from None
    return checked(FastOptions(**values))


def checked(options: FastOptions) -> FastOptions:
    """``options`` if they make sense together, else a :class:`FastOptionError` naming the bad one."""
    if options.sdpa and options.sdpa not in SDPA_BACKENDS:
        raise FastOptionError(f"sdpa must be one of {', '.join(SDPA_BACKENDS)}, got {options.sdpa!r}")
    if options.dtype and options.dtype not in DTYPES:
        raise FastOptionError(f"dtype must be one of {', '.join(DTYPES)}, got {options.dtype!r}")
    if options.step_cache == 1 or options.step_cache < 0:
        raise FastOptionError(f"step_cache must be 0 (off) or >= 2, got {options.step_cache}")
    if not 0.0 <= options.skip_cfg <= 1.0:
        raise FastOptionError(f"skip_cfg must be in [0, 1], got {options.skip_cfg}")
    if options.cuda_graphs and not options.compile:
        raise FastOptionError("cuda_graphs works through torch.compile: add 'compile'")
    return options


def check_device(options: FastOptions, device: torch.device) -> None:
    """Refuse, before any model is touched, what cannot run on ``device``."""
    if device.type != "cuda":
        if options.cuda_graphs:
            raise FastOptionError("cuda_graphs needs CUDA; this process runs on the CPU")
        if options.fp8:
            raise FastOptionError("fp8 needs a CUDA GPU of compute capability 8.9 or newer; this runs on the CPU")
        if options.sdpa in ("cudnn", "efficient"):
            raise FastOptionError(f"sdpa={options.sdpa} needs CUDA; this process runs on the CPU")
    elif options.fp8 and (capability := torch.cuda.get_device_capability(device)) < (8, 9):
        raise FastOptionError(f"fp8 needs compute capability 8.9 or newer, this GPU has {capability}")


def use_compile_cache(state_dir: Path) -> Path:
    """Keep inductor's compiled kernels (and Triton's, under it) in ``state_dir/inductor`` so a restarted
    service loads them instead of compiling again; an operator's own TORCHINDUCTOR_CACHE_DIR wins."""
    folder = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(state_dir.resolve() / "inductor")))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def options_from_setting(text: str, state_dir: Path) -> FastOptions:
    """``I2V_FAST`` read (a bad option stops the service at start, named); with ``compile``, inductor's cache
    goes in the state folder (:func:`use_compile_cache`)."""
    options = parse_fast(text)
    if options.compile:
        use_compile_cache(state_dir)
    return options


def to_channels_last(module: torch.nn.Module) -> int:
    """Convolution weights of ``module`` in channels-last layout (NHWC; NDHWC for the temporal Conv3d), so
    cuDNN runs its NHWC kernels and the activations follow; returns how many. ``Module.to(memory_format=)``
    cannot do it for the SVD UNet: it refuses the 5-D weights of the temporal convolutions."""
    count = 0
    for layer in module.modules():
        if isinstance(layer, torch.nn.Conv2d):
            layer.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        elif isinstance(layer, torch.nn.Conv3d):
            layer.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        else:
            continue
        count += 1
    return count


def fuse_qkv(module: torch.nn.Module) -> int:
    """Fuse the projections of every diffusers ``Attention`` in ``module``; returns how many.

    The SVD UNet and VAE have no ``fuse_qkv_projections`` of their own (UNet2DConditionModel has), but their
    attention layers are diffusers ``Attention`` modules, which can fuse themselves and be run by
    ``FusedAttnProcessor2_0``: one (d, 3d) matmul for self-attention, one (d, 2d) for cross-attention.
    """
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0, FusedAttnProcessor2_0

    count = 0
    for layer in module.modules():
        if isinstance(layer, Attention) and isinstance(layer.processor, AttnProcessor2_0):
            layer.fuse_projections()  # type: ignore[no-untyped-call]
            layer.set_processor(FusedAttnProcessor2_0())  # type: ignore[no-untyped-call, arg-type]
            count += 1
    return count


def to_fp8(unet: torch.nn.Module) -> None:
    """FP8 (e4m3) weights and dynamically scaled activations for the UNet's linear layers (torchao)."""
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_
    except ImportError as exc:
        raise FastOptionError(f"fp8 needs torchao (pip install torchao): {exc}") from exc
    quantize_(unet, Float8DynamicActivationFloat8WeightConfig())


def _compile(module: torch.nn.Module, options: FastOptions) -> None:
    # In place (nn.Module.compile), so the module keeps its class and config for diffusers' code.
    # fullgraph: a graph break would silently lose most of the gain; the SVD UNet traces whole.
    mode = "reduce-overhead" if options.cuda_graphs else "max-autotune-no-cudagraphs"
    module.compile(mode=mode, fullgraph=True, dynamic=False)


def apply_to_unet(unet: torch.nn.Module, options: FastOptions) -> None:
    """The model-side options on the latent stage's UNet, in the order that composes: layout and
    fusion change the weights, FP8 replaces the linear layers, compile traces the result."""
    if options.channels_last:
        to_channels_last(unet)
    if options.fuse_qkv:
        fuse_qkv(unet)
    if options.fp8:
        to_fp8(unet)
    if options.compile:
        if options.step_cache:
            # The step cache runs the UNet's blocks itself, not its forward: compile them one by one.
            blocks: Any = unet
            for block in (*blocks.down_blocks, blocks.mid_block, *blocks.up_blocks):
                _compile(block, options)
        else:
            _compile(unet, options)


def apply_to_vae(vae: torch.nn.Module, options: FastOptions) -> None:
    """The model-side options on the decode stage's VAE; compile covers its decoder (the part that runs)."""
    if options.channels_last:
        to_channels_last(vae)
    if options.fuse_qkv:
        fuse_qkv(vae)
    if options.compile:
        decoder = vae.decoder
        assert isinstance(decoder, torch.nn.Module)
        _compile(decoder, options)


_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH"}


@contextlib.contextmanager
def attention_backend(options: FastOptions) -> Iterator[None]:
    """Within: scaled-dot-product attention uses only the backend ``options.sdpa`` names (all when empty)."""
    if not options.sdpa:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([getattr(SDPBackend, _BACKENDS[options.sdpa])]):
        yield
