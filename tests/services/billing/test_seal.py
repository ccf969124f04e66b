"""Billing's seal: only the job and price billing reserved pass the check latent, decode and mux make."""

import stat
import threading
from pathlib import Path

import pytest

from contracts.failures import FailureCode
from contracts.keys import artifact_key
from contracts.messages import FramesReady, JobSpec, LatentsReady, PointsReserved
from contracts.params import GenerationParams
from contracts.refs import ObjectRef
from services.billing.seal import SECRET_FILE, ReservationSeal, load_or_create_secret, seal_from
from services.bus.faults import PermanentError
from services.config import Settings

SEAL = ReservationSeal(b"a test billing secret")
JOB = JobSpec(job_id="job-sealed", account="alice", params=GenerationParams(duration=2, fps=8, seed=1))
REF = ObjectRef(bucket="i2v", key=artifact_key(JOB.job_id, 0, "x"), size=1, sha256="0" * 64, content_type="x/y")


def reserved(job: JobSpec = JOB, price: int = 10, seal: str | None = None) -> PointsReserved:
    return PointsReserved(
        job=job, image=REF, width=128, height=64, price=price, seal=SEAL.sign(JOB, 10) if seal is None else seal
    )


def test_what_billing_sealed_passes_at_every_stage() -> None:
    cmd = reserved()
    latents = LatentsReady(job=JOB, latents=REF, native_frames=8, width=128, height=64, price=10, seal=cmd.seal)
    frames = FramesReady(
        job=JOB, frames=REF, frame_count=16, native_frames=8, width=128, height=64, price=10, seal=cmd.seal
    )

    assert SEAL.checked(cmd) is cmd
    assert SEAL.checked(latents) is latents
    assert SEAL.checked(frames) is frames


@pytest.mark.parametrize(
    "forged",
    [
        reserved(seal=""),  # no reservation at all: a command published straight onto i2v.work.latent
        reserved(price=1),  # a lower price than billing reserved
        reserved(job=JOB.model_copy(update={"account": "mallory"})),  # charged to someone else
        reserved(job=JOB.model_copy(update={"generation": 1})),  # another run of the job
        reserved(job=JOB.model_copy(update={"job_id": "job-other"})),
        reserved(job=JOB.model_copy(update={"params": JOB.params.model_copy(update={"steps": 50})})),  # bigger
        reserved(seal=ReservationSeal(b"another billing's secret").sign(JOB, 10)),
    ],
    ids=["unsealed", "price", "account", "generation", "job", "steps", "other-secret"],
)
def test_anything_else_fails_the_job_as_not_reserved(forged: PointsReserved) -> None:
    with pytest.raises(PermanentError) as refused:
        SEAL.checked(forged)
    assert refused.value.code == FailureCode.NOT_RESERVED


def test_the_generated_secret_is_private_and_shared_by_processes_starting_at_once(tmp_path: Path) -> None:
    path = tmp_path / "state" / SECRET_FILE
    barrier = threading.Barrier(8)
    found: list[bytes] = []

    def load() -> None:
        barrier.wait(timeout=10)
        found.append(load_or_create_secret(path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(found) == 8 and len(set(found)) == 1 and len(found[0]) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [SECRET_FILE]  # no partial file left behind
    settings = Settings(state_dir=tmp_path / "state")
    assert seal_from(settings).sign(JOB, 10) == ReservationSeal(found[0]).sign(JOB, 10)


def test_a_configured_secret_wins_over_the_state_folder(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, billing_secret="a test billing secret")
    assert seal_from(settings).sign(JOB, 10) == SEAL.sign(JOB, 10)
    assert not (tmp_path / SECRET_FILE).exists()
    with pytest.raises(ValueError, match="16 bytes"):
        ReservationSeal(b"short")
