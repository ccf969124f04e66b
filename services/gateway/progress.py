"""What a job looks like from outside: its status and overall progress, folded from its events."""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.failures import FailureCode
from contracts.messages import (
    CancelRequested,
    Event,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobSpec,
    ReplayRequested,
    StageFinished,
    StageProgress,
    StageStarted,
    Terminal,
)
from contracts.params import GenerationParams
from contracts.refs import ObjectRef
from contracts.stages import PIPELINE_ORDER, Stage
from contracts.webhooks import Webhook


class JobStatus(StrEnum):
    """Where a job stands, as the API and the page name it."""

    QUEUED = "queued"
    PREPROCESSING = "preprocessing"
    GENERATING = "generating"
    DECODING = "decoding"
    MUXING = "muxing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.REJECTED}
)
"""The statuses a terminal event (``contracts.messages.is_terminal``) leaves a generation in."""

# Share of the bar each stage fills; denoising is where the time goes.
STAGE_WEIGHTS: dict[Stage, int] = {
    Stage.INGEST: 5,
    Stage.BILLING: 5,
    Stage.LATENT: 70,
    Stage.DECODE: 15,
    Stage.MUX: 5,
}
_STATUS_OF_STAGE: dict[Stage, JobStatus] = {
    Stage.INGEST: JobStatus.PREPROCESSING,
    Stage.BILLING: JobStatus.PREPROCESSING,
    Stage.LATENT: JobStatus.GENERATING,
    Stage.DECODE: JobStatus.DECODING,
    Stage.MUX: JobStatus.MUXING,
}

CANCELLED: Literal["cancelled"] = "cancelled"


class JobError(BaseModel):
    """Why the job's current generation ended without a video."""

    model_config = ConfigDict(frozen=True)

    code: FailureCode | Literal["cancelled"]
    message: str
    stage: Stage | None = None

    @field_validator("stage", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return value or None  # index rows written before stages were typed say "" for "none"


class JobOutput(BaseModel):
    """The delivered video, as the client sees it."""

    model_config = ConfigDict(frozen=True)

    frame_count: int
    fps: int
    duration_s: float
    width: int
    height: int
    size_bytes: int
    format: str = Field("mp4", description="mp4, webm, gif, webp or av1")
    content_type: str = Field("video/mp4", description="the media type the video is served with")

    @classmethod
    def of(cls, event: JobCompleted) -> "JobOutput":
        """The event's measures of the video, under the same names, and the video's size."""
        measures = event.model_dump(include=set(cls.model_fields) - {"size_bytes"})
        return cls(size_bytes=event.video.size, **measures)


def spec_of(event: Event) -> JobSpec | None:
    """The job's spec, which terminal events carry (so a job submitted elsewhere can be indexed)."""
    return event.job if isinstance(event, Terminal) else None


def job_id_of(event: Event) -> str:
    return event.job.job_id if isinstance(event, Terminal) else event.job_id


def generation_of(event: Event) -> int:
    """The job generation an event belongs to."""
    return event.job.generation if isinstance(event, Terminal) else event.generation


@dataclass
class JobView:
    """One job as the API shows it; :meth:`apply` folds the next event of its history in."""

    job_id: str
    account: str
    created_at: datetime
    params: GenerationParams
    price: int
    generation: int = 0
    status: JobStatus = JobStatus.QUEUED
    stage: Stage | None = None
    step: int = 0
    total: int = 0
    timings: dict[Stage, float] = field(default_factory=dict)
    error: JobError | None = None
    cancel_requested: bool = False
    last_sequence: int = 0
    video: ObjectRef | None = None
    poster: ObjectRef | None = None
    output: JobOutput | None = None
    deleted: bool = False
    batch_id: str | None = None
    """The batch of ``variations`` it was submitted in (see :mod:`services.gateway.submission`); None alone."""
    frames: ObjectRef | None = None
    """The delivered video's frames, lossless (``JobCompleted.frames``): what an extension continues from."""
    extends: str | None = None
    """The job this one extends (contracts/extension.py); None for a job made from a picture."""
    webhook: Webhook | None = None
    """Where the job's events are POSTed (its URL and events; the signing secret is the account's, never here)."""

    @classmethod
    def submitted(cls, spec: JobSpec, price: int = 0) -> "JobView":
        """A queued job at its quoted ``price``; 0 for a job submitted elsewhere (the CLI) until its
        JobCompleted or JobRejected brings the price, and a failed or cancelled one was refunded."""
        return cls(
            job_id=spec.job_id,
            account=spec.account,
            created_at=spec.submitted_at,
            params=spec.params,
            price=price,
            generation=spec.generation,
            extends=spec.extends.job_id if spec.extends is not None else None,
            webhook=spec.webhook,
        )

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def stopped_at(self) -> Stage:
        """The stage a replay starts from by default: where the current generation ended."""
        if self.error is not None and self.error.stage is not None:
            return self.error.stage
        return Stage.INGEST

    @property
    def progress(self) -> int:
        """Overall percent, 0-100; 100 only once the video is delivered."""
        if self.status == JobStatus.SUCCEEDED:
            return 100
        done = sum(STAGE_WEIGHTS[s] for s in self.timings)
        current = 0.0
        if self.stage is not None and self.stage not in self.timings and self.total > 0:
            current = STAGE_WEIGHTS[self.stage] * min(self.step, self.total) / self.total
        return min(99, int(done + current))

    def apply(self, sequence: int, event: Event) -> bool:
        """Fold one event in; False (and no change) for one already folded or of an older generation."""
        if sequence <= self.last_sequence:
            return False
        self.last_sequence = sequence
        generation = generation_of(event)
        if generation < self.generation:
            return False
        if isinstance(event, ReplayRequested):
            self.replayed(event.generation, event.stage)
            return True
        if generation > self.generation:
            self._restart(generation, keep_before=None)
        match event:
            case StageStarted():
                self.stage, self.step, self.total = event.stage, 0, 0
                self.timings.pop(event.stage, None)
                if not self.terminal:
                    self.status = _STATUS_OF_STAGE[event.stage]
            case StageProgress():
                if event.stage == self.stage:
                    self.step, self.total = event.step, event.total
            case StageFinished():
                self.timings[event.stage] = event.seconds
            case JobCompleted():
                self.status = JobStatus.SUCCEEDED
                self.price = event.price
                self.video, self.poster = event.video, event.poster
                self.output = JobOutput.of(event)
                self.frames = event.frames
            case JobFailed():
                self.status = JobStatus.FAILED
                self.error = JobError(code=event.code, message=event.reason, stage=event.stage)
            case JobRejected():
                self.status = JobStatus.REJECTED
                self.price = event.price
                self.error = JobError(code=event.code, message=event.reason, stage=Stage.BILLING)
            case JobCancelled():
                self.status = JobStatus.CANCELLED
                self.error = JobError(code=CANCELLED, message="the job was cancelled", stage=event.stage)
            case CancelRequested():
                self.cancel_requested = True
        return True

    def replayed(self, generation: int, stage: Stage) -> None:
        """The job runs again from ``stage`` under ``generation``: the stages before it still stand."""
        self._restart(generation, keep_before=stage)

    def _restart(self, generation: int, keep_before: Stage | None) -> None:
        kept = set(PIPELINE_ORDER[: PIPELINE_ORDER.index(keep_before)]) if keep_before else set()
        self.generation = generation
        self.timings = {s: t for s, t in self.timings.items() if s in kept}
        self.status, self.stage, self.step, self.total = JobStatus.QUEUED, None, 0, 0
        self.error, self.cancel_requested = None, False
        self.video = self.poster = self.frames = None
        self.output = None
