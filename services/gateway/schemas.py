"""Shapes of the API's JSON bodies (they are also what /docs shows)."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from services.gateway.progress import JobView, Status


class JobLinks(BaseModel):
    self: str
    events: str
    cancel: str
    video: str
    poster: str


class JobError(BaseModel):
    code: str
    message: str
    stage: str = ""


class JobOutput(BaseModel):
    frame_count: int
    fps: int
    duration_s: float
    width: int
    height: int
    size_bytes: int


class JobResource(BaseModel):
    id: str
    status: Status
    progress: int = Field(ge=0, le=100, description="overall percent, weighted by how long each stage takes")
    stage: str | None = Field(None, description="the stage running or last run")
    step: int = 0
    total: int = 0
    price: int = Field(description="points; reserved before any GPU work, refunded if the job does not finish")
    seed: int
    parameters: dict[str, Any]
    timings: dict[str, float] = Field(description="seconds per finished stage")
    error: JobError | None = None
    cancel_requested: bool = False
    deleted: bool = False
    output: JobOutput | None = None
    created_at: datetime
    links: JobLinks

    @classmethod
    def of(cls, view: JobView) -> "JobResource":
        base = f"/v1/jobs/{view.job_id}"
        return cls(
            id=view.job_id,
            status=view.status,
            progress=view.progress,
            stage=view.stage.value if view.stage else None,
            step=view.step,
            total=view.total,
            price=view.price,
            seed=int(view.params.get("seed", -1)),
            parameters=view.params,
            timings=view.timings,
            error=JobError(**view.error) if view.error else None,
            cancel_requested=view.cancel_requested,
            deleted=view.deleted,
            output=JobOutput(**view.output) if view.output else None,
            created_at=view.created_at,
            links=JobLinks(
                self=base,
                events=f"{base}/events",
                cancel=f"{base}/cancel",
                video=f"{base}/video",
                poster=f"{base}/poster",
            ),
        )


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
    price: int


class Session(BaseModel):
    account: str
    expires_at: int
    token: str | None = Field(None, description="also usable as ?token= on GET links (events, video, poster)")
