"""What an SSE client sees of a job's events: public fields, and the API's own URLs for the results.

Events on the bus carry object references (bucket, key, sha256) and the whole job spec, account
included; those stay inside. Every event the gateway sends over SSE is projected here first. Each
projection names its job and generation, so a client can tell a replay's events from the ones before.
"""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from contracts.failures import FailureCode
from contracts.messages import (
    CancelRequested,
    Event,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobRejected,
    ReplayRequested,
    StageFinished,
    StageProgress,
    StageStarted,
)
from contracts.stages import Stage
from services.gateway.progress import JobOutput, generation_of, job_id_of
from services.gateway.schemas import JobLinks


class PublicEvent(BaseModel):
    """Fields every event shows: which job, which generation of it (0, then one more per replay)."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    generation: int


class PublicStageStarted(PublicEvent):
    type: Literal["StageStarted"] = "StageStarted"
    stage: Stage
    attempt: int


class PublicStageProgress(PublicEvent):
    type: Literal["StageProgress"] = "StageProgress"
    stage: Stage
    step: int
    total: int


class PublicStageFinished(PublicEvent):
    type: Literal["StageFinished"] = "StageFinished"
    stage: Stage
    seconds: float


class PublicCancelRequested(PublicEvent):
    type: Literal["CancelRequested"] = "CancelRequested"
    requested_at: datetime


class PublicReplayRequested(PublicEvent):
    type: Literal["ReplayRequested"] = "ReplayRequested"
    stage: Stage


class PublicJobCompleted(PublicEvent):
    type: Literal["JobCompleted"] = "JobCompleted"
    price: int
    output: JobOutput
    video: str
    poster: str


class PublicJobFailed(PublicEvent):
    type: Literal["JobFailed"] = "JobFailed"
    stage: Stage
    code: FailureCode
    message: str


class PublicJobRejected(PublicEvent):
    type: Literal["JobRejected"] = "JobRejected"
    code: FailureCode
    message: str
    price: int


class PublicJobCancelled(PublicEvent):
    type: Literal["JobCancelled"] = "JobCancelled"
    stage: Stage | None


def public_event(event: Event) -> PublicEvent:
    """The client's view of one event of its job."""
    job_id, generation = job_id_of(event), generation_of(event)
    match event:
        case StageStarted():
            return PublicStageStarted(job_id=job_id, generation=generation, stage=event.stage, attempt=event.attempt)
        case StageProgress():
            return PublicStageProgress(
                job_id=job_id, generation=generation, stage=event.stage, step=event.step, total=event.total
            )
        case StageFinished():
            return PublicStageFinished(job_id=job_id, generation=generation, stage=event.stage, seconds=event.seconds)
        case CancelRequested():
            return PublicCancelRequested(job_id=job_id, generation=generation, requested_at=event.requested_at)
        case ReplayRequested():
            return PublicReplayRequested(job_id=job_id, generation=generation, stage=event.stage)
        case JobCompleted():
            links = JobLinks.of(job_id)
            return PublicJobCompleted(
                job_id=job_id,
                generation=generation,
                price=event.price,
                output=JobOutput.of(event),
                video=links.video,
                poster=links.poster,
            )
        case JobFailed():
            return PublicJobFailed(
                job_id=job_id, generation=generation, stage=event.stage, code=event.code, message=event.reason
            )
        case JobRejected():
            return PublicJobRejected(
                job_id=job_id, generation=generation, code=event.code, message=event.reason, price=event.price
            )
        case JobCancelled():
            return PublicJobCancelled(job_id=job_id, generation=generation, stage=event.stage)
