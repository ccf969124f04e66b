"""What `i2v jobs show` says of jobs that did not end with a video: running, failed, cancelled after a
replay, and one whose parameters nothing recorded."""

from dataclasses import replace

from contracts.failures import FailureCode
from contracts.messages import (
    CancelRequested,
    Event,
    JobCancelled,
    JobFailed,
    JobSpec,
    ReplayRequested,
    StageFinished,
    StageProgress,
    StageStarted,
)
from contracts.params import GenerationParams
from contracts.stages import Stage
from services.cli.jobs import describe_params, fold, job_lines
from services.gateway.eta import Standing
from services.jobclient import Followed, JobHistory

SPEC = JobSpec(
    job_id="jlines01", account="local", params=GenerationParams(duration=2, fps=12, steps=4, seed=7, loop="pingpong")
)


def shown(events: list[Event], *, spec: JobSpec | None = SPEC, reserved: int | None = None) -> dict[str, str]:
    history = JobHistory(SPEC.job_id, tuple(Followed(n, e) for n, e in enumerate(events, start=1)))
    return dict(job_lines(fold(history, spec, reserved)))


def test_a_running_job_shows_its_step_and_the_points_reserved() -> None:
    lines = shown(
        [
            StageStarted(job_id=SPEC.job_id, stage=Stage.INGEST),
            StageFinished(job_id=SPEC.job_id, stage=Stage.INGEST, seconds=0.25),
            StageStarted(job_id=SPEC.job_id, stage=Stage.LATENT),
            StageProgress(job_id=SPEC.job_id, stage=Stage.LATENT, step=2, total=4),
        ],
        reserved=12,
    )

    assert lines["status"] == "generating"
    assert lines["stage"] == "latent, step 2/4"
    assert lines["progress"] == "40%"  # ingest 5 + half of latent's 70
    assert lines["price"] == "12 points, reserved; charged when the video is delivered"
    assert lines["stages"] == "ingest 0.25s  (total 0.25s)"
    assert "output" not in lines and "error" not in lines


def test_a_failed_job_names_its_error_and_was_refunded() -> None:
    lines = shown(
        [
            StageStarted(job_id=SPEC.job_id, stage=Stage.DECODE),
            JobFailed(job=SPEC, stage=Stage.DECODE, code=FailureCode.RIFE_UNAVAILABLE, reason="no RIFE weights"),
        ]
    )

    assert lines["status"] == "failed"
    assert lines["error"] == "rife_unavailable at decode: no RIFE weights"
    assert lines["price"] == "refunded (nothing charged)"


def test_a_replayed_job_shows_its_generation_and_the_cancel() -> None:
    replayed = SPEC.model_copy(update={"generation": 1})
    lines = shown(
        [
            JobFailed(job=SPEC, stage=Stage.LATENT, code=FailureCode.CORRUPT, reason="bad latents"),
            ReplayRequested(job_id=SPEC.job_id, generation=1, stage=Stage.LATENT),
            StageStarted(job_id=SPEC.job_id, stage=Stage.LATENT, generation=1),
            CancelRequested(job_id=SPEC.job_id, generation=1),
        ]
    )
    assert lines["status"] == "generating (generation 1, replayed), cancel requested"

    ended = shown(
        [
            ReplayRequested(job_id=SPEC.job_id, generation=1, stage=Stage.LATENT),
            JobCancelled(job=replayed, stage=Stage.LATENT),
        ]
    )
    assert ended["status"] == "cancelled (generation 1, replayed)"
    assert ended["error"] == "cancelled at latent: the job was cancelled"


def test_params_name_the_main_ones_and_only_the_changed_others() -> None:
    assert describe_params(SPEC.params) == (
        "2 s at 12 fps, 4 steps, cfg 1-2.5, motion 127, model tiny, resolution auto, loop pingpong"
    )


def test_a_job_without_recorded_parameters_still_shows_its_last_event() -> None:
    lines = shown([StageStarted(job_id=SPEC.job_id, stage=Stage.INGEST)], spec=None)

    assert lines == {"job": SPEC.job_id, "status": "unknown; last event StageStarted", "events": "1"}


def test_a_queued_job_shows_its_place_in_line_and_eta() -> None:
    history = JobHistory(SPEC.job_id, (Followed(1, StageStarted(job_id=SPEC.job_id, stage=Stage.INGEST)),))
    record = replace(fold(history, SPEC, None), standing=Standing(queue_position=2, eta_s=39.6))
    assert dict(job_lines(record))["eta"] == "3rd in line · about 40 s"
    running = replace(record, standing=Standing(eta_s=5.0))
    assert dict(job_lines(running))["eta"] == "about 5 s"
    assert "eta" not in shown([StageStarted(job_id=SPEC.job_id, stage=Stage.INGEST)])  # nothing measured yet
