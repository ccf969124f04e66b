"""The pydantic contracts that i2v services share: parameters, object references, messages, subjects."""

from contracts.keys import artifact_key
from contracts.messages import (
    CancelRequested,
    DeadLetter,
    Event,
    FramesReady,
    ImagePrepared,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobSpec,
    JobSubmitted,
    LatentsReady,
    PointsReserved,
    ReplayRequested,
    StageFinished,
    StageProgress,
    StageStarted,
    parse_event,
)
from contracts.params import GenerationParams, Resolution
from contracts.pricing import price_points
from contracts.refs import ObjectRef
from contracts.stages import Stage

__all__ = [
    "CancelRequested",
    "DeadLetter",
    "Event",
    "FramesReady",
    "GenerationParams",
    "ImagePrepared",
    "JobCancelled",
    "JobCompleted",
    "JobFailed",
    "JobRejected",
    "JobSpec",
    "JobSubmitted",
    "LatentsReady",
    "ObjectRef",
    "PointsReserved",
    "ReplayRequested",
    "Resolution",
    "Stage",
    "StageFinished",
    "StageProgress",
    "StageStarted",
    "artifact_key",
    "parse_event",
    "price_points",
]
