"""Cancel, replay, dead letters and supervision on a real embedded stack (separate service processes)."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from contracts.messages import (
    JobCancelled,
    JobCompleted,
    JobFailed,
    StageProgress,
    StageStarted,
)
from contracts.params import GenerationParams
from contracts.pricing import price_points
from contracts.stages import Stage
from services.billing.ledger import open_ledger
from services.bus.connection import nats_options
from services.jobclient import Followed
from services.stack.embedded import LOCAL_ACCOUNT, EmbeddedStack
from tests.stacks import job_client, supervised_stack

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = (ROOT / "examples" / "harbor.png").read_bytes()
SHORT = GenerationParams(steps=2, duration=1)
"""What the price of a 1 s, 2-step job depends on; the seed is not priced."""
FAULTY_JOB = "jdeadletter0001"  # decode fails it 5 times: every delivery of its first generation


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    env = {"I2V_RETRY_BACKOFF_S": "[0.2]", "I2V_FAULTS": f"decode:{FAULTY_JOB}:5"}
    with supervised_stack(tmp_path_factory.mktemp("stack"), env) as stack:
        yield stack


def _balance(stack: EmbeddedStack) -> int:
    return open_ledger(stack.settings().resolved_ledger_dsn()).balance(LOCAL_ACCOUNT)


def test_cancel_a_running_job_stops_within_a_step_and_refunds(stack: EmbeddedStack) -> None:
    async def scenario() -> tuple[list[Followed], int]:
        async with job_client(stack) as client:
            job = await client.submit(IMAGE, GenerationParams(steps=50, seed=1), LOCAL_ACCOUNT)
            events: list[Followed] = []
            cancelled_at_step = -1
            async for item in client.follow(job.job_id):
                events.append(item)
                event = item.event
                if isinstance(event, StageProgress) and event.stage == Stage.LATENT and event.step == 3:
                    await client.cancel(job.job_id)
                    cancelled_at_step = event.step
            return events, cancelled_at_step

    before = _balance(stack)
    events, cancelled_at = asyncio.run(scenario())
    final = events[-1].event
    assert isinstance(final, JobCancelled) and final.stage == Stage.LATENT
    steps = [e.event.step for e in events if isinstance(e.event, StageProgress) and e.event.stage == Stage.LATENT]
    # The step in flight when the cancel landed may finish; no step after it does.
    assert cancelled_at == 3 and max(steps) <= 5, steps
    assert not any(isinstance(e.event, StageStarted) and e.event.stage == Stage.DECODE for e in events)
    deadline = time.monotonic() + 20
    while _balance(stack) != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _balance(stack) == before, "the cancelled job's points did not come back"


def test_cancel_a_queued_job_before_it_starts_then_replay_it(stack: EmbeddedStack) -> None:
    async def scenario() -> tuple[list[Followed], list[Followed], int]:
        async with job_client(stack) as client:
            # The first job keeps the single latent worker busy while the second waits in its queue.
            first = await client.submit(IMAGE, GenerationParams(steps=30, seed=2), LOCAL_ACCOUNT)
            second = await client.submit(IMAGE, GenerationParams(steps=2, seed=3, duration=1), LOCAL_ACCOUNT)
            async for item in client.follow(first.job_id):
                if isinstance(item.event, StageProgress) and item.event.stage == Stage.LATENT:
                    break
            await client.cancel(second.job_id)
            second_events = [item async for item in client.follow(second.job_id)]
            first_events = [item async for item in client.follow(first.job_id)]
            assert isinstance(first_events[-1].event, JobCompleted)
            # Replay the cancelled job: the stages before the cancel are not run again.
            replayed = await client.replay(second.job_id)
            assert replayed.generation == 1
            after = [item async for item in client.follow(second.job_id, second_events[-1].sequence)]
            return second_events, after, replayed.generation

    before = _balance(stack)
    second_events, after, generation = asyncio.run(scenario())
    final = second_events[-1].event
    assert isinstance(final, JobCancelled)
    started = {e.event.stage for e in second_events if isinstance(e.event, StageStarted)}
    assert Stage.LATENT not in started, "a cancelled queued job must not start denoising"
    done = after[-1].event
    assert isinstance(done, JobCompleted) and done.job.generation == generation
    restarted = {e.event.stage for e in after if isinstance(e.event, StageStarted)}
    assert Stage.INGEST not in restarted and {Stage.BILLING, Stage.LATENT, Stage.DECODE, Stage.MUX} <= restarted
    # The first job is charged; the second was refunded at g0 and charged at g1 (harbor.png is 256x192 on tiny).
    charged = price_points(GenerationParams(steps=30), 256, 192) + price_points(SHORT, 256, 192)
    deadline = time.monotonic() + 20
    while _balance(stack) != before - charged and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _balance(stack) == before - charged


def test_a_killed_latent_worker_is_restarted_and_the_job_completes(stack: EmbeddedStack) -> None:
    async def scenario() -> list[Followed]:
        async with job_client(stack) as client:
            job = await client.submit(IMAGE, GenerationParams(steps=20, seed=4), LOCAL_ACCOUNT)
            events: list[Followed] = []
            killed = False
            async for item in client.follow(job.job_id):
                events.append(item)
                event = item.event
                if not killed and isinstance(event, StageProgress) and event.stage == Stage.LATENT and event.step == 2:
                    os.kill(stack.pid("latent"), signal.SIGKILL)  # mid-denoise
                    killed = True
            return events

    events = asyncio.run(scenario())
    assert isinstance(events[-1].event, JobCompleted)
    attempts = [e.event.attempt for e in events if isinstance(e.event, StageStarted) and e.event.stage == Stage.LATENT]
    assert attempts == [1, 2], attempts


def test_poison_messages_are_dead_lettered_and_listed(stack: EmbeddedStack) -> None:
    settings = stack.settings()

    async def publish() -> None:
        # Poison as a buggy producer would send it: billing may send commands to decode and mux.
        nc = await nats.connect(settings.nats_url, **nats_options(stack.settings_as("billing")))
        js = nc.jetstream()
        await js.publish("i2v.work.decode", b"\x00 definitely not json", headers={"Nats-Msg-Id": "poison-1"})
        await js.publish("i2v.work.mux", b'{"schema_version": 9}', headers={"Nats-Msg-Id": "poison-2"})
        await nc.close()

    asyncio.run(publish())
    env = {**os.environ, **stack.env()}
    deadline = time.monotonic() + 30
    listing = ""
    while time.monotonic() < deadline:
        listing = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "dlq", "list"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        ).stdout
        if "not_json" in listing and "schema_violation" in listing:
            break
        time.sleep(0.5)
    assert "decode" in listing and "not_json" in listing, listing
    assert "mux" in listing and "schema_violation" in listing, listing
    first_id = listing.split()[0]
    shown = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "dlq", "show", first_id],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert shown.returncode == 0 and '"stage"' in shown.stdout

    # The consumers kept working: a real job still completes after the poison.
    async def job() -> list[Followed]:
        async with job_client(stack) as client:
            spec = await client.submit(IMAGE, GenerationParams(steps=2, seed=5, duration=1), LOCAL_ACCOUNT)
            return [item async for item in client.follow(spec.job_id)]

    assert isinstance(asyncio.run(job())[-1].event, JobCompleted)


def test_a_job_that_exhausts_its_deliveries_is_dead_lettered_then_replayed_from_the_dlq(stack: EmbeddedStack) -> None:
    env = {**os.environ, **stack.env()}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli.main", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )

    async def first_run() -> list[Followed]:
        async with job_client(stack) as client:
            await client.submit(IMAGE, GenerationParams(steps=2, seed=6, duration=1), LOCAL_ACCOUNT, job_id=FAULTY_JOB)
            return [item async for item in client.follow(FAULTY_JOB)]

    before = _balance(stack)
    failed = asyncio.run(first_run())
    final = failed[-1].event
    assert isinstance(final, JobFailed) and final.stage == Stage.DECODE and final.code == "internal", final
    attempts = [e.event.attempt for e in failed if isinstance(e.event, StageStarted) and e.event.stage == Stage.DECODE]
    assert attempts == [1, 2, 3, 4, 5]

    listing = cli("dlq", "list").stdout
    [line] = [row for row in listing.splitlines() if FAULTY_JOB in row]
    assert "decode" in line and "attempts 5" in line and "injected fault" in line
    replayed = cli("dlq", "replay", line.split()[0])
    assert replayed.returncode == 0 and "generation 1" in replayed.stdout, replayed.stderr

    async def second_run() -> list[Followed]:
        async with job_client(stack) as client:
            return [item async for item in client.follow(FAULTY_JOB, failed[-1].sequence)]

    after = asyncio.run(second_run())
    done = after[-1].event
    assert isinstance(done, JobCompleted) and done.job.generation == 1
    restarted = {e.event.stage for e in after if isinstance(e.event, StageStarted)}
    assert restarted == {Stage.BILLING, Stage.DECODE, Stage.MUX}, restarted  # latent's output is reused
    deadline = time.monotonic() + 20
    while _balance(stack) != before - price_points(SHORT, 256, 192) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _balance(stack) == before - price_points(SHORT, 256, 192)  # refunded once, charged once
