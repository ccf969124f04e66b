"""Service replicas: `latent=2` runs latent and latent-2, each its own log, ready file and metrics port,
both pulling from latent's durable consumer (each command to one of them), splitting latent's threads,
and restarted one at a time by the supervisor."""

import asyncio
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.messages import JobCompleted, StageStarted
from contracts.params import GenerationParams, Resolution
from contracts.stages import Stage
from services.jobclient import JobHistory
from services.stack.embedded import SERVICES, EmbeddedStack, parse_replicas
from services.threads import split_among
from tests.stacks import HARBOR, job_client, supervised_stack


def test_replicas_parse_as_service_equals_count() -> None:
    assert parse_replicas("latent=2,decode=3") == {"latent": 2, "decode": 3}
    assert parse_replicas(" mux = 1 ") == {"mux": 1}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("painter=2", "no service 'painter' to replicate (services: ingest, billing, latent"),
        ("gateway=2", "the gateway's processes are counted by --gateways"),
        ("latent=0", "latent needs at least 1 process, got 0"),
        ("latent=-1", "latent needs at least 1 process, got -1"),
        ("latent=two", "'latent=two': N must be a whole number, e.g. latent=2"),
        ("latent=2.5", "'latent=2.5': N must be a whole number"),
        ("latent", "'latent': give SERVICE=N, e.g. latent=2"),
        ("latent=2,", "'': give SERVICE=N"),
        ("=2", "'=2': give SERVICE=N"),
        ("latent=2,latent=3", "latent given twice"),
    ],
)
def test_bad_replicas_are_refused_in_one_line(text: str, error: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_replicas(text)
    assert str(refused.value).startswith(error) and "\n" not in str(refused.value)


def test_a_stack_refuses_replicas_of_a_service_it_does_not_run_before_starting_anything(tmp_path: Path) -> None:
    stack = EmbeddedStack(tmp_path / "state", services=("billing",), replicas={"latent": 2})
    with pytest.raises(ValueError, match=r"^2 replicas of latent asked of a stack that runs no latent$"):
        stack.start()
    assert stack.nats is None and not (tmp_path / "state").exists()


def test_replicas_split_their_service_threads() -> None:
    assert split_among(4, 2) == [2, 2]
    assert split_among(3, 2) == [2, 1]
    assert split_among(1, 1) == [1]
    # A share smaller than the processes: each still has its one thread.
    assert split_among(1, 3) == [1, 1, 1]
    with pytest.raises(ValueError, match="at least 1"):
        split_among(2, 0)


SMALL = Resolution(width=256, height=128)
"""Small frames at 4 fps: decode and mux, which run one job at a time here, take little."""


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.fixture
def two_latents(tmp_path: Path) -> Iterator[EmbeddedStack]:
    """Latent twice, on a 4-thread budget, supervised as `i2v stack up` does."""
    env = {"I2V_THREADS": "4"}
    with supervised_stack(tmp_path / "state", env, services=SERVICES, replicas={"latent": 2}) as stack:
        yield stack


def _run_jobs(
    stack: EmbeddedStack, params: GenerationParams, during: "threading.Thread | None" = None
) -> list[JobHistory]:
    """Submit two jobs at once, run ``during`` meanwhile, and wait for both to end (plus late redeliveries)."""

    async def scenario() -> list[JobHistory]:
        async with job_client(stack) as client:
            image = HARBOR.read_bytes()
            jobs = await asyncio.gather(*(client.submit(image, params, "local") for _ in range(2)))
            if during is not None:
                during.start()
            deadline = time.monotonic() + 120
            for job in jobs:
                while (await client.history(job.job_id)).terminal is None:
                    assert time.monotonic() < deadline, f"job {job.job_id} still running"
                    await asyncio.sleep(0.5)
            if during is not None:
                await asyncio.to_thread(during.join)
            await asyncio.sleep(2)  # a doubled delivery would show itself by now
            return [await client.history(job.job_id) for job in jobs]

    return asyncio.run(scenario())


def _latent_starts(history: JobHistory) -> list[int]:
    """The attempts of the job's latent StageStarted events."""
    return [
        f.event.attempt for f in history.events if isinstance(f.event, StageStarted) and f.event.stage == Stage.LATENT
    ]


def _completions(history: JobHistory) -> int:
    return sum(isinstance(f.event, JobCompleted) for f in history.events)


def _started_by(stack: EmbeddedStack, job_id: str) -> dict[str, list[int]]:
    """Which latent process logged the job's start, with its attempts."""
    found: dict[str, list[int]] = {}
    for name in ("latent", "latent-2"):
        text = stack.log_path(name).read_text(errors="replace")
        attempts = [int(n) for n in re.findall(rf"latent: job {job_id} attempt (\d+) started", text)]
        if attempts:
            found[name] = attempts
    return found


@pytest.mark.slow
@pytest.mark.integration
def test_two_latent_replicas_share_the_work_and_one_killed_is_restarted_alone(two_latents: EmbeddedStack) -> None:
    stack = two_latents
    # Two processes, each its own log, ready file and metrics port, on half of latent's threads.
    pids = {name: stack.pid(name) for name in ("latent", "latent-2")}
    assert len(set(pids.values())) == 2
    assert {stack.metrics_ports["latent"], stack.metrics_ports["latent-2"]} <= set(stack.metrics_ports.values())
    assert stack.metrics_ports["latent"] != stack.metrics_ports["latent-2"]
    assert "latent-2" in stack.metrics_urls and "decode-2" not in stack.metrics_urls
    assert (stack.state_dir / "run" / "latent-2.ready").exists()
    assert stack.settings().threads_latent == 2
    for name, pid in pids.items():
        child = _environ_of(pid)
        assert child["I2V_THREADS_LATENT"] == "1"
        assert child["I2V_LOG_FILE"] == str(stack.log_path(name))
        assert "latent thread budget 1 (torch 1" in stack.log_path(name).read_text()

    # 1. Two jobs at once: each latent command taken once, one by each process; each job completes once.
    first = _run_jobs(stack, GenerationParams(steps=2, duration=1, fps=4, resolution=SMALL, seed=7))
    for history in first:
        assert isinstance(history.terminal, JobCompleted), history.terminal
        assert _completions(history) == 1 and _latent_starts(history) == [1]
    takers = [_started_by(stack, history.job_id) for history in first]
    assert all(len(taker) == 1 and list(taker.values()) == [[1]] for taker in takers), takers
    assert {name for taker in takers for name in taker} == {"latent", "latent-2"}, takers

    # 2. Two more, and latent-2 killed with -9 once both processes are at work: it is restarted on its own,
    #    latent finishes its job undisturbed, and latent-2's command comes back once its ack deadline passes.
    victim: dict[str, str] = {}

    def kill_latent_2_at_work() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            texts = {name: stack.log_path(name).read_text(errors="replace") for name in ("latent", "latent-2")}
            working = {name: re.findall(r"latent: job (\S+) attempt 1 started", text) for name, text in texts.items()}
            fresh = {name: [j for j in jobs if j not in done] for name, jobs in working.items()}
            if all(fresh.values()):
                victim["job"] = fresh["latent-2"][0]
                victim["survivor_job"] = fresh["latent"][0]
                os.kill(pids["latent-2"], signal.SIGKILL)
                return
            time.sleep(0.05)

    done = {history.job_id for history in first}
    second = _run_jobs(
        stack,
        GenerationParams(steps=6, duration=1, fps=4, resolution=SMALL, seed=8),
        threading.Thread(target=kill_latent_2_at_work),
    )
    assert victim, "the two latent processes were never at work together"
    by_job = {history.job_id: history for history in second}
    for history in second:
        assert isinstance(history.terminal, JobCompleted), history.terminal
        assert _completions(history) == 1
    # The survivor's job: started once, finished, never redelivered; latent was never restarted.
    assert _latent_starts(by_job[victim["survivor_job"]]) == [1]
    assert stack.pid("latent") == pids["latent"]
    # The killed one's job: its command delivered again, once, and run to the end.
    assert _latent_starts(by_job[victim["job"]]) == [1, 2]
    # latent-2 is back: a new process with its own log and ready file (its model may still be loading).
    ready = stack.state_dir / "run" / "latent-2.ready"
    deadline = time.monotonic() + 120
    while stack.pid("latent-2") == pids["latent-2"] or not ready.exists():
        assert time.monotonic() < deadline, "latent-2 was not restarted"
        time.sleep(0.2)
    assert stack.log_path("latent-2").read_text().count("latent consuming from") == 2
