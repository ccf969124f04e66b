"""Step caching for the SVD UNet (DeepCache): between two full steps, only the outermost blocks run.

Adjacent denoising steps change the UNet's deep features little. A full step runs the whole UNet and
keeps what enters its last up block; a cached step runs the time embedding, ``conv_in``, the first down
block (for the skip connections the last up block needs) and the last up block on the kept features.
On SVD-XT that is roughly a fifth of a step's work at the top resolution and none of the deeper levels'.
The forward below is diffusers' ``UNetSpatioTemporalConditionModel.forward`` taken apart at that seam.
"""

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel


def _block(block: Any, **kwargs: Any) -> Any:
    # Blocks without cross-attention take no encoder_hidden_states.
    if not getattr(block, "has_cross_attention", False):
        kwargs.pop("encoder_hidden_states")
    return block(**kwargs)


@dataclass
class StepCache:
    """The features entering the last up block at the last full step (frames of the whole batch)."""

    unet: UNetSpatioTemporalConditionModel
    deep: torch.Tensor | None = field(default=None)

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        *,
        full: bool,
    ) -> torch.Tensor:
        """The UNet's output for ``sample`` (batch, frames, channels, h, w); ``full`` runs every block and
        refreshes the cache, otherwise the cached deep features are used (a full step must come first)."""
        unet: Any = self.unet  # its blocks are typed Module by ModuleList; they are diffusers' blocks
        batch, frames = sample.shape[:2]
        # 1. Embeddings of the noise level and of the added conditioning (fps, motion, augmentation).
        steps = timestep[None].to(sample.device) if timestep.ndim == 0 else timestep.to(sample.device)
        t_emb = unet.time_proj(steps.expand(batch)).to(dtype=sample.dtype)
        emb = unet.time_embedding(t_emb)
        time_embeds = unet.add_time_proj(added_time_ids.flatten()).reshape((batch, -1)).to(emb.dtype)
        emb = emb + unet.add_embedding(time_embeds)
        emb = emb.repeat_interleave(frames, dim=0, output_size=emb.shape[0] * frames)
        context = encoder_hidden_states.repeat_interleave(
            frames, dim=0, output_size=encoder_hidden_states.shape[0] * frames
        )
        indicator = torch.zeros(batch, frames, dtype=sample.dtype, device=sample.device)
        common = {"temb": emb, "encoder_hidden_states": context, "image_only_indicator": indicator}

        # 2. The outermost level always runs: its skip connections feed the last up block.
        hidden = unet.conv_in(sample.flatten(0, 1))
        skips: tuple[torch.Tensor, ...] = (hidden,)
        hidden, res = _block(unet.down_blocks[0], hidden_states=hidden, **common)
        skips += res
        last = unet.up_blocks[-1]
        outer_skips = skips[: len(last.resnets)]

        # 3. The deep levels on a full step; on a cached one, the last full step's features.
        if full or self.deep is None:
            for down in unet.down_blocks[1:]:
                hidden, res = _block(down, hidden_states=hidden, **common)
                skips += res
            hidden = unet.mid_block(hidden_states=hidden, **common)
            for up in unet.up_blocks[:-1]:
                share = skips[-len(up.resnets) :]
                skips = skips[: -len(up.resnets)]
                hidden = _block(up, hidden_states=hidden, res_hidden_states_tuple=share, **common)
            self.deep = hidden
        else:
            hidden = self.deep
            if hidden.shape[0] != batch * frames:
                # Guidance stopped since the full step: keep the conditional half (the batch's second).
                hidden = hidden[hidden.shape[0] - batch * frames :]

        # 4. The last up block and the output layers, as in the full forward.
        hidden = _block(last, hidden_states=hidden, res_hidden_states_tuple=outer_skips, **common)
        hidden = unet.conv_out(unet.conv_act(unet.conv_norm_out(hidden)))
        out: torch.Tensor = hidden.reshape(batch, frames, *hidden.shape[1:])
        return out
