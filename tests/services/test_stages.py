"""Each stage's logic on its own: in-memory object store, a real SQLite ledger, the tiny model. No servers."""

import io
from collections.abc import Callable, Mapping
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
from pipeline.video import available_formats, probe_video
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


# --- the job's video options: interpolator, loop, camera, stabilize, format, knobs, the still model ---


def spec_with(job_id: str, params: Mapping[str, object]) -> JobSpec:
    values = {**spec().params.model_dump(), **params}
    return JobSpec(job_id=job_id, account="alice", params=GenerationParams.model_validate(values))


def decoded_with(
    latents_ready: tuple[MemoryObjectStore, LatentsReady, Steps, int], job_id: str, **params: object
) -> tuple[FramesReady, np.ndarray]:
    """Decode the shared latents as job ``job_id`` asking ``params``; the frames it stored."""
    store, ready, _, _ = latents_ready
    job = spec_with(job_id, params)
    result = DecodeStage(store, "cpu", chunk_size=3).run(ready.model_copy(update={"job": job}), recorder()[1])
    return result, frames_from_bytes(store.get(result.frames))


def native_of(latents_ready: tuple[MemoryObjectStore, LatentsReady, Steps, int]) -> np.ndarray:
    """The shared latents' native frames, decoded as the decode stage did before it had options."""
    from pipeline.decode import decode_latents, frames_to_uint8
    from pipeline.models import load_vae, pick_device

    store, ready, _, _ = latents_ready
    latents, _ = latents_from_bytes(store.get(ready.latents))
    vae = load_vae("tiny", *pick_device("cpu"))
    return frames_to_uint8(decode_latents(vae, latents, num_frames=TINY_NATIVE_FRAMES, chunk_size=3))


def test_decode_by_default_is_the_vae_decode_interpolated_as_before(
    latents_ready: tuple[MemoryObjectStore, LatentsReady, Steps, int],
) -> None:
    from pipeline.interpolate import interpolate_to_count

    result, frames = decoded_with(latents_ready, "job-default-opts")
    native = native_of(latents_ready)
    assert np.array_equal(frames, interpolate_to_count(native, 24))
    assert (result.camera_words, result.camera_unknown) == (("static",), ())


def test_decode_moves_the_camera_after_interpolation_and_records_the_words(
    latents_ready: tuple[MemoryObjectStore, LatentsReady, Steps, int],
) -> None:
    from pipeline.camera import apply_camera, camera_path, parse_motion_prompt

    _, plain = decoded_with(latents_ready, "job-no-prompt")
    result, zoomed = decoded_with(latents_ready, "job-zoom", motion_prompt="slow zoom in, wobble 缓慢推进")

    assert result.camera_words == ("slow", "zoom", "in", "slow", "dolly", "in")
    assert result.camera_unknown == ("wobble",)
    # Same seed: the prompted run is the unprompted run warped by the recorded path.
    path = camera_path(parse_motion_prompt("slow zoom in, wobble 缓慢推进"), 24)
    assert np.array_equal(zoomed, apply_camera(plain, path))
    assert path.scale[-1] > path.scale[0]


def test_decode_pingpong_loop_mirrors_and_keeps_the_frame_count(
    latents_ready: tuple[MemoryObjectStore, LatentsReady, Steps, int],
) -> None:
    result, frames = decoded_with(latents_ready, "job-pingpong", loop="pingpong")
    assert frames.shape[0] == result.frame_count == 24
    for k in range(1, 24):
        assert np.array_equal(frames[k], frames[24 - k]), k


def test_decode_stabilize_and_crossfade_keep_exactly_duration_times_fps(
    latents_ready: tuple[MemoryObjectStore, LatentsReady, Steps, int],
) -> None:
    _, frames = decoded_with(latents_ready, "job-stab", stabilize=True, loop="crossfade", motion_prompt="pan left")
    assert frames.shape == (24, HEIGHT, WIDTH, 3)


def test_decode_refuses_rife_without_configured_weights_in_one_line(
    latents_ready: tuple[MemoryObjectStore, LatentsReady, Steps, int],
) -> None:
    store, ready, _, _ = latents_ready
    cmd = ready.model_copy(update={"job": spec("job-rife-none", interpolator="rife")})
    with pytest.raises(PermanentError) as raised:
        DecodeStage(store, "cpu", chunk_size=3).run(cmd, recorder()[1])
    assert raised.value.code == FailureCode.RIFE_UNAVAILABLE
    assert "I2V_RIFE_WEIGHTS" in str(raised.value) and "\n" not in str(raised.value)
    assert store.head(artifact_key("job-rife-none", 0, "frames.safetensors")) is None

    missing = Path(__file__).parent / "no-such-flownet.pkl"
    with pytest.raises(PermanentError) as raised:
        DecodeStage(store, "cpu", chunk_size=3, rife_weights=missing).run(cmd, recorder()[1])
    assert raised.value.code == FailureCode.RIFE_UNAVAILABLE
    assert "no-such-flownet.pkl" in str(raised.value)


def test_decode_interpolates_with_the_deployments_rife_weights(
    latents_ready: tuple[MemoryObjectStore, LatentsReady, Steps, int], tmp_path: Path
) -> None:
    import torch

    from pipeline.rife import WEIGHTS_FILE, load_rife, rife_to_count
    from tests.pipeline.test_rife import published_shapes, random_state

    torch.save(random_state(published_shapes()), tmp_path / WEIGHTS_FILE)
    store, ready, _, _ = latents_ready
    cmd = ready.model_copy(update={"job": spec("job-rife", interpolator="rife")})
    result = DecodeStage(store, "cpu", chunk_size=3, rife_weights=tmp_path).run(cmd, recorder()[1])
    frames = frames_from_bytes(store.get(result.frames))
    assert frames.shape == (24, HEIGHT, WIDTH, 3)
    assert np.array_equal(frames, rife_to_count(native_of(latents_ready), 24, load_rife(tmp_path, "cpu")))


def test_latent_min_cfg_and_fps_conditioning_reach_the_model(
    latents_ready: tuple[MemoryObjectStore, LatentsReady, Steps, int],
) -> None:
    import torch

    store, default, _, _ = latents_ready
    base, _ = latents_from_bytes(store.get(default.latents))
    for job_id, knob in (("job-min-cfg", {"min_cfg": 2.0}), ("job-fps-cond", {"fps_conditioning": 20})):
        job = spec_with(job_id, knob)
        ready = LatentStage(store, "cpu", CancelAfter(None).is_cancelled).run(reserved_for(store, job), recorder()[1])
        changed, _ = latents_from_bytes(store.get(ready.latents))
        assert not torch.allclose(base, changed), knob
    # Explicit defaults (min_cfg 1, fps conditioning as computed: 8 frames over 2 s = 4) are today's latents.
    job = spec("job-explicit-defaults", min_cfg=1.0, fps_conditioning=4)
    ready = LatentStage(store, "cpu", CancelAfter(None).is_cancelled).run(reserved_for(store, job), recorder()[1])
    assert torch.equal(base, latents_from_bytes(store.get(ready.latents))[0])


def muxed(params: dict[str, object], frames: np.ndarray) -> tuple[MemoryObjectStore, JobCompleted]:
    store = MemoryObjectStore()
    job = spec_with("job-mux-format", params)
    ref = store.put(artifact_key(job.job_id, 0, "frames.safetensors"), frames_to_bytes(frames), "x/y")
    cmd = FramesReady(
        job=job,
        frames=ref,
        frame_count=frames.shape[0],
        native_frames=TINY_NATIVE_FRAMES,
        width=WIDTH,
        height=HEIGHT,
        price=PRICE,
        camera_words=("slow", "zoom", "in"),
        camera_unknown=("wobble",),
    )
    return store, MuxStage(store).run(cmd, recorder()[1])


@pytest.mark.parametrize(
    ("fmt", "codec", "name", "content_type"),
    [
        ("webm", "vp9", "video.webm", "video/webm"),
        ("gif", "gif", "video.gif", "image/gif"),
        ("webp", "webp", "video.webp", "image/webp"),
        ("mp4", "h264", "video.mp4", "video/mp4"),
        pytest.param(
            "av1",
            "av1",
            "video.mp4",
            "video/mp4",
            marks=pytest.mark.skipif("av1" not in available_formats(), reason="this FFmpeg has no AV1 encoder"),
        ),
    ],
)
def test_mux_writes_the_jobs_format_with_its_parameters_and_seed_inside(
    fmt: str, codec: str, name: str, content_type: str
) -> None:
    store, done = muxed({"format": fmt, "quality": "medium"}, moving_frames(24))

    assert done.video.key == artifact_key("job-mux-format", 0, name)
    assert (done.video.content_type, done.content_type, done.format) == (content_type, content_type, fmt)
    info = probe_video(store.get(done.video))
    assert (info.codec, info.frame_count, info.width, info.height) == (codec, 24, WIDTH, HEIGHT)
    assert info.metadata["seed"] == "7"
    assert GenerationParams.model_validate_json(info.metadata["params"]) == spec().params.model_copy(
        update={"format": fmt, "quality": "medium"}
    )
    assert (done.camera_words, done.camera_unknown) == (("slow", "zoom", "in"), ("wobble",))
    assert done.poster.content_type == "image/jpeg"


def test_the_still_model_makes_a_camera_move_of_the_picture_itself() -> None:
    from pipeline.camera import apply_camera, camera_path, parse_motion_prompt
    from pipeline.model_catalog import STILL_NATIVE_FRAMES

    store = MemoryObjectStore()
    job = spec("job-still", model="still", motion_prompt="slow zoom in, pan left", format="gif")
    reserved = reserved_for(store, job)
    picture = np.asarray(Image.open(io.BytesIO(store.get(reserved.image))))
    ready = LatentStage(store, "cpu", CancelAfter(None).is_cancelled).run(reserved, recorder()[1])
    assert ready.native_frames == STILL_NATIVE_FRAMES
    framed = DecodeStage(store, "cpu", chunk_size=3).run(ready, recorder()[1])
    frames = frames_from_bytes(store.get(framed.frames))
    still = np.repeat(picture[None], 24, axis=0)
    assert np.array_equal(frames, apply_camera(still, camera_path(parse_motion_prompt(job.params.motion_prompt), 24)))
    done = MuxStage(store).run(framed, recorder()[1])
    assert probe_video(store.get(done.video)).frame_count == 24
    assert done.camera_words == ("slow", "zoom", "in", "slow", "pan", "left")


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
