"""Frame interpolation with RIFE: Practical-RIFE's published weights on our IFNet (:mod:`pipeline.rife_net`).

Loading is strict. The file is the published ``flownet.pkl``: a state dict saved from a
DistributedDataParallel wrapper, so every key starts with ``module.``. Besides the network it carries
the two heads used only in training (``module.teacher.*``, ``module.caltime.*``); those are dropped.
Any other extra key, a missing key, or a tensor of the wrong shape is a :class:`RifeWeightsError` with
a one-line message naming the key. Nothing is ever downloaded.

Inference follows Practical-RIFE's ``inference_video.py`` at scale 1: RGB frames in [0, 1], padded with
zeros on the right and bottom to a multiple of 64 and cropped back, the timestep as a full-resolution
plane, flow blocks at 1/16 … 1/1. Two deliberate differences: warps sample in fp32 even when the
network runs in fp16, and output frames are rounded to the nearest 8-bit level where the original
truncates (truncation makes every in-between frame half a level darker than its native neighbours).
"""

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from pipeline.rife_net import DEFAULT_LAYOUT, RIFE_LAYOUTS, IFNet, RifeLayout, pixel_grid

Frames = NDArray[np.uint8]

WEIGHTS_FILE = "flownet.pkl"
"""The name Practical-RIFE gives its weights; a folder is searched for this file."""
_KEY_PREFIX = "module."
_TRAINING_ONLY = ("module.teacher.", "module.caltime.")
"""Heads the published 4.2x files keep from training (distillation teacher, time estimator); unused here."""


class RifeWeightsError(ValueError):
    """RIFE weights are absent, unreadable or not the expected layout. The message is one line."""

    def __init__(self, message: str) -> None:
        # Paths and key names come from outside; keep whatever they hold on one line.
        super().__init__(" ".join(message.splitlines()))


def default_rife_dtype(device: torch.device | str) -> torch.dtype:
    """fp16 on CUDA, fp32 elsewhere (fp16 convolutions are slow or missing on CPUs)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def find_rife_weights(path: str | os.PathLike[str]) -> Path:
    """The weights file ``path`` names: the file itself, or ``flownet.pkl`` inside a folder."""
    given = Path(path).expanduser()
    if given.is_dir():
        inside = given / WEIGHTS_FILE
        if not inside.is_file():
            raise RifeWeightsError(f"RIFE weights folder {given} has no {WEIGHTS_FILE}")
        return inside
    if not given.is_file():
        raise RifeWeightsError(f"RIFE weights not found: {given} (expected {WEIGHTS_FILE} or a folder with it)")
    return given


def load_rife(
    path: str | os.PathLike[str],
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    *,
    layout: str = DEFAULT_LAYOUT,
) -> "RifeModel":
    """Load published RIFE weights (file or folder) strictly; ``dtype`` defaults to :func:`default_rife_dtype`."""
    chosen = _layout(layout)
    weights = find_rife_weights(path)
    try:
        # weights_only: the file is unpickled without running code from it.
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a bad file; all mean the same to a user
        why = _first_line(exc)
        raise RifeWeightsError(f"RIFE weights {weights} are not a readable torch file: {why}") from None
    if not isinstance(state, Mapping):
        raise RifeWeightsError(f"RIFE weights {weights} hold a {type(state).__name__}, not a state dict")
    return rife_from_state_dict(state, device, dtype, layout=chosen.name, source=str(weights))


def rife_from_state_dict(
    state: Mapping[str, object],
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    *,
    layout: str = DEFAULT_LAYOUT,
    source: str = "state dict",
) -> "RifeModel":
    """Build a model from a state dict in the published layout (``module.`` keys), as strictly as :func:`load_rife`.

    The model's parameters may share memory with ``state``'s tensors when device and dtype already match.
    """
    chosen = _layout(layout)
    target = torch.device(device)
    dtype = default_rife_dtype(target) if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {target} was asked for but torch sees no CUDA GPU")
    problem = _layout_problem(state, _expected_shapes(chosen))
    if problem is not None:
        fits = [name for name, other in RIFE_LAYOUTS.items() if _layout_problem(state, _expected_shapes(other)) is None]
        hint = f" (the file fits layout {' / '.join(fits)})" if fits else ""
        raise RifeWeightsError(f"RIFE weights {source} do not fit layout {chosen.name}: {problem}{hint}")
    tensors = {key.removeprefix(_KEY_PREFIX): state[key] for key in _expected_shapes(chosen)}
    with torch.device("meta"):
        net = IFNet(chosen)
    net.load_state_dict(tensors, strict=True, assign=True)
    net.to(device=target, dtype=dtype).eval().requires_grad_(False)
    return RifeModel(net, target, dtype)


class RifeModel:
    """A loaded IFNet on one device and dtype. Build it with :func:`load_rife`."""

    def __init__(self, net: IFNet, device: torch.device, dtype: torch.dtype) -> None:
        self.net = net
        self.device = device
        self.dtype = dtype

    @property
    def layout(self) -> RifeLayout:
        return self.net.layout

    def interpolate(self, frame0: Frames, frame1: Frames, timestep: float) -> Frames:
        """The uint8 frame (H, W, 3) at ``timestep`` in [0, 1] between two uint8 frames (H, W, 3).

        The network is run even at 0 and 1: it has no special case for the ends, and only trained
        weights make it return ``frame0`` at 0 (``rife_to_count`` copies native frames instead).
        """
        _check_frame("frame0", frame0)
        _check_frame("frame1", frame1)
        if frame0.shape != frame1.shape:
            raise ValueError(f"frame0 and frame1 must have the same shape, got {frame0.shape} and {frame1.shape}")
        if isinstance(timestep, bool) or not isinstance(timestep, int | float | np.floating | np.integer):
            raise TypeError(f"timestep must be a number, got {type(timestep).__name__}")
        if not 0.0 <= float(timestep) <= 1.0:
            raise ValueError(f"timestep must be within [0, 1], got {timestep}")
        canvas = self._canvas(frame0.shape[0], frame0.shape[1])
        with torch.inference_mode():
            first, second = self._encode(frame0, canvas), self._encode(frame1, canvas)
            frames = self._between(first, second, [float(timestep)], canvas)
        middle: Frames = frames[0]
        return middle

    def _canvas(self, height: int, width: int) -> "_Canvas":
        multiple = self.layout.size_multiple
        padded_height, padded_width = -(-height // multiple) * multiple, -(-width // multiple) * multiple
        return _Canvas(height, width, padded_height, padded_width, pixel_grid(padded_height, padded_width, self.device))

    def _encode(self, frame: Frames, canvas: "_Canvas") -> "_Encoded":
        image = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1).unsqueeze(0)
        image = image.float() / 255.0
        padding = (0, canvas.padded_width - canvas.width, 0, canvas.padded_height - canvas.height)
        image = F.pad(image, padding).to(self.dtype)
        return _Encoded(image, self.net.encode(image))

    def _between(self, first: "_Encoded", second: "_Encoded", times: Sequence[float], canvas: "_Canvas") -> Frames:
        """Frames at ``times`` between two encoded frames, as one batch: uint8 (len(times), H, W, 3)."""
        batch = len(times)
        plane = torch.tensor(times, device=self.device, dtype=self.dtype).view(batch, 1, 1, 1)
        plane = plane.expand(batch, 1, canvas.padded_height, canvas.padded_width)
        out = self.net(
            first.image.expand(batch, -1, -1, -1),
            second.image.expand(batch, -1, -1, -1),
            plane,
            first.features.expand(batch, -1, -1, -1),
            second.features.expand(batch, -1, -1, -1),
            canvas.grid,
        )
        out = out[:, :, : canvas.height, : canvas.width].float().clamp(0.0, 1.0) * 255.0
        frames: Frames = out.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return frames


@dataclass(frozen=True)
class _Canvas:
    """A frame size, the padded size the network runs at, and that size's pixel grid."""

    height: int
    width: int
    padded_height: int
    padded_width: int
    grid: torch.Tensor


@dataclass(frozen=True)
class _Encoded:
    """A padded frame in [0, 1] and its encoder features, both (1, C, padded H, padded W)."""

    image: torch.Tensor
    features: torch.Tensor


def rife_to_count(frames: Frames, count: int, model: RifeModel, *, batch_size: int = 4) -> Frames:
    """Return exactly ``count`` uint8 frames (count, H, W, 3) spanning ``frames`` (n, H, W, 3) with RIFE.

    Output frame ``k`` sits at native time ``k * (n - 1) / (count - 1)``, as in
    :func:`pipeline.interpolate.interpolate_to_count`; whole positions are the native frames, copied.
    Each native frame is encoded once, and in-between frames of one pair run ``batch_size`` at a time,
    so memory stays at two encoded frames and one batch whatever the clip length.
    """
    _check_frames(frames)
    if isinstance(count, bool) or not isinstance(count, int | np.integer):
        raise TypeError(f"count must be an int, got {type(count).__name__}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n, height, width, _ = frames.shape
    out = np.empty((count, height, width, 3), dtype=np.uint8)
    if count == 1 or n == 1:
        out[:] = frames[0]
        return out

    # 1. Copy the whole positions; list each pair's in-between outputs and their times.
    wanted: dict[int, list[tuple[int, float]]] = {}
    for k in range(int(count)):
        # Exact integer arithmetic: a whole position must hit its native frame with no rounding drift.
        index, remainder = divmod(k * (n - 1), int(count) - 1)
        if remainder == 0:
            out[k] = frames[index]
        else:
            wanted.setdefault(index, []).append((k, remainder / (int(count) - 1)))

    # 2. Run pair by pair, reusing the encoding of the frame two neighbouring pairs share.
    canvas = model._canvas(height, width)
    previous: tuple[int, _Encoded] | None = None
    with torch.inference_mode():
        for index in sorted(wanted):
            first = previous[1] if previous and previous[0] == index else model._encode(frames[index], canvas)
            second = model._encode(frames[index + 1], canvas)
            jobs = wanted[index]
            for start in range(0, len(jobs), batch_size):
                chunk = jobs[start : start + batch_size]
                out[[k for k, _ in chunk]] = model._between(first, second, [t for _, t in chunk], canvas)
            previous = (index + 1, second)
    return out


@functools.cache
def _expected_shapes(layout: RifeLayout) -> dict[str, tuple[int, ...]]:
    """Every key of the published file for ``layout`` (prefix included) and its shape, in module order."""
    with torch.device("meta"):
        net = IFNet(layout)
    return {_KEY_PREFIX + key: tuple(value.shape) for key, value in net.state_dict().items()}


def _layout_problem(state: Mapping[str, object], expected: Mapping[str, tuple[int, ...]]) -> str | None:
    """The first way ``state`` differs from ``expected``, in words naming the key; None when it fits."""
    for key in state:
        if not isinstance(key, str):
            return f"key {key!r} is not a string"
    unexpected = [key for key in state if key not in expected and not key.startswith(_TRAINING_ONLY)]
    if unexpected:
        hint = "" if unexpected[0].startswith(_KEY_PREFIX) else f" (published keys start with {_KEY_PREFIX!r})"
        return _first("unexpected key", unexpected) + hint
    missing = [key for key in expected if key not in state]
    if missing:
        return _first("missing key", missing)
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            return f"key {key} is a {type(value).__name__}, not a tensor"
        if not value.is_floating_point():
            return f"key {key} has dtype {value.dtype}, expected floating point"
        if tuple(value.shape) != shape:
            return f"key {key} has shape {tuple(value.shape)}, expected {shape}"
    return None


def _first(what: str, keys: Sequence[str]) -> str:
    more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
    return f"{what} {keys[0]}{more}"


def _layout(name: str) -> RifeLayout:
    if name not in RIFE_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(RIFE_LAYOUTS)}, got {name!r}")
    return RIFE_LAYOUTS[name]


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _check_frame(name: str, frame: Frames) -> None:
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got dtype {frame.dtype}")
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"{name} must have shape (H, W, 3), got {frame.shape}")


def _check_frames(frames: Frames) -> None:
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) < 1:
        raise ValueError(f"frames must have shape (n, H, W, 3) with n, H, W >= 1, got {frames.shape}")
