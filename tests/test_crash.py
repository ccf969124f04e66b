"""Crash tests with real processes: kill -9 services at random points and at chosen failpoints, restart
nats-server mid-batch, make the object store unreachable for 10 s. Nothing is lost, nothing is doubled."""

import asyncio
import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from contracts.messages import JobCompleted
from contracts.params import GenerationParams
from contracts.pricing import price_points
from infra.objectstore import minio_client
from services.billing.ledger import open_ledger
from services.jobclient import JobHistory
from services.stack.embedded import EmbeddedStack
from tests.stacks import job_client, supervised_stack

pytestmark = [pytest.mark.slow, pytest.mark.integration]

IMAGE = (Path(__file__).resolve().parents[1] / "examples" / "harbor.png").read_bytes()


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], EmbeddedStack]]:
    with contextlib.ExitStack() as running:

        def make(env: dict[str, str]) -> EmbeddedStack:
            return running.enter_context(supervised_stack(tmp_path / "stack", env))

        yield make


def _run_batch(
    stack: EmbeddedStack, jobs: list[tuple[str, GenerationParams]], during: Callable[[], None], timeout: float = 300
) -> list[JobHistory]:
    """Submit every job, run ``during`` in a thread, then poll each job's history until it ends."""

    async def scenario() -> list[JobHistory]:
        async with job_client(stack) as client:
            specs = [await client.submit(IMAGE, params, account) for account, params in jobs]
            chaos = threading.Thread(target=during, daemon=True)
            chaos.start()
            deadline = time.monotonic() + timeout
            histories: dict[str, JobHistory] = {}
            while len(histories) < len(specs):
                assert time.monotonic() < deadline, (
                    f"jobs still running: {set(s.job_id for s in specs) - set(histories)}"
                )
                for spec in specs:
                    if spec.job_id in histories:
                        continue
                    try:
                        history = await client.history(spec.job_id)
                    except Exception:  # NATS may be restarting; the client reconnects
                        await asyncio.sleep(0.5)
                        continue
                    if history.terminal is not None:
                        histories[spec.job_id] = history
                await asyncio.sleep(0.5)
            await asyncio.to_thread(chaos.join)
            # Let late redeliveries (if any) show themselves before counting.
            await asyncio.sleep(3)
            return [await client.history(spec.job_id) for spec in specs]

    return asyncio.run(scenario())


def _assert_exactly_once(stack: EmbeddedStack, histories: list[JobHistory], start_balances: dict[str, int]) -> None:
    settings = stack.settings()
    ledger = open_ledger(settings.resolved_ledger_dsn())
    client = minio_client(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key)
    charged: dict[str, int] = {}
    for history in histories:
        terminals = [f.event for f in history.events if f.event.type in {"JobCompleted", "JobFailed", "JobCancelled"}]
        assert len(terminals) == 1, (history.job_id, [t.type for t in terminals])
        done = terminals[0]
        assert isinstance(done, JobCompleted), done
        videos = [
            o.object_name
            for o in client.list_objects(settings.s3_bucket, prefix=f"jobs/{history.job_id}/", recursive=True)
            if (o.object_name or "").endswith("video.mp4")
        ]
        assert videos == [f"jobs/{history.job_id}/g0/video.mp4"], videos
        reservation = ledger.reservation(history.job_id, 0)
        assert reservation is not None and reservation.state == "captured", reservation
        params = done.job.params
        assert reservation.points == price_points(params, done.width, done.height)
        charged[done.job.account] = charged.get(done.job.account, 0) + reservation.points
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(ledger.balance(a) == start_balances[a] - charged.get(a, 0) for a in start_balances):
            break
        time.sleep(0.3)
    for account, start in start_balances.items():
        assert ledger.balance(account) == start - charged.get(account, 0), account
    assert ledger.reconcile() == []


def test_random_kills_and_failpoints_lose_nothing_and_charge_once(
    make_stack: Callable[[dict[str, str]], EmbeddedStack],
) -> None:
    failpoints = "billing.after_reserve,latent.mid_denoise,ingest.before_ack,decode.before_ack,mux.before_ack"
    stack = make_stack({"I2V_FAILPOINTS": failpoints})
    ledger = open_ledger(stack.settings().resolved_ledger_dsn())
    ledger.ensure_account("alice", 500)
    start = {"local": ledger.balance("local"), "alice": ledger.balance("alice")}
    jobs = [
        ("local" if i % 2 == 0 else "alice", GenerationParams(steps=4, seed=100 + i, duration=1 + i % 2, fps=8))
        for i in range(4)
    ]
    rng = random.Random(7)

    def chaos() -> None:
        for _ in range(3):
            time.sleep(rng.uniform(2.0, 4.0))
            name = rng.choice(stack.services)
            # Already down when a failpoint fired: the supervisor brings it back either way.
            with contextlib.suppress(ProcessLookupError):
                os.kill(stack.pid(name), signal.SIGKILL)

    histories = _run_batch(stack, jobs, chaos)
    _assert_exactly_once(stack, histories, start)
    fired = sorted(p.name for p in (stack.state_dir / "failpoints").iterdir())
    assert "billing.after_reserve" in fired and "latent.mid_denoise" in fired, fired


def test_nats_server_restart_mid_batch_loses_nothing(make_stack: Callable[[dict[str, str]], EmbeddedStack]) -> None:
    stack = make_stack({})
    ledger = open_ledger(stack.settings().resolved_ledger_dsn())
    start = {"local": ledger.balance("local")}
    jobs = [("local", GenerationParams(steps=6, seed=200 + i, duration=1)) for i in range(3)]

    def restart_nats() -> None:
        time.sleep(3.0)
        assert stack.nats is not None
        stack.nats.restart()

    histories = _run_batch(stack, jobs, restart_nats)
    _assert_exactly_once(stack, histories, start)


def test_object_store_unreachable_for_ten_seconds(make_stack: Callable[[dict[str, str]], EmbeddedStack]) -> None:
    stack = make_stack({})
    ledger = open_ledger(stack.settings().resolved_ledger_dsn())
    start = {"local": ledger.balance("local")}
    jobs = [("local", GenerationParams(steps=6, seed=300 + i, duration=1)) for i in range(2)]

    def outage() -> None:
        time.sleep(1.5)
        assert stack.s3 is not None
        # Killed, not stopped: a graceful stop with writes in flight can itself take up to its 10 s
        # timeout, which made the outage twice as long as this test means (and than the retry budget).
        stack.s3.kill()
        time.sleep(10.0)
        stack.s3.start()

    histories = _run_batch(stack, jobs, outage)
    _assert_exactly_once(stack, histories, start)
