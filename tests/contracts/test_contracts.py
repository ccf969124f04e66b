"""Contracts: validation names the bad field, messages round-trip, ids are deterministic."""

import json

import pytest
from pydantic import ValidationError

from contracts import (
    GenerationParams,
    JobCompleted,
    JobSpec,
    JobSubmitted,
    ObjectRef,
    Resolution,
    Stage,
    StageProgress,
    artifact_key,
    parse_event,
    price_points,
)
from contracts.failures import FailureCode
from contracts.messages import TERMINAL_TYPES, JobFailed, is_terminal
from contracts.subjects import msg_id, work_subject
from services.bus.publishing import route

REF = ObjectRef(bucket="i2v", key="jobs/j1/upload", size=3, sha256="a" * 64, content_type="image/png")


@pytest.mark.parametrize(
    ("duration", "fps", "points"),
    [(1, 4, 12), (4, 8, 24), (4, 11, 24), (4, 12, 25), (8, 24, 44), (2, 16, 18)],
)
def test_price_matches_the_product_formula(duration: int, fps: int, points: int) -> None:
    assert price_points(duration, fps) == points


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fps", 0),
        ("fps", 25),
        ("duration", 99),
        ("duration", 0),
        ("motion_bucket_id", 256),
        ("steps", 0),
        ("cfg_scale", 5.5),
        ("augmentation_level", -0.1),
        ("seed", -2),
    ],
)
def test_out_of_range_params_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        GenerationParams.model_validate({field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_defaults_and_frame_count() -> None:
    params = GenerationParams()
    assert (params.duration, params.fps, params.steps, params.cfg_scale, params.seed) == (4, 8, 25, 2.5, -1)
    assert params.frame_count == 32


def test_random_seed_is_resolved_once_and_kept() -> None:
    resolved = GenerationParams(seed=-1).with_resolved_seed()
    assert 0 <= resolved.seed < 2**32
    assert resolved.with_resolved_seed() == resolved
    assert GenerationParams(seed=7).with_resolved_seed().seed == 7


def test_resolution_parses_and_rejects_non_multiples() -> None:
    assert Resolution.parse("1024x576") == Resolution(width=1024, height=576)
    with pytest.raises(ValueError, match="1024x576"):
        Resolution.parse("big")
    with pytest.raises(ValidationError):
        Resolution.parse("1000x576")


def test_messages_are_frozen_and_reject_unknown_fields() -> None:
    job = JobSpec(job_id="j123456", account="local", params=GenerationParams(seed=3))
    with pytest.raises(ValidationError):
        job.account = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        JobSubmitted.model_validate({"job": job.model_dump(), "upload": REF.model_dump(), "extra": 1})


def test_schema_version_is_checked() -> None:
    job = JobSpec(job_id="j123456", account="local", params=GenerationParams(seed=3))
    body = JobSubmitted(job=job, upload=REF).model_dump()
    body["schema_version"] = 2
    with pytest.raises(ValidationError, match="schema_version"):
        JobSubmitted.model_validate(body)


def test_events_round_trip_through_the_discriminated_union() -> None:
    job = JobSpec(job_id="j123456", account="local", params=GenerationParams(seed=3))
    done = JobCompleted(
        job=job, video=REF, poster=REF, frame_count=32, fps=8, duration_s=4.0, width=256, height=256, price=24
    )
    assert parse_event(done.model_dump_json().encode()) == done
    progress = StageProgress(job_id="j123456", stage=Stage.LATENT, step=3, total=25)
    assert parse_event(progress.model_dump_json().encode()) == progress


def test_routes_and_message_ids_are_deterministic() -> None:
    job = JobSpec(job_id="j123456", account="local", params=GenerationParams(seed=3), generation=2)
    where = route(JobSubmitted(job=job, upload=REF))
    assert where.subject == work_subject(Stage.INGEST) == "i2v.work.ingest"
    assert where.msg_id == msg_id("j123456", "to-ingest", 2) == route(JobSubmitted(job=job, upload=REF)).msg_id
    assert artifact_key("j123456", 2, "video.mp4") == "jobs/j123456/g2/video.mp4"


def test_object_ref_requires_a_sha256() -> None:
    with pytest.raises(ValidationError, match="sha256"):
        ObjectRef(bucket="i2v", key="k", size=1, sha256="nothex", content_type="x/y")


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "jobs/j1/../../x", "/jobs/j1/upload", "jobs//j1", "jobs/./x", "a\\b", "a\nb"]
)
def test_object_ref_refuses_keys_that_escape_or_hide(key: str) -> None:
    with pytest.raises(ValidationError, match="object key"):
        ObjectRef(bucket="i2v", key=key, size=1, sha256="0" * 64, content_type="image/png")


def test_failure_codes_on_the_wire_are_plain_strings() -> None:
    failed = JobFailed(
        job=JobSpec(job_id="j123456", account="a", params=GenerationParams(seed=1)),
        stage=Stage.MUX,
        code=FailureCode.MUX_MISMATCH,
        reason="r",
    )
    assert json.loads(failed.model_dump_json())["code"] == "mux_mismatch"
    assert parse_event(failed.model_dump_json().encode()) == failed
    assert is_terminal(failed) and "JobFailed" in TERMINAL_TYPES
