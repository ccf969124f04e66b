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
from contracts.params import MAX_VIDEO_PIXELS, check_video_size
from contracts.pricing import quoted_size
from contracts.subjects import msg_id, work_subject
from services.bus.publishing import route

REF = ObjectRef(bucket="i2v", key="jobs/j1/upload", size=3, sha256="a" * 64, content_type="image/png")


@pytest.mark.parametrize(
    ("size", "duration", "fps", "steps", "points"),
    [
        ((256, 192), 4, 8, 25, 24),  # the default job on tiny: 8 + 16
        ((256, 192), 2, 8, 25, 16),
        ((256, 192), 1, 4, 1, 9),  # the smallest job still pays a point of work
        ((256, 192), 8, 24, 50, 200),
        ((1024, 576), 4, 8, 25, 200),  # SVD's size: 12 times the pixels of tiny
        ((1024, 576), 8, 24, 25, 1160),
        ((1024, 576), 8, 24, 50, 2312),
        ((2048, 2048), 1, 24, 50, 2056),
    ],
)
def test_price_is_pixels_times_frames_times_steps(
    size: tuple[int, int], duration: int, fps: int, steps: int, points: int
) -> None:
    params = GenerationParams(duration=duration, fps=fps, steps=steps)
    assert price_points(params, *size) == points


def test_steps_and_resolution_change_the_price() -> None:
    base = GenerationParams(duration=4, fps=8, steps=25)
    more_steps = base.model_copy(update={"steps": 50})
    assert price_points(more_steps, 256, 192) > price_points(base, 256, 192)
    assert price_points(base, 1024, 576) > price_points(base, 256, 192)
    assert quoted_size(base, (1024, 576)) == (1024, 576)
    asked = GenerationParams(resolution=Resolution(width=512, height=512))
    assert quoted_size(asked, (1024, 576)) == (512, 512)


def test_the_video_size_is_capped() -> None:
    with pytest.raises(ValidationError, match="at most 42 frames"):
        GenerationParams(duration=8, fps=24, steps=50, resolution=Resolution(width=2048, height=2048))
    assert GenerationParams(duration=1, fps=24, resolution=Resolution(width=2048, height=2048)).frame_count == 24
    assert GenerationParams(duration=8, fps=24, resolution=Resolution(width=1280, height=704)).frame_count == 192
    with pytest.raises(ValueError, match="more than the 176,947,200 allowed"):
        check_video_size(1344, 768, 192)
    assert MAX_VIDEO_PIXELS == 1280 * 720 * 192


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


def test_billings_voiding_of_a_completion_has_its_own_id_every_other_ending_shares_one() -> None:
    job = JobSpec(job_id="j123456", account="local", params=GenerationParams(seed=3), generation=2)
    voided = JobFailed(job=job, stage=Stage.BILLING, code=FailureCode.NOT_RESERVED, reason="no reservation")
    ended: list[JobFailed | JobCompleted] = [
        JobFailed(job=job, stage=Stage.LATENT, code=FailureCode.NOT_RESERVED, reason="unsealed"),
        JobFailed(job=job, stage=Stage.BILLING, code=FailureCode.INTERNAL, reason="ledger down"),
        JobCompleted(
            job=job, video=REF, poster=REF, frame_count=32, fps=8, duration_s=4.0, width=256, height=192, price=24
        ),
    ]
    assert route(voided).msg_id == msg_id("j123456", "voided", 2)
    assert {route(e).msg_id for e in ended} == {msg_id("j123456", "terminal", 2)}
    assert {route(e).subject for e in [voided, *ended]} == {"i2v.events.j123456.terminal"}


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


# --- the video options of issue 9 -------------------------------------------------------------------


def test_video_options_default_to_todays_behaviour() -> None:
    params = GenerationParams()
    assert (params.interpolator, params.loop, params.format, params.quality) == ("dis", "none", "mp4", "high")
    assert (params.stabilize, params.min_cfg, params.fps_conditioning) == (False, 1.0, None)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"interpolator": "flowframes"}, "interpolator"),
        ({"loop": "boomerang"}, "loop"),
        ({"format": "mov"}, "format"),
        ({"quality": "ultra"}, "quality"),
        ({"min_cfg": 0.5}, "min_cfg"),
        ({"cfg_scale": 2.0, "min_cfg": 2.5}, "min_cfg"),
        ({"fps_conditioning": 0}, "fps_conditioning"),
        ({"fps_conditioning": 31}, "fps_conditioning"),
        ({"stabilize": "maybe"}, "stabilize"),
    ],
)
def test_video_options_are_validated_naming_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        GenerationParams.model_validate(values)
    assert raised.value.errors()[0]["loc"][0] == field


def test_the_still_model_is_priced_as_one_step_per_frame() -> None:
    from contracts.pricing import price_points

    still = GenerationParams(model="still", steps=25)
    assert price_points(still, 1024, 576) == 16
    assert price_points(still.model_copy(update={"model": "tiny"}), 1024, 576) == 200
