"""What a job looks like from outside: its status and overall progress, folded from its events."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from contracts.messages import (
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
)
from contracts.pricing import price_points
from contracts.refs import ObjectRef
from contracts.stages import PIPELINE_ORDER, Stage

Status = Literal[
    "queued", "preprocessing", "generating", "decoding", "muxing", "succeeded", "failed", "cancelled", "rejected"
]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "rejected"})

# Share of the bar each stage fills; denoising is where the time goes.
STAGE_WEIGHTS: dict[Stage, int] = {
    Stage.INGEST: 5,
    Stage.BILLING: 5,
    Stage.LATENT: 70,
    Stage.DECODE: 15,
    Stage.MUX: 5,
}
_STATUS_OF_STAGE: dict[Stage, Status] = {
    Stage.INGEST: "preprocessing",
    Stage.BILLING: "preprocessing",
    Stage.LATENT: "generating",
    Stage.DECODE: "decoding",
    Stage.MUX: "muxing",
}


@dataclass
class JobView:
    """One job as the API shows it; :meth:`apply` folds the next event of its history in."""

    job_id: str
    account: str
    created_at: datetime
    params: dict[str, Any]
    price: int
    generation: int = 0
    status: Status = "queued"
    stage: Stage | None = None
    step: int = 0
    total: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    error: dict[str, str] | None = None
    cancel_requested: bool = False
    last_sequence: int = 0
    video: ObjectRef | None = None
    poster: ObjectRef | None = None
    output: dict[str, Any] | None = None
    deleted: bool = False

    @classmethod
    def submitted(cls, spec: JobSpec) -> "JobView":
        params = spec.params.model_dump(mode="json")
        return cls(
            job_id=spec.job_id,
            account=spec.account,
            created_at=spec.submitted_at,
            params=params,
            price=price_points(spec.params.duration, spec.params.fps),
            generation=spec.generation,
        )

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def progress(self) -> int:
        """Overall percent, 0-100; 100 only once the video is delivered."""
        if self.status == "succeeded":
            return 100
        done = sum(STAGE_WEIGHTS[Stage(s)] for s in self.timings if s in STAGE_WEIGHTS)
        current = 0.0
        if self.stage is not None and self.stage.value not in self.timings and self.total > 0:
            current = STAGE_WEIGHTS[self.stage] * min(self.step, self.total) / self.total
        return min(99, int(done + current))

    def apply(self, sequence: int, event: Event) -> bool:
        """Fold one event in; False (and no change) for one already folded or of an older generation."""
        if sequence <= self.last_sequence:
            return False
        self.last_sequence = sequence
        generation = event.job.generation if hasattr(event, "job") else getattr(event, "generation", 0)
        if generation < self.generation:
            return False
        if isinstance(event, ReplayRequested):
            self._restart(event.generation, keep_before=event.stage)
            return True
        if generation > self.generation:
            self._restart(generation, keep_before=None)
        if isinstance(event, StageStarted):
            self.stage, self.step, self.total = event.stage, 0, 0
            self.timings.pop(event.stage.value, None)
            if not self.terminal:
                self.status = _STATUS_OF_STAGE[event.stage]
        elif isinstance(event, StageProgress):
            if event.stage == self.stage:
                self.step, self.total = event.step, event.total
        elif isinstance(event, StageFinished):
            self.timings[event.stage.value] = event.seconds
        elif isinstance(event, JobCompleted):
            self.status = "succeeded"
            self.price = event.price
            self.video, self.poster = event.video, event.poster
            self.output = {
                "frame_count": event.frame_count,
                "fps": event.fps,
                "duration_s": event.duration_s,
                "width": event.width,
                "height": event.height,
                "size_bytes": event.video.size,
            }
        elif isinstance(event, JobFailed):
            self.status = "failed"
            self.error = {"code": event.code, "message": event.reason, "stage": event.stage.value}
        elif isinstance(event, JobRejected):
            self.status = "rejected"
            self.price = event.price
            self.error = {"code": event.code, "message": event.reason, "stage": Stage.BILLING.value}
        elif isinstance(event, JobCancelled):
            self.status = "cancelled"
            stage = event.stage.value if event.stage else ""
            self.error = {"code": "cancelled", "message": "the job was cancelled", "stage": stage}
        else:  # CancelRequested
            self.cancel_requested = True
        return True

    def _restart(self, generation: int, keep_before: Stage | None) -> None:
        # A replay reruns from one stage: timings of the stages before it still stand.
        kept = PIPELINE_ORDER[: PIPELINE_ORDER.index(keep_before)] if keep_before else ()
        self.generation = generation
        self.timings = {s: t for s, t in self.timings.items() if s in {k.value for k in kept}}
        self.status, self.stage, self.step, self.total = "queued", None, 0, 0
        self.error, self.cancel_requested = None, False
        self.video = self.poster = None
        self.output = None
