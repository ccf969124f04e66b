"""What SSE clients are shown of each event: public fields and URLs, never object references or the account."""

import json

from contracts import messages
from contracts.failures import FailureCode
from contracts.params import GenerationParams
from contracts.refs import ObjectRef
from contracts.stages import Stage
from services.gateway.events import frame
from tests.services.job_messages import completed

ACCOUNT = "alice-private"
BUCKET = "internal-bucket"
SPEC = messages.JobSpec(
    job_id="jpublic0001", account=ACCOUNT, params=GenerationParams(duration=2, seed=9), generation=1
)
VIDEO = ObjectRef(
    bucket=BUCKET, key="jobs/jpublic0001/g1/video.mp4", size=5000, sha256="a" * 64, content_type="video/mp4"
)
POSTER = ObjectRef(
    bucket=BUCKET, key="jobs/jpublic0001/g1/poster.png", size=90, sha256="b" * 64, content_type="image/png"
)
JOB = SPEC.job_id

EVERY_EVENT: list[messages.Event] = [
    messages.StageStarted(job_id=JOB, stage=Stage.INGEST, generation=1),
    messages.StageProgress(job_id=JOB, stage=Stage.LATENT, generation=1, step=2, total=4),
    messages.StageFinished(job_id=JOB, stage=Stage.LATENT, generation=1, seconds=1.5),
    messages.CancelRequested(job_id=JOB, generation=1, reason=f"cancelled by {ACCOUNT} through the API"),
    messages.ReplayRequested(job_id=JOB, generation=1, stage=Stage.DECODE),
    completed(SPEC, 16, width=256, height=192, video=VIDEO, poster=POSTER),
    messages.JobFailed(
        job=SPEC, stage=Stage.DECODE, code=FailureCode.OUT_OF_MEMORY, reason="the GPU ran out of memory"
    ),
    messages.JobRejected(
        job=SPEC, code=FailureCode.INSUFFICIENT_POINTS, reason="16 points needed", price=16, balance=3
    ),
    messages.JobCancelled(job=SPEC, stage=Stage.LATENT),
]


def shown(event: messages.Event) -> dict[str, object]:
    item = frame(7, event.model_dump_json().encode())
    lines = item.sse.decode().split("\n")
    assert lines[:2] == ["id: 7", f"event: {event.type}"]
    data: dict[str, object] = json.loads(lines[2].removeprefix("data: "))
    return data


def test_no_event_shows_object_references_or_the_account() -> None:
    for event in EVERY_EVENT:
        data = shown(event)
        text = json.dumps(data)
        for secret in (ACCOUNT, BUCKET, VIDEO.key, POSTER.key, VIDEO.sha256, POSTER.sha256, "schema_version"):
            assert secret not in text, (event.type, secret, text)
        assert (data["type"], data["job_id"], data["generation"]) == (event.type, JOB, 1)


def test_the_completed_event_gives_the_api_urls_and_the_output() -> None:
    data = shown(EVERY_EVENT[5])
    assert data == {
        "type": "JobCompleted",
        "job_id": JOB,
        "generation": 1,
        "price": 16,
        "output": {
            "frame_count": 16,
            "fps": 8,
            "duration_s": 2.0,
            "width": 256,
            "height": 192,
            "size_bytes": 5000,
            "format": "mp4",
            "content_type": "video/mp4",
        },
        "video": f"/v1/jobs/{JOB}/video",
        "poster": f"/v1/jobs/{JOB}/poster",
    }


def test_failures_show_the_code_and_message() -> None:
    assert shown(EVERY_EVENT[6]) == {
        "type": "JobFailed",
        "job_id": JOB,
        "generation": 1,
        "stage": "decode",
        "code": "out_of_memory",
        "message": "the GPU ran out of memory",
    }


def test_frames_know_terminal_and_generation_and_skip_what_they_cannot_read() -> None:
    terminal = frame(1, EVERY_EVENT[-1].model_dump_json().encode())
    assert terminal.terminal and terminal.generation == 1
    progress = frame(2, EVERY_EVENT[1].model_dump_json().encode())
    assert not progress.terminal
    unreadable = frame(3, b'{"type":"JobCompleted","schema_version":2}')
    assert (unreadable.sse, unreadable.terminal, unreadable.event) == (b"", False, None)
    assert unreadable.data == b'{"type":"JobCompleted","schema_version":2}'  # the index decides for itself
