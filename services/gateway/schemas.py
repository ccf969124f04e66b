"""Shapes of the API's JSON bodies (they are also what /docs shows)."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from contracts.params import GenerationParams
from contracts.stages import Stage
from contracts.webhooks import Webhook
from pipeline.camera import parse_motion_prompt
from services.gateway.auth import LINK_RESOURCE
from services.gateway.eta import Standing
from services.gateway.progress import JobError, JobOutput, JobStatus, JobView


class JobLinks(BaseModel):
    self: str
    events: str
    cancel: str
    video: str
    poster: str

    @classmethod
    def of(cls, job_id: str) -> "JobLinks":
        base = f"/v1/jobs/{job_id}"
        return cls(
            self=base, events=f"{base}/events", cancel=f"{base}/cancel", video=f"{base}/video", poster=f"{base}/poster"
        )


class CameraResource(BaseModel):
    """The motion prompt as the camera reads it (SVD reads no text): the move, and what was not understood."""

    words: list[str] = Field(description='the parsed move in English words, e.g. ["slow", "zoom", "in"]; ["static"]')
    unknown: list[str] = Field(description="words of the motion prompt that were not understood")

    @classmethod
    def of(cls, motion_prompt: str) -> "CameraResource":
        move = parse_motion_prompt(motion_prompt)
        return cls(words=list(move.words), unknown=list(move.unknown))


class JobResource(BaseModel):
    id: str
    status: JobStatus
    generation: int = Field(0, description="0, then one more for each replay; events carry it too")
    progress: int = Field(ge=0, le=100, description="overall percent, weighted by how long each stage takes")
    stage: Stage | None = Field(None, description="the stage running or last run")
    step: int = 0
    total: int = 0
    price: int = Field(description="points; reserved before any GPU work, refunded if the job does not finish")
    seed: int
    parameters: GenerationParams
    camera: CameraResource
    timings: dict[Stage, float] = Field(description="seconds per finished stage")
    queue_position: int | None = Field(
        None, description="commands ahead of this job in the stage it waits for; null while running or ended"
    )
    eta_s: float | None = Field(
        None, description="about how many seconds until the job ends, from measured stage times; null when unknown"
    )
    error: JobError | None = None
    cancel_requested: bool = False
    deleted: bool = False
    output: JobOutput | None = None
    created_at: datetime
    links: JobLinks
    batch_id: str | None = Field(None, description="the batch of `variations` it was submitted in; null alone")
    extends: str | None = Field(
        None,
        description="the job this one extends (`POST /v1/jobs/{id}/extend`): its video is that job's frames, then"
        " this job's new ones; `parameters` are the new segment's, `output` the whole video's; null for a picture's",
    )
    webhook: Webhook | None = Field(
        None,
        description="where the job's events are POSTed (`webhook`, `webhook_events` on submit), signed with the"
        " account's secret (`GET /v1/account/webhook-secret`; never shown here); null without one",
    )

    @classmethod
    def of(cls, view: JobView, standing: Standing | None = None) -> "JobResource":
        standing = standing or Standing()
        return cls(
            id=view.job_id,
            status=view.status,
            generation=view.generation,
            progress=view.progress,
            stage=view.stage,
            step=view.step,
            total=view.total,
            price=view.price,
            seed=view.params.seed,
            parameters=view.params,
            camera=CameraResource.of(view.params.motion_prompt),
            timings=view.timings,
            queue_position=standing.queue_position,
            eta_s=standing.eta_s,
            error=view.error,
            cancel_requested=view.cancel_requested,
            deleted=view.deleted,
            output=view.output,
            created_at=view.created_at,
            links=JobLinks.of(view.job_id),
            batch_id=view.batch_id,
            extends=view.extends,
            webhook=view.webhook,
        )


_BATCH_EXAMPLE: dict[str, JsonValue] = {
    "id": "b0192a6f0c2e1a8b3c4d5",
    "jobs": [],
    "links": {"self": "/v1/batches/b0192a6f0c2e1a8b3c4d5"},
}


class BatchLinks(BaseModel):
    self: str


class BatchResource(BaseModel):
    """The jobs one submission with ``variations`` made: the same picture and parameters, consecutive seeds."""

    model_config = ConfigDict(json_schema_extra={"examples": [_BATCH_EXAMPLE]})

    id: str
    jobs: list[JobResource] = Field(description="in seed order: seed, seed + 1, …")
    links: BatchLinks

    @classmethod
    def of(cls, batch_id: str, views: list[JobView]) -> "BatchResource":
        return cls(
            id=batch_id, jobs=[JobResource.of(v) for v in views], links=BatchLinks(self=f"/v1/batches/{batch_id}")
        )


class SubmittedBatch(BaseModel):
    """The answer to a submission with ``variations`` of 2 or more (1, or none, answers the job itself)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"batch": _BATCH_EXAMPLE}]})

    batch: BatchResource


class JobPage(BaseModel):
    items: list[JobResource]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next (older) page")


class LedgerEntry(BaseModel):
    kind: str
    points: int
    job_id: str | None
    note: str
    created_at: datetime


class Account(BaseModel):
    name: str
    balance: int
    active_jobs: int
    max_active_jobs: int
    entries: list[LedgerEntry]


class Quote(BaseModel):
    duration: int
    fps: int
    frames: int
    steps: int
    width: int = Field(description="the video's width the price is for")
    height: int = Field(description="the video's height the price is for")
    price: int = Field(description="8 + ceil(width · height · frames · steps / 2,457,600) points")


class Session(BaseModel):
    account: str
    expires_at: int
    token: str | None = Field(None, description="a link token: `?token=` on GET and HEAD of its resource only")


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resource: str = Field(
        pattern=LINK_RESOURCE,
        max_length=100,
        description="the path the token opens, e.g. /v1/jobs/{id}/video; a job's own path opens all of the job",
        examples=["/v1/jobs/j0192a6f0c2e1a8b3c4d5/video"],
    )
