"""The latent stage's inputs made ahead (prefetch), its fast options, and its refusal of a size too large."""

import time

import pytest
import torch

from contracts.failures import FailureCode
from contracts.messages import PointsReserved
from infra.objectstore import MemoryObjectStore
from pipeline.accel import parse_fast
from pipeline.tensors import latents_from_bytes
from services.bus.faults import PermanentError
from services.latent.stage import LatentStage
from tests.services.test_stages import CancelAfter, recorder, reserved_for, spec

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def wait_for_read(store: MemoryObjectStore, cmd: PointsReserved) -> None:
    deadline = time.monotonic() + 60
    while cmd.image not in store.gets:
        assert time.monotonic() < deadline, "the prefetch never read the image"
        time.sleep(0.01)


def latents_of(store: MemoryObjectStore, stage: LatentStage, cmd: PointsReserved) -> bytes:
    ready = stage.run(cmd, recorder()[1])
    return store.get(ready.latents)


@pytest.mark.parametrize("encode_ahead", [False, True])
def test_inputs_made_ahead_are_what_the_run_uses(encode_ahead: bool) -> None:
    reference_store = MemoryObjectStore()
    plain = LatentStage(reference_store, "cpu", CancelAfter(None).is_cancelled)
    expected = latents_from_bytes(latents_of(reference_store, plain, reserved_for(reference_store, spec("job-ahead"))))[
        0
    ]

    store = MemoryObjectStore()
    stage = LatentStage(store, "cpu", CancelAfter(None).is_cancelled, encode_ahead=encode_ahead)
    cmd = reserved_for(store, spec("job-ahead"))
    stage.prefetch(cmd)  # as the handler does when the runner takes the next command
    wait_for_read(store, cmd)
    # The image is gone from the store once the prefetch has read it: the run can only use what it read.
    assert store.delete_prefix(cmd.image.key) == 1
    got = latents_from_bytes(latents_of(store, stage, cmd))[0]

    assert torch.equal(got, expected)


def test_an_unsealed_command_gets_nothing_ready() -> None:
    store = MemoryObjectStore()
    stage = LatentStage(store, "cpu", CancelAfter(None).is_cancelled)
    forged, sealed = reserved_for(store, spec("job-forged")), reserved_for(store, spec("job-sealed"))
    checked: list[str] = []

    def refuse(cmd: PointsReserved) -> PointsReserved:
        checked.append(cmd.job.job_id)
        raise PermanentError(FailureCode.NOT_RESERVED, "no reservation")

    stage.prefetch(forged, refuse)
    stage.prefetch(sealed)  # one prefetch thread, in order: once this one has read, the forged one is done
    wait_for_read(store, sealed)

    assert checked == ["job-forged"]
    assert forged.image not in store.gets


def test_a_size_that_cannot_fit_is_refused_before_any_step() -> None:
    store = MemoryObjectStore()
    watch = CancelAfter(None)
    stage = LatentStage(store, "cpu", watch.is_cancelled, gpu_memory_gb=1.0)  # less than the context margin

    with pytest.raises(PermanentError) as refused:
        stage.run(reserved_for(store, spec("job-too-big")), watch.record)

    assert refused.value.code == FailureCode.OUT_OF_MEMORY
    assert "128x64 with 8 frames needs about" in str(refused.value) and "\\n" not in str(refused.value)
    assert watch.progress == []


def test_the_fast_options_reach_the_denoising() -> None:
    store = MemoryObjectStore()
    cmd = reserved_for(store, spec("job-fast"))
    plain = latents_from_bytes(latents_of(store, LatentStage(store, "cpu", CancelAfter(None).is_cancelled), cmd))[0]
    other = MemoryObjectStore()
    cmd = reserved_for(other, spec("job-fast"))
    fast = LatentStage(other, "cpu", CancelAfter(None).is_cancelled, fast=parse_fast("skip_cfg=0.5"))
    skipped = latents_from_bytes(latents_of(other, fast, cmd))[0]
    assert skipped.shape == plain.shape and not (skipped == plain).all()
