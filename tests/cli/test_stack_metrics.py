"""`i2v stack up` prints one `metrics <service>: URL` line per process; after a job, every process answers
/healthz and /readyz, and its /metrics holds the stage it ran, the job billing settled and its queues."""

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.stack.embedded import SERVICES, WITH_GATEWAY
from services.stack.state_file import read_stack_file
from tests.stacks import clean_env, run_generate, stack_up

pytestmark = [pytest.mark.slow, pytest.mark.integration]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, (url, answer.text)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_every_process_serves_health_and_metrics_of_a_job(tmp_path: Path) -> None:
    clean = clean_env()
    with stack_up(tmp_path, env=clean) as lines:
        metrics = {
            name: url
            for name, _, url in (
                line.removeprefix("metrics ").partition(": ") for line in lines if line.startswith("metrics ")
            )
        }
        assert sorted(metrics) == sorted(WITH_GATEWAY), lines
        assert all(url.startswith("http://127.0.0.1:") and url.endswith("/metrics") for url in metrics.values())
        assert len({url for url in metrics.values()}) == len(metrics)

        settings = read_stack_file(tmp_path / ".i2v")
        assert settings is not None
        options = ("--steps", "2", "--duration", "1", "--fps", "8", "--resolution", "256x192", "--seed", "5")
        nats, s3 = settings["I2V_NATS_URL"], settings["I2V_S3_ENDPOINT"]
        run_generate(tmp_path / "out.mp4", "--nats", nats, "--s3", s3, *options, env={**clean, **settings})

        for name, url in metrics.items():
            base = url.removesuffix("/metrics")
            for probe in ("/healthz", "/readyz"):
                answer = httpx.get(base + probe, timeout=10)
                assert answer.status_code == 200, (name, probe, answer.text)
        for stage in SERVICES:
            got = scrape(metrics[stage])
            assert sample(got, "i2v_stage_duration_seconds_count", stage=stage) == 1, (stage, got)
            assert sample(got, "i2v_queue_pending", stage=stage, consumer=f"i2v-{stage}") == 0, (stage, got)
        assert (
            sample(scrape(metrics["billing"]), "i2v_queue_pending", stage="billing", consumer="i2v-billing-settle")
            is not None
        )
        # The job ended once, counted by billing once it settled the terminal event (just after generate saw it).
        deadline = time.monotonic() + 60
        while sample(scrape(metrics["billing"]), "i2v_jobs_total", status="completed") != 1:
            assert time.monotonic() < deadline, scrape(metrics["billing"])
            time.sleep(0.2)
        others = [n for n in WITH_GATEWAY if n != "billing"]
        assert not [n for n in others if any(key[0] == "i2v_jobs_total" for key in scrape(metrics[n]))]
        # No process here uses CUDA (or has one), so none reports GPU memory.
        assert not [
            n for n in WITH_GATEWAY if any(k[0] == "i2v_gpu_memory_allocated_bytes" for k in scrape(metrics[n]))
        ]
