"""Stream and subject names, and the Nats-Msg-Id scheme that makes publishes idempotent."""

from contracts.stages import Stage

WORK_STREAM = "I2V_WORK"
"""Work-queue stream: one subject per stage, each message a command for that stage."""
EVENTS_STREAM = "I2V_EVENTS"
"""Limits stream: subject per job; the job's history, replayed by progress followers."""
DLQ_STREAM = "I2V_DLQ"
"""Dead letters: what exhausted its deliveries or could not be read."""

WORK_SUBJECTS = "i2v.work.>"
EVENTS_SUBJECTS = "i2v.events.>"
DLQ_SUBJECTS = "i2v.dlq.>"


def work_subject(stage: Stage) -> str:
    return f"i2v.work.{stage.value}"


def event_subject(job_id: str, kind: str) -> str:
    """``kind`` is ``stage`` for lifecycle/progress events, ``terminal`` for the job's last event."""
    return f"i2v.events.{job_id}.{kind}"


def job_events_filter(job_id: str) -> str:
    return f"i2v.events.{job_id}.>"


TERMINAL_EVENTS_FILTER = "i2v.events.*.terminal"


def dlq_subject(stage: Stage | None) -> str:
    """Dead letters of ``stage``; those of a subject no stage consumes go to ``i2v.dlq.unknown``."""
    return f"i2v.dlq.{stage.value if stage is not None else 'unknown'}"


def durable_name(stage: Stage) -> str:
    """One durable per stage: replicas of a service share it and split the work."""
    return f"i2v-{stage.value}"


def msg_id(job_id: str, what: str, generation: int) -> str:
    """Nats-Msg-Id for a publish; the same (job, what, generation) is deduplicated by JetStream."""
    return f"{job_id}:{what}:g{generation}"


CANCEL_BUCKET = "i2v_cancel"
"""Key-value bucket: job id -> the generation that was cancelled. Stages check it before and during work."""
