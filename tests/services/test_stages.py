"""Each stage's logic on its own: in-memory object store, a real SQLite ledger, the tiny model. No servers."""

import io
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contracts.failures import FailureCode
from contracts.keys import artifact_key, upload_key
from contracts.messages import (
    FramesReady,
    ImagePrepared,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobSpec,
    JobSubmitted,
    LatentsReady,
    PointsReserved,
)
from contracts.params import GenerationParams, Resolution
from contracts.pricing import price_points
from contracts.refs import ObjectRef
from contracts.stages import Stage
from infra.objectstore import MemoryObjectStore, ObjectStoreUnavailableError
from pipeline.image import fit_resolution
from pipeline.models import TINY_DEFAULT_RESOLUTION, TINY_NATIVE_FRAMES
from pipeline.tensors import frames_from_bytes, frames_to_bytes, latents_from_bytes
from pipeline.video import probe_video
from services.billing.ledger import SqlLedger, open_ledger
from services.billing.seal import ReservationSeal
from services.billing.stage import BillingStage
from services.bus.faults import JobCancelledError, PermanentError, classify
from services.decode.stage import DecodeStage
from services.ingest.stage import IngestStage, model_size_from_checkpoint
from services.latent.stage import LatentStage
from services.mux.stage import MuxStage
from tests.pipeline.bad_images import bad_image_corpus, encoded, noise
from tests.services.job_messages import completed

# diffusers' Euler scheduler calls np.array() on a torch tensor, which numpy 2.4 flags.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

WIDTH, HEIGHT = 128, 64  # multiples of the tiny model's 64-pixel grid, small enough for 2 CPU cores
DURATION, FPS = 2, 12  # 24 delivered frames from the tiny model's 8 native ones
MAX_BYTES = 1 << 20
MAX_PIXELS = 40_000_000
CORPUS = bad_image_corpus()
REJECTED = sorted(name for name, (_, code) in CORPUS.items() if code is not None)
ACCEPTED = sorted(name for name, (_, code) in CORPUS.items() if code is None)

Steps = list[tuple[int, int]]


def spec(job_id: str = "job-stage-1", *, account: str = "alice", **params: object) -> JobSpec:
    values: dict[str, object] = {"duration": DURATION, "fps": FPS, "steps": 2, "seed": 7}
    values.update(params)
    return JobSpec(job_id=job_id, account=account, params=GenerationParams.model_validate(values))


PRICE = price_points(spec().params, WIDTH, HEIGHT)
SEAL = ReservationSeal(b"a test billing secret")


def recorder() -> tuple[Steps, Callable[[int, int], None]]:
    calls: Steps = []

    def progress(step: int, total: int) -> None:
        calls.append((step, total))

    return calls, progress


def png_of(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# --- ingest -----------------------------------------------------------------------------------------


def tiny_size(model: str) -> tuple[int, int]:
    if model != "tiny":
        raise PermanentError(FailureCode.MODEL_NOT_FOUND, f"no model {model!r} in this test")
    return TINY_DEFAULT_RESOLUTION


def ingest(store: MemoryObjectStore, *, max_bytes: int = MAX_BYTES) -> IngestStage:
    return IngestStage(store, tiny_size, max_bytes=max_bytes, max_pixels=MAX_PIXELS)


def submitted(store: MemoryObjectStore, data: bytes, job: JobSpec | None = None) -> JobSubmitted:
    job = job or spec()
    upload = store.put(upload_key(job.job_id), data, "application/octet-stream")
    return JobSubmitted(job=job, upload=upload)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_ingest_stores_the_image_as_png_at_the_fitted_size(fmt: str) -> None:
    store = MemoryObjectStore()
    cmd = submitted(store, encoded(noise(160, 90), fmt))

    prepared = ingest(store).run(cmd)

    assert isinstance(prepared, ImagePrepared)
    assert (prepared.source_width, prepared.source_height) == (160, 90)
    assert (prepared.width, prepared.height) == fit_resolution(160, 90, TINY_DEFAULT_RESOLUTION, None)
    assert prepared.image.key == artifact_key(cmd.job.job_id, 0, "image.png")
    stored = Image.open(io.BytesIO(store.get(prepared.image)))  # get() verifies size and sha256
    assert (stored.format, stored.size, stored.mode) == ("PNG", (prepared.width, prepared.height), "RGB")


def test_ingest_honours_a_requested_resolution_exactly() -> None:
    store = MemoryObjectStore()
    job = spec(resolution=Resolution(width=WIDTH, height=HEIGHT))
    prepared = ingest(store).run(submitted(store, encoded(noise(300, 300), "PNG"), job))

    assert (prepared.width, prepared.height) == (WIDTH, HEIGHT)
    assert Image.open(io.BytesIO(store.get(prepared.image))).size == (WIDTH, HEIGHT)


@pytest.mark.parametrize("case", REJECTED)
def test_ingest_rejects_a_bad_image_permanently_with_its_code(case: str) -> None:
    data, code = CORPUS[case]
    store = MemoryObjectStore()
    cmd = submitted(store, data)
    puts_before = len(store.puts)

    with pytest.raises(PermanentError) as raised:
        ingest(store).run(cmd)

    assert raised.value.code == code
    assert not classify(raised.value).transient
    assert len(store.puts) == puts_before  # nothing stored for a rejected upload


@pytest.mark.parametrize("case", ACCEPTED)
def test_ingest_accepts_the_awkward_but_valid_images(case: str) -> None:
    store = MemoryObjectStore()
    prepared = ingest(store).run(submitted(store, CORPUS[case][0]))
    assert Image.open(io.BytesIO(store.get(prepared.image))).size == (prepared.width, prepared.height)


def test_ingest_rejects_an_unknown_model_before_reading_the_upload() -> None:
    store = MemoryObjectStore()
    cmd = submitted(store, encoded(noise(64, 64), "PNG"), spec(model="/nonexistent/i2v-test-model"))
    stage = IngestStage(store, model_size_from_checkpoint, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)

    with pytest.raises(PermanentError) as raised:
        stage.run(cmd)

    assert raised.value.code == "model_not_found"
    assert store.gets == []


def test_ingest_rejects_an_upload_over_the_limit_without_downloading_it() -> None:
    store = MemoryObjectStore()
    data = encoded(noise(64, 64), "PNG")
    cmd = submitted(store, data)

    with pytest.raises(PermanentError) as raised:
        ingest(store, max_bytes=len(data) - 1).run(cmd)

    assert raised.value.code == "too_large"
    assert store.gets == []
    assert ingest(store, max_bytes=len(data)).run(cmd).width > 0  # exactly at the limit is fine


# --- billing ----------------------------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> SqlLedger:
    books = open_ledger(str(tmp_path / "ledger.sqlite3"))
    books.create_account("alice", 100)
    books.create_account("pauper", 5)
    return books


def prepared_for(job: JobSpec) -> ImagePrepared:
    image = ObjectRef(
        bucket="i2v", key=artifact_key(job.job_id, 0, "image.png"), size=1, sha256="0" * 64, content_type="image/png"
    )
    return ImagePrepared(job=job, image=image, width=WIDTH, height=HEIGHT, source_width=WIDTH, source_height=HEIGHT)


def test_billing_reserves_the_price_when_the_account_has_enough(ledger: SqlLedger) -> None:
    job = spec()
    price = PRICE

    result = BillingStage(ledger, MemoryObjectStore(), SEAL).reserve(prepared_for(job))

    assert isinstance(result, PointsReserved)
    assert result.price == price
    assert (result.image, result.width, result.height) == (prepared_for(job).image, WIDTH, HEIGHT)
    assert ledger.balance("alice") == 100 - price
    reservation = ledger.reservation(job.job_id, 0)
    assert reservation is not None and reservation.state == "reserved"


def test_billing_reserves_once_for_a_redelivered_command(ledger: SqlLedger) -> None:
    stage, cmd = BillingStage(ledger, MemoryObjectStore(), SEAL), prepared_for(spec())
    first, second = stage.reserve(cmd), stage.reserve(cmd)
    assert first == second
    assert ledger.balance("alice") == 100 - PRICE


def test_billing_rejects_an_account_without_enough_points_and_leaves_it_alone(ledger: SqlLedger) -> None:
    result = BillingStage(ledger, MemoryObjectStore(), SEAL).reserve(prepared_for(spec(account="pauper")))

    assert isinstance(result, JobRejected)
    assert result.code == "insufficient_points"
    assert (result.price, result.balance) == (PRICE, 5)
    assert ledger.balance("pauper") == 5
    refused = ledger.reservation("job-stage-1", 0)
    assert refused is not None and refused.state == "rejected"


def test_billing_rejects_an_unknown_account(ledger: SqlLedger) -> None:
    result = BillingStage(ledger, MemoryObjectStore(), SEAL).reserve(prepared_for(spec(account="nobody")))
    assert isinstance(result, JobRejected)
    assert result.code == "unknown_account"


def test_billing_captures_a_completed_job_once(ledger: SqlLedger) -> None:
    stage, job = BillingStage(ledger, MemoryObjectStore(), SEAL), spec()
    reserved = stage.reserve(prepared_for(job))
    assert isinstance(reserved, PointsReserved)

    stage.settle(completed(job, reserved.price))
    stage.settle(completed(job, reserved.price))

    reservation = ledger.reservation(job.job_id, 0)
    assert reservation is not None and reservation.state == "captured"
    assert ledger.balance("alice") == 100 - reserved.price
    assert ledger.reconcile() == []


@pytest.mark.parametrize("kind", ["failed", "cancelled"])
def test_billing_refunds_a_failed_or_cancelled_job_once(ledger: SqlLedger, kind: str) -> None:
    stage, job = BillingStage(ledger, MemoryObjectStore(), SEAL), spec()
    assert isinstance(stage.reserve(prepared_for(job)), PointsReserved)
    event = (
        JobFailed(job=job, stage=Stage.LATENT, code="internal", reason="boom")
        if kind == "failed"
        else JobCancelled(job=job, stage=Stage.LATENT)
    )

    stage.settle(event)
    stage.settle(event)

    reservation = ledger.reservation(job.job_id, 0)
    assert reservation is not None and reservation.state == "refunded"
    assert ledger.balance("alice") == 100
    assert ledger.reconcile() == []


def test_billing_does_not_capture_after_a_refund(ledger: SqlLedger) -> None:
    stage, job = BillingStage(ledger, MemoryObjectStore(), SEAL), spec()
    reserved = stage.reserve(prepared_for(job))
    assert isinstance(reserved, PointsReserved)

    stage.settle(JobFailed(job=job, stage=Stage.DECODE, code="internal", reason="boom"))
    voided = stage.settle(completed(job, reserved.price))

    assert isinstance(voided, JobFailed) and voided.code == FailureCode.NOT_RESERVED  # a free video is voided
    assert ledger.balance("alice") == 100
    assert ledger.reconcile() == [
        f"job {job.job_id}/0 (account 'alice') completed without a reservation: its reservation was refunded"
    ]


# --- latent, decode, mux on the tiny model ----------------------------------------------------------


def reserved_for(store: MemoryObjectStore, job: JobSpec) -> PointsReserved:
    pixels = np.random.default_rng(3).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    image = store.put(artifact_key(job.job_id, 0, "image.png"), png_of(pixels), "image/png")
    return PointsReserved(job=job, image=image, width=WIDTH, height=HEIGHT, price=PRICE)


class CancelAfter:
    """``is_cancelled`` that turns True once ``steps`` steps have reported progress; counts its calls."""

    def __init__(self, steps: int | None) -> None:
        self.steps = steps
        self.progress: Steps = []
        self.checks = 0

    def is_cancelled(self, _job_id: str, _generation: int) -> bool:
        self.checks += 1
        return self.steps is not None and len(self.progress) >= self.steps

    def record(self, step: int, total: int) -> None:
        self.progress.append((step, total))


@pytest.fixture(scope="module")
def latents_ready() -> tuple[MemoryObjectStore, LatentsReady, Steps, int]:
    """One real denoise shared by the latent, reuse and decode tests: (store, result, progress, checks)."""
    store = MemoryObjectStore()
    watch = CancelAfter(None)
    ready = LatentStage(store, "cpu", watch.is_cancelled).run(reserved_for(store, spec()), watch.record)
    return store, ready, watch.progress, watch.checks


def test_latent_stores_latents_and_reports_every_step(
    latents_ready: tuple[MemoryObjectStore, LatentsReady, Steps, int],
) -> None:
    store, ready, progress, checks = latents_ready

    assert progress == [(1, 2), (2, 2)]
    assert checks == 2  # cancellation is looked at once per step
    assert ready.latents.key == artifact_key("job-stage-1", 0, "latents.safetensors")
    assert ready.native_frames == TINY_NATIVE_FRAMES
    assert (ready.width, ready.height, ready.price) == (WIDTH, HEIGHT, PRICE)
    latents, meta = latents_from_bytes(store.get(ready.latents))
    assert tuple(latents.shape) == (1, TINY_NATIVE_FRAMES, 4, HEIGHT // 8, WIDTH // 8)
    assert meta["seed"] == "7"


def test_latent_reuses_stored_latents_without_denoising_again(
    latents_ready: tuple[MemoryObjectStore, LatentsReady, Steps, int],
) -> None:
    store, first, _, _ = latents_ready
    puts_before, gets_before = len(store.puts), len(store.gets)
    watch = CancelAfter(None)

    again = LatentStage(store, "cpu", watch.is_cancelled).run(reserved_for(store, spec()), watch.record)

    assert again.latents == first.latents
    assert again.model_copy(update={"job": first.job}) == first
    assert watch.checks == 0  # no denoising step ran
    assert watch.progress == [(2, 2)]  # progress jumps straight to done
    assert len(store.puts) == puts_before + 1  # only reserved_for()'s image; no latents written
    assert len(store.gets) == gets_before  # not even the image was read


def test_latent_stops_within_one_step_of_a_cancel() -> None:
    store = MemoryObjectStore()
    job = spec("job-cancelled", steps=5)
    watch = CancelAfter(2)

    with pytest.raises(JobCancelledError):
        LatentStage(store, "cpu", watch.is_cancelled).run(reserved_for(store, job), watch.record)

    assert watch.progress == [(1, 5), (2, 5)]
    assert watch.checks == 3  # the third step's check saw the cancel; steps 4 and 5 never ran
    assert store.head(artifact_key(job.job_id, 0, "latents.safetensors")) is None


def test_decode_delivers_exactly_duration_times_fps_frames(
    latents_ready: tuple[MemoryObjectStore, LatentsReady, Steps, int],
) -> None:
    store, ready, _, _ = latents_ready
    progress, record = recorder()

    frames_ready = DecodeStage(store, "cpu", chunk_size=3).run(ready, record)

    assert frames_ready.frame_count == DURATION * FPS == 24
    assert frames_ready.native_frames == TINY_NATIVE_FRAMES
    frames = frames_from_bytes(store.get(frames_ready.frames))
    assert frames.shape == (24, HEIGHT, WIDTH, 3)
    assert frames.dtype == np.uint8
    assert progress == [(0, 2), (1, 2), (2, 2)]

    puts_before, again_progress = len(store.puts), recorder()
    assert DecodeStage(store, "cpu", chunk_size=3).run(ready, again_progress[1]) == frames_ready
    assert len(store.puts) == puts_before  # stored frames are reused on a redelivery
    assert again_progress[0] == [(2, 2)]


def frames_ready_for(store: MemoryObjectStore, frames: np.ndarray, frame_count: int) -> FramesReady:
    job = spec("job-mux-1")
    ref = store.put(
        artifact_key(job.job_id, 0, "frames.safetensors"), frames_to_bytes(frames), "application/x-safetensors"
    )
    return FramesReady(
        job=job,
        frames=ref,
        frame_count=frame_count,
        native_frames=TINY_NATIVE_FRAMES,
        width=WIDTH,
        height=HEIGHT,
        price=PRICE,
    )


def moving_frames(count: int) -> np.ndarray:
    frames = np.zeros((count, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for index in range(count):
        frames[index, :, : (index + 1) * WIDTH // count] = (200, 60, 30)
    return frames


def test_mux_stores_a_verifiable_mp4_and_a_jpeg_poster() -> None:
    store = MemoryObjectStore()
    progress, record = recorder()

    done = MuxStage(store).run(frames_ready_for(store, moving_frames(24), 24), record)

    assert isinstance(done, JobCompleted)
    assert (done.frame_count, done.fps, done.duration_s) == (24, FPS, 2.0)
    assert (done.width, done.height) == (WIDTH, HEIGHT)
    info = probe_video(store.get(done.video))  # get() checks the ref's size and sha256
    assert (info.codec, info.frame_count, info.width, info.height) == ("h264", 24, WIDTH, HEIGHT)
    assert info.fps == Fraction(FPS)
    assert info.faststart
    assert done.video.content_type == "video/mp4"
    poster = Image.open(io.BytesIO(store.get(done.poster)))
    assert (poster.format, poster.size, done.poster.content_type) == ("JPEG", (WIDTH, HEIGHT), "image/jpeg")
    assert progress == [(1, 2), (2, 2)]


@pytest.mark.parametrize("claimed", [23, 25])
def test_mux_refuses_frames_that_disagree_with_the_command(claimed: int) -> None:
    store = MemoryObjectStore()
    cmd = frames_ready_for(store, moving_frames(24), claimed)
    puts_before = len(store.puts)

    with pytest.raises(PermanentError) as raised:
        MuxStage(store).run(cmd, recorder()[1])

    assert raised.value.code == "frame_count"
    assert len(store.puts) == puts_before


# --- store failures ---------------------------------------------------------------------------------


def test_ingest_refuses_a_tampered_upload_permanently() -> None:
    store = MemoryObjectStore()
    cmd = submitted(store, encoded(noise(64, 64), "PNG"))
    store.tamper(cmd.upload.key, encoded(noise(64, 64, seed=9), "PNG"))

    with pytest.raises(Exception) as raised:
        ingest(store).run(cmd)

    fault = classify(raised.value)
    assert (fault.transient, fault.code) == (False, "object_integrity")


def run_each_stage(store: MemoryObjectStore) -> list[Callable[[], object]]:
    """One call per stage that touches the store first thing."""
    job = spec("job-down-1")
    ref = ObjectRef(
        bucket=store.bucket,
        key=artifact_key(job.job_id, 0, "x"),
        size=1,
        sha256="0" * 64,
        content_type="application/octet-stream",
    )
    price = PRICE
    noop = recorder()[1]
    return [
        lambda: ingest(store).run(JobSubmitted(job=job, upload=ref)),
        lambda: LatentStage(store, "cpu", lambda _j, _g: False).run(
            PointsReserved(job=job, image=ref, width=WIDTH, height=HEIGHT, price=price), noop
        ),
        lambda: DecodeStage(store, "cpu", 8).run(
            LatentsReady(job=job, latents=ref, native_frames=8, width=WIDTH, height=HEIGHT, price=price), noop
        ),
        lambda: MuxStage(store).run(
            FramesReady(job=job, frames=ref, frame_count=24, native_frames=8, width=WIDTH, height=HEIGHT, price=price),
            noop,
        ),
    ]


@pytest.mark.parametrize("index", range(4), ids=["ingest", "latent", "decode", "mux"])
def test_an_unavailable_store_is_a_transient_fault(index: int) -> None:
    store = MemoryObjectStore()
    store.unavailable = True

    with pytest.raises(ObjectStoreUnavailableError) as raised:
        run_each_stage(store)[index]()

    fault = classify(raised.value)
    assert (fault.transient, fault.code) == (True, "object_store_unavailable")
