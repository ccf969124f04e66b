"""Messages on the bus: commands to stages and events of a job's history. Frozen and versioned."""

import re
from datetime import UTC, datetime
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from contracts.extension import Extension
from contracts.failures import FailureCode
from contracts.params import GenerationParams
from contracts.refs import ObjectRef
from contracts.stages import Stage
from contracts.webhooks import Webhook

SCHEMA_VERSION: Literal[1] = 1


class Contract(BaseModel):
    """Base of every message: frozen, no unknown fields, a schema version readers check."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION


ACCOUNT_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
"""What an account may be called. The ledger refuses other names at creation: every job of an account
carries its name in the JobSpec, so a name this pattern refuses could never submit a job."""


def is_account_name(name: str) -> bool:
    """Whether ``name`` matches :data:`ACCOUNT_NAME_PATTERN` (the whole string; a trailing newline fails)."""
    return re.fullmatch(ACCOUNT_NAME_PATTERN, name) is not None


class JobSpec(Contract):
    """Who asked for what; rides along every message of the job. The seed is always concrete here."""

    job_id: Annotated[str, Field(pattern=r"^[a-z0-9_-]{6,64}$")]
    account: Annotated[str, Field(pattern=ACCOUNT_NAME_PATTERN)]
    params: GenerationParams
    generation: Annotated[int, Field(ge=0, description="bumped by each replay")] = 0
    submitted_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    webhook: Webhook | None = Field(None, description="where the webhooks service POSTs the job's events")
    extends: Extension | None = Field(
        None, description="the finished job this one continues from its last frame (contracts/extension.py)"
    )

    @property
    def segment_frame_count(self) -> int:
        """Frames decode makes: duration x fps, and for an extension one more, the parent's last frame's
        place, so the new segment spans its whole duration after it."""
        return self.params.frame_count + (1 if self.extends is not None else 0)

    @property
    def video_frame_count(self) -> int:
        """Frames the delivered video has: the parent's and the new ones (the shared frame once)."""
        return self.params.frame_count + (self.extends.frame_count if self.extends is not None else 0)


# --- stage commands (ride the work-queue stream) -------------------------------------------------


class JobSubmitted(Contract):
    """A new job: the raw upload is in the object store. Consumed by ingest."""

    type: Literal["JobSubmitted"] = "JobSubmitted"
    job: JobSpec
    upload: ObjectRef


class ImagePrepared(Contract):
    """The upload was decoded, validated and resized to the model resolution. Consumed by billing."""

    type: Literal["ImagePrepared"] = "ImagePrepared"
    job: JobSpec
    image: ObjectRef
    width: int
    height: int
    source_width: int
    source_height: int
    resume: Stage | None = Field(None, description="replay: after reserving, resume at this stage")
    resume_command: ObjectRef | None = Field(None, description="replay: the stored command of that stage")


class PointsReserved(Contract):
    """Billing reserved the job's price. Consumed by latent."""

    type: Literal["PointsReserved"] = "PointsReserved"
    job: JobSpec
    image: ObjectRef
    width: int
    height: int
    price: int
    seal: str = Field("", description="billing's HMAC over the job and price; latent, decode and mux check it")


class LatentsReady(Contract):
    """Denoised latents are stored. Consumed by decode."""

    type: Literal["LatentsReady"] = "LatentsReady"
    job: JobSpec
    latents: ObjectRef
    native_frames: int
    width: int
    height: int
    price: int
    seal: str = Field("", description="billing's HMAC over the job and price; latent, decode and mux check it")


class FramesReady(Contract):
    """Decoded frames, interpolated to exactly duration x fps, are stored. Consumed by mux."""

    type: Literal["FramesReady"] = "FramesReady"
    job: JobSpec
    frames: ObjectRef
    frame_count: int
    native_frames: int
    width: int
    height: int
    price: int
    seal: str = Field("", description="billing's HMAC over the job and price; latent, decode and mux check it")
    camera_words: tuple[str, ...] = Field((), description="the motion prompt's camera move in English words")
    camera_unknown: tuple[str, ...] = Field((), description="words of the motion prompt not understood")


# --- events (ride the events stream; the job's history) ------------------------------------------


class CancelRequested(Contract):
    """Someone asked to stop the job; the stage that sees it ends the job ``cancelled``."""

    type: Literal["CancelRequested"] = "CancelRequested"
    job_id: str
    generation: int
    reason: str = ""
    requested_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class ReplayRequested(Contract):
    """A failed or cancelled job runs again from ``stage`` under a new generation."""

    type: Literal["ReplayRequested"] = "ReplayRequested"
    job_id: str
    generation: int
    stage: Stage


class StageStarted(Contract):
    type: Literal["StageStarted"] = "StageStarted"
    job_id: str
    stage: Stage
    generation: int = 0
    attempt: int = 1


class StageProgress(Contract):
    """Progress inside a stage, e.g. one denoising step of ``total``."""

    type: Literal["StageProgress"] = "StageProgress"
    job_id: str
    stage: Stage
    generation: int = 0
    attempt: int = 1
    step: int
    total: int


class StagePreview(Contract):
    """A small preview of what the stage is making (the latent stage's denoised estimate at ``step``),
    stored as ``preview``; ``index`` counts the previews of this attempt from 0."""

    type: Literal["StagePreview"] = "StagePreview"
    job_id: str
    stage: Stage
    generation: int = 0
    attempt: int = 1
    index: Annotated[int, Field(ge=0)]
    step: int
    total: int
    preview: ObjectRef


class StageFinished(Contract):
    type: Literal["StageFinished"] = "StageFinished"
    job_id: str
    stage: Stage
    generation: int = 0
    seconds: float


class JobCompleted(Contract):
    """Terminal: the video and its poster are stored. Billing captures the reservation."""

    type: Literal["JobCompleted"] = "JobCompleted"
    job: JobSpec
    video: ObjectRef
    poster: ObjectRef
    frame_count: int
    fps: int
    duration_s: float
    width: int
    height: int
    price: int
    camera_words: tuple[str, ...] = Field((), description="the motion prompt's camera move in English words")
    camera_unknown: tuple[str, ...] = Field((), description="words of the motion prompt not understood")
    format: str = Field("mp4", description="the video's format: mp4, webm, gif, webp or av1")
    content_type: str = Field("video/mp4", description="the video's media type")
    frames: ObjectRef | None = Field(None, description="the video's frames, lossless: what an extension continues")


class JobFailed(Contract):
    """Terminal: a stage gave up. Billing refunds what it reserved."""

    type: Literal["JobFailed"] = "JobFailed"
    job: JobSpec
    stage: Stage
    code: FailureCode
    reason: str


class JobRejected(Contract):
    """Terminal: refused before any GPU work (e.g. not enough points)."""

    type: Literal["JobRejected"] = "JobRejected"
    job: JobSpec
    code: FailureCode
    reason: str
    price: int
    balance: int


class JobCancelled(Contract):
    """Terminal: the job was cancelled; billing refunds."""

    type: Literal["JobCancelled"] = "JobCancelled"
    job: JobSpec
    stage: Stage | None = None


Event = Annotated[
    StageStarted
    | StageProgress
    | StagePreview
    | StageFinished
    | CancelRequested
    | ReplayRequested
    | JobCompleted
    | JobFailed
    | JobRejected
    | JobCancelled,
    Field(discriminator="type"),
]
Terminal = JobCompleted | JobFailed | JobRejected | JobCancelled
"""The one event that ends a job generation; exactly one is published per (job, generation)."""
StageEvent = StageStarted | StageProgress | StagePreview | StageFinished | CancelRequested | ReplayRequested
"""A job's lifecycle and progress, short of its terminal event."""
Command = JobSubmitted | ImagePrepared | PointsReserved | LatentsReady | FramesReady
"""What a stage consumes from its work subject."""
TerminalEvent = Annotated[Terminal, Field(discriminator="type")]
TERMINAL_TYPES: frozenset[str] = frozenset(t.model_fields["type"].default for t in get_args(Terminal))


def is_terminal(event: object) -> bool:
    """Whether ``event`` ends its job generation. Only the current generation's terminal ends the job."""
    return isinstance(event, Terminal)


_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: bytes) -> Event:
    """Decode one event from the events stream; raises pydantic's ValidationError on a bad body."""
    return _EVENT_ADAPTER.validate_json(data)


class DeadLetter(Contract):
    """A command that exhausted its deliveries or could not be read, kept for inspection and replay."""

    type: Literal["DeadLetter"] = "DeadLetter"
    stage: Stage | None = Field(description="the stage that gave up on it; None when no stage consumes its subject")
    subject: str
    body: str = Field(description="the original message body, as text (undecodable bytes escaped)")
    code: FailureCode
    error: str
    attempts: int
    job_id: str | None = None
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
