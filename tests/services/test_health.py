"""The metrics server every process runs (on its own event loop), and how ended jobs are counted."""

import asyncio

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from contracts.failures import FailureCode
from contracts.messages import JobCancelled, JobFailed, JobRejected, JobSpec
from contracts.params import GenerationParams
from contracts.stages import Stage
from infra.ports import LOOPBACK
from services.health import HealthServer
from services.metrics import count_job_end, count_stage_error, observe_stage, set_queue_pending
from tests.services.job_messages import completed


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_health_ready_and_metrics_answer_from_the_loop() -> None:
    why: list[str | None] = ["consumer i2v-ingest missing"]
    refreshed: list[int] = []

    async def not_ready() -> str | None:
        return why[0]

    async def refresh() -> None:
        refreshed.append(1)
        set_queue_pending(Stage.INGEST, "i2v-ingest", 3)

    server = HealthServer(LOOPBACK, 0, not_ready, refresh)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{server.port}") as client:
            assert (await client.get("/healthz")).status_code == 200
            answer = await client.get("/readyz")
            assert (answer.status_code, answer.text) == (503, "not ready: consumer i2v-ingest missing\n")
            why[0] = None
            assert (await client.get("/readyz")).status_code == 200

            observe_stage(Stage.DECODE, 0.3)
            count_stage_error(Stage.DECODE, FailureCode.OBJECT_STORE_UNAVAILABLE)
            answer = await client.get("/metrics")
            assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
            got = samples(answer.text)
            assert refreshed == [1]
            assert got[("i2v_queue_pending", frozenset({("stage", "ingest"), ("consumer", "i2v-ingest")}))] == 3
            assert got[("i2v_stage_duration_seconds_count", frozenset({("stage", "decode")}))] >= 1
            assert (
                got[("i2v_stage_errors_total", frozenset({("stage", "decode"), ("code", "object_store_unavailable")}))]
                >= 1
            )
            assert not [name for name, _ in got if name.endswith("_created")]
            assert (await client.get("/nothing")).status_code == 404
            # Prometheus asking for OpenMetrics gets it.
            openmetrics = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
            assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
            assert openmetrics.text.endswith("# EOF\n")
    finally:
        await server.stop()
    # Stopped means the port is closed.
    try:
        _reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
    except OSError:
        pass
    else:
        writer.close()
        raise AssertionError("the metrics port still accepts after stop()")


async def test_a_taken_port_is_a_one_line_error_naming_it() -> None:
    async def ready() -> str | None:
        return None

    first = HealthServer(LOOPBACK, 0, ready)
    await first.start()
    try:
        second = HealthServer(LOOPBACK, first.port, ready)
        try:
            await second.start()
        except OSError as exc:
            assert f"metrics port {LOOPBACK}:{first.port}" in str(exc)
            assert "\n" not in str(exc)
        else:
            await second.stop()
            raise AssertionError("a second server bound a taken port")
    finally:
        await first.stop()


def _jobs(status: str) -> float:
    value = REGISTRY.get_sample_value("i2v_jobs_total", {"status": status})
    return value or 0.0


def test_each_job_generation_is_counted_once_by_its_final_status() -> None:
    job = JobSpec(job_id="jcounted1", account="alice", params=GenerationParams(seed=1))
    before = {status: _jobs(status) for status in ("completed", "failed", "cancelled", "rejected")}
    done = completed(job, 9)
    count_job_end(done, voided=False)
    count_job_end(JobCancelled(job=job, stage=Stage.LATENT), voided=False)
    count_job_end(JobFailed(job=job, stage=Stage.DECODE, code=FailureCode.NOT_RESERVED, reason="x"), voided=False)
    count_job_end(
        JobRejected(job=job, code=FailureCode.INSUFFICIENT_POINTS, reason="x", price=9, balance=0), voided=False
    )
    # A completion billing voids is a failure, and its voiding JobFailed does not count that generation again.
    count_job_end(done, voided=True)
    count_job_end(JobFailed(job=job, stage=Stage.BILLING, code=FailureCode.NOT_RESERVED, reason="x"), voided=False)
    after = {status: _jobs(status) - before[status] for status in before}
    assert after == {"completed": 1, "failed": 2, "cancelled": 1, "rejected": 1}
