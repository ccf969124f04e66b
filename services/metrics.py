"""What every process measures, as Prometheus metrics in the process's default registry.

Each process counts only what it does itself, so Prometheus may sum a metric over processes:

- ``i2v_stage_duration_seconds{stage}``: the work of each command a stage finished (the figure of its
  ``StageFinished``), observed by the :class:`~services.bus.runner.StageRunner`.
- ``i2v_stage_errors_total{stage,code}``: every failed attempt (retried or not) and every unreadable
  message, by failure code.
- ``i2v_jobs_total{status}``: job generations ended, counted by billing when it settles the terminal event
  (billing's durable consumer sees each terminal event of the stream once, whichever process published it).
- ``i2v_queue_pending{stage,consumer}``: a durable consumer's ``num_pending + num_ack_pending``, read from
  JetStream when scraped. Replicas share a consumer and each reports it: take the max, not the sum.
- ``i2v_gpu_memory_allocated_bytes{device}``: ``torch.cuda.memory_allocated``, only in a process that uses CUDA.
"""

import contextlib
import sys
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from contracts.failures import FailureCode
from contracts.messages import JobCancelled, JobCompleted, JobFailed, JobRejected
from contracts.stages import Stage

# A counter's *_created sample is one more series per label set that no dashboard here reads.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus-client 0.26

STAGE_DURATION = Histogram(
    "i2v_stage_duration_seconds",
    "Seconds a stage worked on one command it finished",
    ["stage"],
    # From a billing reservation (milliseconds) to a long denoise on a slow GPU (tens of minutes).
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
STAGE_ERRORS = Counter(
    "i2v_stage_errors", "Failed attempts and unreadable messages, by failure code", ["stage", "code"]
)
JOBS = Counter("i2v_jobs", "Job generations ended, by final status (counted by billing)", ["status"])
QUEUE_PENDING = Gauge(
    "i2v_queue_pending",
    "Messages waiting for or held by a durable consumer (pending + ack pending)",
    ["stage", "consumer"],
)


def observe_stage(stage: Stage, seconds: float) -> None:
    STAGE_DURATION.labels(stage=stage.value).observe(seconds)


def count_stage_error(stage: Stage | None, code: FailureCode) -> None:
    """``stage`` None: an unreadable message on a subject no stage of this process consumes."""
    STAGE_ERRORS.labels(stage=stage.value if stage is not None else "none", code=code.value).inc()


def count_job_end(event: JobCompleted | JobFailed | JobCancelled | JobRejected, *, voided: bool) -> None:
    """Count a settled terminal event once per job generation.

    A completion billing voided (no reservation) counts as failed, and billing's own voiding ``JobFailed``
    that follows it is not counted again: the generation has already been counted.
    """
    if isinstance(event, JobFailed) and event.stage == Stage.BILLING and event.code == FailureCode.NOT_RESERVED:
        return
    if isinstance(event, JobCompleted):
        status = "failed" if voided else "completed"
    elif isinstance(event, JobFailed):
        status = "failed"
    elif isinstance(event, JobCancelled):
        status = "cancelled"
    else:
        status = "rejected"
    JOBS.labels(status=status).inc()


def set_queue_pending(stage: Stage, consumer: str, pending: int | None) -> None:
    """``pending`` None: the consumer could not be read; its series goes rather than show a stale value."""
    if pending is None:
        with contextlib.suppress(KeyError):  # never set
            QUEUE_PENDING.remove(stage.value, consumer)
        return
    QUEUE_PENDING.labels(stage=stage.value, consumer=consumer).set(pending)


class _GpuMemory(Collector):
    """GPU memory in use, read at scrape time; nothing in a process that has not loaded torch and used CUDA
    (importing torch or starting CUDA only to report zero would cost far more than the metric is worth)."""

    def collect(self) -> Iterator[Metric]:
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return
        family = GaugeMetricFamily(
            "i2v_gpu_memory_allocated_bytes", "GPU memory held by this process's tensors", labels=["device"]
        )
        for index in range(torch.cuda.device_count()):
            family.add_metric([str(index)], float(torch.cuda.memory_allocated(index)))
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())


REGISTRY.register(_GpuMemory())
