"""Billing's decisions on a real ledger (SQLite file and PostgreSQL schema): a settled generation is final."""

from pathlib import Path

import pytest

from contracts.failures import FailureCode
from contracts.keys import artifact_key
from contracts.messages import ImagePrepared, JobCancelled, JobFailed, JobRejected, JobSpec, PointsReserved
from contracts.params import GenerationParams
from contracts.pricing import price_points
from contracts.refs import ObjectRef
from contracts.stages import Stage
from infra.objectstore import MemoryObjectStore
from services.billing.ledger import SqlLedger, open_ledger
from services.billing.seal import ReservationSeal
from services.billing.stage import BillingStage
from tests.services.job_messages import completed
from tests.services.sql_backends import SQL_BACKENDS, sql_target

PRICE = price_points(GenerationParams(duration=2, fps=8), 128, 64)
SEAL = ReservationSeal(b"a test billing secret")


@pytest.fixture(params=SQL_BACKENDS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> SqlLedger:
    books = open_ledger(sql_target(request, tmp_path / "ledger.sqlite3"))
    books.create_account("alice", 100)
    return books


def prepared(generation: int = 0) -> ImagePrepared:
    job = JobSpec(
        job_id="job-final", account="alice", generation=generation, params=GenerationParams(duration=2, fps=8, seed=1)
    )
    image = ObjectRef(
        bucket="i2v", key=artifact_key(job.job_id, 0, "image.png"), size=1, sha256="0" * 64, content_type="image/png"
    )
    return ImagePrepared(job=job, image=image, width=128, height=64, source_width=128, source_height=64)


@pytest.mark.parametrize("ending", ["failed", "cancelled"])
def test_a_redelivery_after_the_refund_forwards_nothing(ledger: SqlLedger, ending: str) -> None:
    stage, cmd = BillingStage(ledger, MemoryObjectStore(), SEAL), prepared()
    assert isinstance(stage.reserve(cmd), PointsReserved)
    stage.settle(
        JobFailed(job=cmd.job, stage=Stage.LATENT, code="internal", reason="boom")
        if ending == "failed"
        else JobCancelled(job=cmd.job, stage=Stage.LATENT)
    )

    assert stage.reserve(cmd) is None  # not PointsReserved: latent would run a refunded job for free
    assert ledger.balance("alice") == 100
    reservation = ledger.reservation("job-final", 0)
    assert reservation is not None and reservation.state == "refunded"

    # A replay is a new generation: it reserves afresh and runs.
    replay = stage.reserve(prepared(generation=1))
    assert isinstance(replay, PointsReserved) and replay.job.generation == 1
    assert ledger.balance("alice") == 100 - PRICE
    assert ledger.reconcile() == []


def test_a_redelivery_after_the_capture_forwards_nothing(ledger: SqlLedger) -> None:
    stage, cmd = BillingStage(ledger, MemoryObjectStore(), SEAL), prepared()
    assert isinstance(stage.reserve(cmd), PointsReserved)
    stage.settle(completed(cmd.job, PRICE))

    assert stage.reserve(cmd) is None
    assert ledger.balance("alice") == 100 - PRICE
    assert ledger.reconcile() == []


def test_the_price_is_for_the_size_ingest_prepared_and_the_steps(ledger: SqlLedger) -> None:
    stage = BillingStage(ledger, MemoryObjectStore(), SEAL)
    small = prepared()
    params = small.job.params.model_copy(update={"steps": 50})
    large = small.model_copy(update={"job": small.job.model_copy(update={"job_id": "job-large", "params": params})})
    large = large.model_copy(update={"width": 512, "height": 256})

    cheap, dear = stage.reserve(small), stage.reserve(large)

    assert isinstance(cheap, PointsReserved) and isinstance(dear, PointsReserved)
    assert cheap.price == 8 + 2  # ceil(128·64 · 16 frames · 25 steps / 2,457,600)
    assert dear.price == 8 + 43  # 16 times the pixels, twice the steps
    assert ledger.balance("alice") == 100 - cheap.price - dear.price


def test_a_video_past_the_size_cap_is_rejected_before_any_reserve(ledger: SqlLedger) -> None:
    cmd = prepared()
    params = cmd.job.params.model_copy(update={"duration": 8, "fps": 24})
    # The model's size fitted to a picture can be larger than any resolution a client could ask for.
    huge = cmd.model_copy(update={"job": cmd.job.model_copy(update={"params": params}), "width": 2048, "height": 1536})

    result = BillingStage(ledger, MemoryObjectStore(), SEAL).reserve(huge)

    assert isinstance(result, JobRejected) and result.code == FailureCode.VIDEO_TOO_LARGE
    assert "at most 56 frames" in result.reason
    assert ledger.balance("alice") == 100 and ledger.reservation("job-final", 0) is None
