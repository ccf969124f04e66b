"""Latents and frames survive the object store bit for bit; anything else is refused with a reason."""

import numpy as np
import pytest
import torch

from pipeline.tensors import frames_from_bytes, frames_to_bytes, latents_from_bytes, latents_to_bytes


def sample_latents() -> torch.Tensor:
    latents = torch.randn(1, 3, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    latents[0, 0, 0, 0, :4] = torch.tensor([-0.0, float("inf"), float("nan"), 1e-45])
    return latents


def test_latents_round_trip_exactly_with_metadata() -> None:
    latents = sample_latents()
    metadata = {"job_id": "job-123", "seed": "42", "model": "tiny"}
    restored, restored_metadata = latents_from_bytes(latents_to_bytes(latents, metadata))
    assert restored.dtype == torch.float32 and restored.shape == latents.shape
    assert torch.equal(restored.view(torch.int32), latents.view(torch.int32))
    assert restored_metadata == metadata


def test_latents_without_metadata_and_not_contiguous() -> None:
    latents = torch.randn(1, 4, 3, 6, 5).transpose(1, 2)
    restored, metadata = latents_from_bytes(latents_to_bytes(latents, {}))
    assert torch.equal(restored, latents)
    assert metadata == {}


@pytest.mark.parametrize(
    ("latents", "message"),
    [
        (torch.zeros(1, 3, 4, 5, 6, dtype=torch.float16), "float32, got torch.float16"),
        (torch.zeros(3, 4, 5, 6), r"shape \(1, frames, channels, h, w\), got \(3, 4, 5, 6\)"),
        (torch.zeros(2, 3, 4, 5, 6), r"got \(2, 3, 4, 5, 6\)"),
    ],
)
def test_bad_latents_are_refused(latents: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        latents_to_bytes(latents, {})


def test_frames_round_trip_exactly() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (4, 6, 10, 3), dtype=np.uint8)
    restored = frames_from_bytes(frames_to_bytes(frames))
    assert restored.dtype == np.uint8
    np.testing.assert_array_equal(restored, frames)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((2, 4, 4, 3), dtype=np.float32), "uint8, got float32"),
        (np.zeros((4, 4, 3), dtype=np.uint8), r"\(frames, height, width, 3\), got \(4, 4, 3\)"),
        (np.zeros((2, 4, 4, 4), dtype=np.uint8), r"got \(2, 4, 4, 4\)"),
    ],
)
def test_bad_frames_are_refused(frames: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        frames_to_bytes(frames)


def test_garbage_is_not_safetensors() -> None:
    with pytest.raises(ValueError, match="latents blob is not a safetensors file"):
        latents_from_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="frames blob is not a safetensors file"):
        frames_from_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{nope")


def test_one_kind_of_blob_is_not_the_other() -> None:
    frames_blob = frames_to_bytes(np.zeros((1, 2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"one tensor named 'latents', found \['frames'\]"):
        latents_from_bytes(frames_blob)
    latents_blob = latents_to_bytes(sample_latents(), {})
    with pytest.raises(ValueError, match=r"one tensor named 'frames', found \['latents'\]"):
        frames_from_bytes(latents_blob)


def test_truncated_blob_is_refused() -> None:
    blob = latents_to_bytes(sample_latents(), {"seed": "1"})
    with pytest.raises(ValueError, match="latents blob is corrupt"):
        latents_from_bytes(blob[:-10])
