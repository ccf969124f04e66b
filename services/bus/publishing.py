"""Publishing with a Nats-Msg-Id on every message, so a retried publish is deduplicated by JetStream."""

from pydantic import BaseModel

from contracts.failures import FailureCode
from contracts.messages import (
    CancelRequested,
    Command,
    DeadLetter,
    FramesReady,
    ImagePrepared,
    JobFailed,
    JobSubmitted,
    LatentsReady,
    PointsReserved,
    ReplayRequested,
    StageEvent,
    StageFinished,
    StagePreview,
    StageProgress,
    StageStarted,
    Terminal,
)
from contracts.stages import Stage
from contracts.subjects import (
    DLQ_STREAM,
    EVENTS_STREAM,
    WORK_STREAM,
    dlq_subject,
    event_subject,
    msg_id,
    work_subject,
)
from services.bus.ports import Outgoing

__all__ = ["Command", "Route", "StageEvent", "route"]

# Which stage consumes each command: the flow of DESIGN.md.
_CONSUMER: dict[type[BaseModel], Stage] = {
    JobSubmitted: Stage.INGEST,
    ImagePrepared: Stage.BILLING,
    PointsReserved: Stage.LATENT,
    LatentsReady: Stage.DECODE,
    FramesReady: Stage.MUX,
}


def _terminal_kind(message: Terminal) -> str:
    """One id per generation, so a cancel racing a completion ends it once; except billing's voiding of
    a completion it held no reservation for, which must follow that JobCompleted, not be dropped as its twin."""
    if isinstance(message, JobFailed) and message.stage == Stage.BILLING and message.code == FailureCode.NOT_RESERVED:
        return "voided"
    return "terminal"


class Route(BaseModel):
    subject: str
    stream: str
    msg_id: str


def route(message: Outgoing) -> Route:
    """Where a message goes and the id that deduplicates it."""
    if isinstance(message, DeadLetter):
        job = message.job_id or "unknown"
        return Route(
            subject=dlq_subject(message.stage),
            stream=DLQ_STREAM,
            msg_id=f"{job}:dead:{message.stage or '-'}:{message.attempts}:{message.failed_at.timestamp()}",
        )
    if isinstance(message, CancelRequested):
        return Route(
            subject=event_subject(message.job_id, "stage"),
            stream=EVENTS_STREAM,
            msg_id=msg_id(message.job_id, "cancel-requested", message.generation),
        )
    if isinstance(message, ReplayRequested):
        return Route(
            subject=event_subject(message.job_id, "stage"),
            stream=EVENTS_STREAM,
            msg_id=msg_id(message.job_id, f"replay-{message.stage}", message.generation),
        )
    if isinstance(message, StageStarted):
        return Route(
            subject=event_subject(message.job_id, "stage"),
            stream=EVENTS_STREAM,
            msg_id=msg_id(message.job_id, f"{message.stage}-started-{message.attempt}", message.generation),
        )
    if isinstance(message, StageProgress):
        return Route(
            subject=event_subject(message.job_id, "stage"),
            stream=EVENTS_STREAM,
            msg_id=msg_id(
                message.job_id,
                f"{message.stage}-a{message.attempt}-progress-{message.step}of{message.total}",
                message.generation,
            ),
        )
    if isinstance(message, StagePreview):
        return Route(
            subject=event_subject(message.job_id, "stage"),
            stream=EVENTS_STREAM,
            msg_id=msg_id(
                message.job_id, f"{message.stage}-a{message.attempt}-preview-{message.index}", message.generation
            ),
        )
    if isinstance(message, StageFinished):
        return Route(
            subject=event_subject(message.job_id, "stage"),
            stream=EVENTS_STREAM,
            msg_id=msg_id(message.job_id, f"{message.stage}-finished", message.generation),
        )
    spec = message.job
    if isinstance(message, Terminal):
        return Route(
            subject=event_subject(spec.job_id, "terminal"),
            stream=EVENTS_STREAM,
            msg_id=msg_id(spec.job_id, _terminal_kind(message), spec.generation),
        )
    stage = _CONSUMER[type(message)]
    return Route(
        subject=work_subject(stage),
        stream=WORK_STREAM,
        msg_id=msg_id(spec.job_id, f"to-{stage}", spec.generation),
    )
