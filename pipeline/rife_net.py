"""RIFE's IFNet in the 4.25 layout: a frame encoder and five flow blocks refining one flow coarse to fine.

The architecture follows the published Practical-RIFE 4.25 model; the code is ours. Attribute names are
fixed by the published ``flownet.pkl`` (``encode.cnn0``, ``block0.conv0.0.0``, ``block3.convblock.5.beta``,
``block4.lastconv.0``…), since the real weights must load into these modules key for key.

Each flow block sees both frames (or both frames warped by the flow so far), their encoded features,
the time plane and, after the first block, the previous block's blend logit, its 8 feature channels
and the flow itself; it works at ``1/scale`` of the padded size and predicts 13 channels back at full
size: two flows (time t to frame 0, time t to frame 1), one blend logit and 8 features for the next
block. The last block's flows warp both frames, and the sigmoid of its logit blends them.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_FLOW = 4
"""Two 2-D flows: from time t back to frame 0 (channels 0-1) and to frame 1 (channels 2-3)."""
_BLOCK_FEATURES = 8
"""Feature channels each flow block hands to the next."""
_BLOCK_OUT = _FLOW + 1 + _BLOCK_FEATURES  # flows, blend logit, features
_RESIDUALS = 8
"""Residual convolutions in every flow block."""
_ENCODER_WIDTH = 16
_SLOPE = 0.2
"""Negative slope of every LeakyReLU in the model."""


@dataclass(frozen=True)
class RifeLayout:
    """The sizes that tell one published 4.2x model from another."""

    name: str
    block_widths: tuple[int, int, int, int, int]
    """Channels inside each flow block, coarsest first."""
    feature_channels: int = 4
    """Channels the encoder gives per frame."""
    scales: tuple[int, int, int, int, int] = (16, 8, 4, 2, 1)
    """Each flow block works at 1/scale of the padded size (Practical-RIFE's scale list at scale 1)."""

    @property
    def size_multiple(self) -> int:
        """Frames are padded to a multiple of this: the coarsest block downsamples by its scale, then by 4."""
        return max(self.scales) * 4


RIFE_LAYOUTS: dict[str, RifeLayout] = {
    layout.name: layout
    for layout in (
        RifeLayout("4.25", (192, 128, 96, 64, 32)),
        # 4.26 retrained the 4.25 network unchanged; the heavy models only widen blocks or the encoder.
        RifeLayout("4.26", (192, 128, 96, 64, 32)),
        RifeLayout("4.25.heavy", (384, 256, 192, 128, 64)),
        RifeLayout("4.26.heavy", (192, 128, 96, 64, 32), feature_channels=16),
    )
}
DEFAULT_LAYOUT = "4.25"
"""The version Practical-RIFE's author recommends by default (and finds suited to diffusion-generated video)."""


def _conv_act(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1), nn.LeakyReLU(_SLOPE))


class FrameEncoder(nn.Module):
    """Per-frame features at full resolution (the published file calls this module ``encode``)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, _ENCODER_WIDTH, 3, 2, 1)
        self.cnn1 = nn.Conv2d(_ENCODER_WIDTH, _ENCODER_WIDTH, 3, 1, 1)
        self.cnn2 = nn.Conv2d(_ENCODER_WIDTH, _ENCODER_WIDTH, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(_ENCODER_WIDTH, out_channels, 4, 2, 1)
        self.relu = nn.LeakyReLU(_SLOPE)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        hidden = self.relu(self.cnn0(frame))
        hidden = self.relu(self.cnn1(hidden))
        hidden = self.relu(self.cnn2(hidden))
        features: torch.Tensor = self.cnn3(hidden)
        return features


class ScaledResidual(nn.Module):
    """``leaky(conv(x) * beta + x)`` with a learned per-channel scale on the residual branch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.relu = nn.LeakyReLU(_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.relu(self.conv(x) * self.beta + x)
        return out


class FlowBlock(nn.Module):
    """One refinement level: predicts flows, a blend logit and features at 1/scale, returned at full size."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv_act(in_channels, width // 2, 2), _conv_act(width // 2, width, 2))
        self.convblock = nn.Sequential(*(ScaledResidual(width) for _ in range(_RESIDUALS)))
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(width, 4 * _BLOCK_OUT, 4, 2, 1), nn.PixelShuffle(2))

    def forward(
        self, inputs: torch.Tensor, flow: torch.Tensor | None, scale: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (flow, blend logit, features); ``flow`` (when given) is appended to ``inputs`` in pixels."""
        if flow is not None:
            inputs = torch.cat((inputs, flow), 1)
        if scale != 1:
            # Bilinear resizing is per channel, so resizing the inputs and the flow together is exact.
            inputs = F.interpolate(inputs, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            # A flow measured in full-size pixels is 1/scale as long in the resized grid.
            inputs = torch.cat((inputs[:, :-_FLOW], inputs[:, -_FLOW:] * (1.0 / scale)), 1)
        out = self.lastconv(self.convblock(self.conv0(inputs)))
        if scale != 1:
            out = F.interpolate(out, scale_factor=float(scale), mode="bilinear", align_corners=False)
        return out[:, :_FLOW] * scale, out[:, _FLOW : _FLOW + 1], out[:, _FLOW + 1 :]


def pixel_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Pixel centres in grid_sample's normalised coordinates (align_corners=True), shape (1, 2, H, W), fp32."""
    xs = torch.linspace(-1.0, 1.0, width, device=device).view(1, 1, 1, width).expand(1, 1, height, width)
    ys = torch.linspace(-1.0, 1.0, height, device=device).view(1, 1, height, 1).expand(1, 1, height, width)
    return torch.cat((xs, ys), 1)


def backward_warp(image: torch.Tensor, flow: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` at each pixel plus its ``flow`` (pixels, x then y), bilinear, edges repeated.

    Sampling runs in fp32 whatever the model's dtype: an fp16 grid is off by up to a quarter pixel at
    1K widths, which fp16 convolutions tolerate but a warp does not.
    """
    height, width = image.shape[-2:]
    flow = flow.float()
    offsets = torch.cat((flow[:, 0:1] / ((width - 1.0) / 2.0), flow[:, 1:2] / ((height - 1.0) / 2.0)), 1)
    where = (grid + offsets).permute(0, 2, 3, 1)
    sampled = F.grid_sample(image.float(), where, mode="bilinear", padding_mode="border", align_corners=True)
    return sampled.to(image.dtype)


class IFNet(nn.Module):
    """The intermediate-flow network: two frames and a time plane in, the frame at that time out."""

    def __init__(self, layout: RifeLayout) -> None:
        super().__init__()
        self.layout = layout
        features = 2 * layout.feature_channels
        first_in = 3 + 3 + features + 1  # both frames, both feature maps, time
        later_in = 3 + 3 + features + 1 + 1 + _BLOCK_FEATURES + _FLOW  # warped ones, logit, features, flow
        widths = layout.block_widths
        self.block0 = FlowBlock(first_in, widths[0])
        self.block1 = FlowBlock(later_in, widths[1])
        self.block2 = FlowBlock(later_in, widths[2])
        self.block3 = FlowBlock(later_in, widths[3])
        self.block4 = FlowBlock(later_in, widths[4])
        self.encode = FrameEncoder(layout.feature_channels)

    def forward(
        self,
        frame0: torch.Tensor,
        frame1: torch.Tensor,
        time: torch.Tensor,
        features0: torch.Tensor,
        features1: torch.Tensor,
        grid: torch.Tensor,
    ) -> torch.Tensor:
        """Blend of both frames warped to ``time``; all inputs at the padded size, frames in [0, 1].

        ``features0``/``features1`` are ``self.encode`` of each frame, passed in so a clip encodes every
        frame once; ``grid`` is :func:`pixel_grid` of the padded size.
        """
        blocks = (self.block0, self.block1, self.block2, self.block3, self.block4)
        flow, logit, carried = blocks[0](
            torch.cat((frame0, frame1, features0, features1, time), 1), None, self.layout.scales[0]
        )
        warped0 = backward_warp(frame0, flow[:, :2], grid)
        warped1 = backward_warp(frame1, flow[:, 2:], grid)
        for block, scale in zip(blocks[1:], self.layout.scales[1:], strict=True):
            moved0 = backward_warp(features0, flow[:, :2], grid)
            moved1 = backward_warp(features1, flow[:, 2:], grid)
            inputs = torch.cat((warped0, warped1, moved0, moved1, time, logit, carried), 1)
            delta, logit, carried = block(inputs, flow, scale)
            flow = flow + delta
            warped0 = backward_warp(frame0, flow[:, :2], grid)
            warped1 = backward_warp(frame1, flow[:, 2:], grid)
        weight = torch.sigmoid(logit)
        blended: torch.Tensor = warped0 * weight + warped1 * (1 - weight)
        return blended
