"""Memory: the meta-device estimate, the latent stage's size check, and the decode's halving on OOM."""

import numpy as np
import pytest
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipeline,
)

from pipeline.decode import ChunkDecode, decode_latents, pick_chunk_size, vae_chunk_decode
from pipeline.memory import (
    MemoryTooSmallError,
    activation_budget,
    check_latent_fits,
    decode_memory,
    largest_chunk,
    latent_memory,
)

MiB = 1 << 20


def test_the_estimate_grows_with_the_job(pipe: StableVideoDiffusionPipeline) -> None:
    small = latent_memory(pipe, 64, 64, 2)
    assert small.weights == sum(
        p.numel() * 4 for m in (pipe.unet, pipe.vae, pipe.image_encoder) for p in m.parameters()
    ) + sum(b.numel() * b.element_size() for m in (pipe.unet, pipe.vae, pipe.image_encoder) for b in m.buffers())
    more_frames = latent_memory(pipe, 64, 64, 4)
    larger = latent_memory(pipe, 128, 128, 2)
    unguided = latent_memory(pipe, 64, 64, 2, guided=False)
    assert 0 < unguided.unet_step < small.unet_step < more_frames.unet_step
    assert small.unet_step < larger.unet_step
    assert decode_memory(pipe.vae, 64, 64, 1) < decode_memory(pipe.vae, 64, 64, 4)


def test_a_size_beyond_the_budget_is_refused_in_words(pipe: StableVideoDiffusionPipeline) -> None:
    need = latent_memory(pipe, 128, 128, 4)
    check_latent_fits(pipe, 128, 128, 4, None)  # no budget (the CPU): nothing checked
    check_latent_fits(pipe, 128, 128, 4, 2 * need.unet_step + need.state)
    with pytest.raises(MemoryTooSmallError, match=r"^128x128 with 4 frames needs about .* GiB .* free; ask for"):
        check_latent_fits(pipe, 128, 128, 4, need.unet_step // 2)


def test_a_configured_limit_leaves_the_activations_what_the_weights_do_not_take(
    pipe: StableVideoDiffusionPipeline,
) -> None:
    assert activation_budget(pipe, None) is None  # on the CPU without a limit
    limit = 2 << 30
    budget = activation_budget(pipe, limit)
    assert budget is not None and budget < limit - (1 << 30)  # the CUDA context's margin and the weights


def test_the_decode_chunk_is_the_largest_that_fits(pipe: StableVideoDiffusionPipeline) -> None:
    fixed = decode_memory(pipe.vae, 64, 64, 1) - (
        decode_memory(pipe.vae, 64, 64, 2) - decode_memory(pipe.vae, 64, 64, 1)
    )
    room_for_three = decode_memory(pipe.vae, 64, 64, 3) - fixed
    assert largest_chunk(pipe.vae, 64, 64, 4, 1 << 40) == 4
    assert largest_chunk(pipe.vae, 64, 64, 4, 0) == 1
    assert largest_chunk(pipe.vae, 64, 64, 8, room_for_three) in (2, 3)  # the estimate is not quite linear
    # On the CPU there is no free-memory figure: the configured chunk, at most the frames.
    assert pick_chunk_size(pipe.vae, 64, 64, 4, default=8) == 4
    assert pick_chunk_size(pipe.vae, 64, 64, 4, default=8, budget=1 << 40) == 4


class OutOfMemoryAbove:
    """A :data:`ChunkDecode` (our seam) that runs the VAE but raises torch's OOM for chunks over ``limit``."""

    def __init__(self, decode: ChunkDecode, limit: int) -> None:
        self._decode = decode
        self.limit = limit
        self.tried: list[int] = []

    def __call__(self, chunk: torch.Tensor, frames: int) -> torch.Tensor:
        self.tried.append(frames)
        if frames > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate for {frames} frames")
        return self._decode(chunk, frames)


def test_decode_halves_its_chunk_on_out_of_memory_and_goes_on(pipe: StableVideoDiffusionPipeline) -> None:
    latents = torch.randn(1, 8, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    fake = OutOfMemoryAbove(vae_chunk_decode(pipe.vae), limit=2)

    frames = decode_latents(pipe.vae, latents, num_frames=8, chunk_size=8, decode=fake)

    assert fake.tried == [8, 4, 2, 2, 2, 2]
    np.testing.assert_array_equal(frames, decode_latents(pipe.vae, latents, num_frames=8, chunk_size=2))


def test_decode_fails_when_even_one_frame_does_not_fit(pipe: StableVideoDiffusionPipeline) -> None:
    latents = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    fake = OutOfMemoryAbove(vae_chunk_decode(pipe.vae), limit=0)
    with pytest.raises(torch.OutOfMemoryError):
        decode_latents(pipe.vae, latents, num_frames=4, chunk_size=4, decode=fake)
    assert fake.tried == [4, 2, 1]
