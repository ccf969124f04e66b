"""Billing's real app on a real nats-server with a SQLite ledger: reserve or reject, then capture or refund."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from faststream import FastStream
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from contracts.keys import artifact_key
from contracts.messages import (
    ImagePrepared,
    JobFailed,
    JobRejected,
    JobSpec,
    PointsReserved,
    StageFinished,
    Terminal,
    is_terminal,
)
from contracts.params import GenerationParams
from contracts.pricing import price_points
from contracts.refs import ObjectRef
from contracts.stages import Stage
from contracts.subjects import EVENTS_STREAM, WORK_STREAM, durable_name, job_events_filter, work_subject
from infra.nats_server import NatsServer
from infra.objectstore import MemoryObjectStore
from services.billing.app import build_app
from services.billing.ledger import SqlLedger, open_ledger
from services.bus.publishing import Command, route
from tests.services.bus_helpers import Tail, consumer_drained, has, settings_for
from tests.services.job_messages import completed

pytestmark = pytest.mark.integration

DURATION, FPS = 2, 8
PRICE = price_points(GenerationParams(duration=DURATION, fps=FPS), 128, 64)


@pytest.fixture
def ledger(tmp_path: Path) -> SqlLedger:
    books = open_ledger(str(tmp_path / "ledger.sqlite3"))
    books.create_account("rich", 3 * PRICE)
    books.create_account("poor", PRICE - 1)
    return books


@pytest.fixture
async def billing(nats_server: NatsServer, ledger: SqlLedger, js: JetStreamContext) -> AsyncIterator[FastStream]:
    app = build_app(settings_for(nats_server), ledger=ledger, store=MemoryObjectStore())
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def image_prepared(job_id: str, account: str) -> ImagePrepared:
    job = JobSpec(job_id=job_id, account=account, params=GenerationParams(duration=DURATION, fps=FPS, seed=3))
    image = ObjectRef(
        bucket="i2v", key=artifact_key(job_id, 0, "image.png"), size=1, sha256="0" * 64, content_type="image/png"
    )
    return ImagePrepared(job=job, image=image, width=128, height=64, source_width=128, source_height=64)


async def publish(js: JetStreamContext, message: Command | Terminal) -> None:
    where = route(message)
    await js.publish(where.subject, message.model_dump_json().encode(), headers={"Nats-Msg-Id": where.msg_id})


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_too_few_points_rejects_the_job_and_sends_nothing_to_latent(
    js: JetStreamContext, ledger: SqlLedger, billing: FastStream
) -> None:
    cmd = image_prepared("job-poor-1", "poor")
    events = await Tail.open(js, job_events_filter(cmd.job.job_id))

    await publish(js, cmd)
    await events.until(has(JobRejected))
    await consumer_drained(js, Stage.BILLING)

    [rejected] = [e for e in events.events() if isinstance(e, JobRejected)]
    assert (rejected.code, rejected.price, rejected.balance) == ("insufficient_points", PRICE, PRICE - 1)
    assert (await js.stream_info(WORK_STREAM)).state.messages == 0  # no PointsReserved waits for latent
    assert ledger.balance("poor") == PRICE - 1
    refused = ledger.reservation(cmd.job.job_id, 0)
    assert refused is not None and refused.state == "rejected"


async def test_reserved_jobs_go_to_latent_then_are_captured_or_refunded(
    js: JetStreamContext, ledger: SqlLedger, billing: FastStream
) -> None:
    done, broken = image_prepared("job-rich-ok", "rich"), image_prepared("job-rich-fails", "rich")
    events = await Tail.open(js, "i2v.events.>")
    latent = await js.pull_subscribe(work_subject(Stage.LATENT), durable=durable_name(Stage.LATENT), stream=WORK_STREAM)

    await publish(js, done)
    await publish(js, broken)
    messages: list[Msg] = []
    while len(messages) < 2:  # a fetch may return part of the batch
        messages += await latent.fetch(2 - len(messages), timeout=10)
    for msg in messages:
        await msg.ack()
    await events.until(has(StageFinished, 2))

    reserved = [PointsReserved.model_validate_json(m.data) for m in messages]
    assert [(r.job.job_id, r.price, r.image) for r in reserved] == [
        ("job-rich-ok", PRICE, done.image),
        ("job-rich-fails", PRICE, broken.image),
    ]
    assert all(
        m.headers is not None and m.headers["Nats-Msg-Id"] == route(r).msg_id
        for m, r in zip(messages, reserved, strict=True)
    )
    assert ledger.balance("rich") == PRICE  # two of three prices held

    await publish(js, completed(done.job, PRICE))
    await publish(js, JobFailed(job=broken.job, stage=Stage.DECODE, code="internal", reason="decode crashed"))

    def state(job: ImagePrepared) -> str | None:
        reservation = ledger.reservation(job.job.job_id, 0)
        return None if reservation is None else reservation.state

    await until(lambda: state(done) == "captured", "the completed job's capture")
    await until(lambda: state(broken) == "refunded", "the failed job's refund")
    assert ledger.balance("rich") == 2 * PRICE
    assert ledger.reconcile() == []


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "shared-ledger.sqlite3")
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn


async def test_fifty_simultaneous_jobs_against_points_for_ten_reserve_exactly_ten(
    js: JetStreamContext, nats_server: NatsServer, ledger_target: str
) -> None:
    """Three billing replicas, each with its own ledger connection like separate processes, race for one
    balance: exactly ten reservations, forty rejections, no negative balance, books that reconcile."""
    books = open_ledger(ledger_target)
    books.create_account("crowd", 10 * PRICE)
    replicas = [
        build_app(settings_for(nats_server), ledger=open_ledger(ledger_target), store=MemoryObjectStore())
        for _ in range(3)
    ]
    events = await Tail.open(js, "i2v.events.*.terminal")
    for app in replicas:
        await app.start()
    try:
        commands = [image_prepared(f"job-crowd-{i:02d}", "crowd") for i in range(50)]
        await asyncio.gather(*(publish(js, cmd) for cmd in commands))
        await events.until(has(JobRejected, 40), timeout=60)
        await consumer_drained(js, Stage.BILLING, timeout=60)
    finally:
        for app in replicas:
            await app.stop()

    latent = await js.pull_subscribe(work_subject(Stage.LATENT), durable=durable_name(Stage.LATENT), stream=WORK_STREAM)
    reserved: list[PointsReserved] = []
    # fetch raises nats' TimeoutError or asyncio's, depending on where the wait ends.
    with contextlib.suppress(TimeoutError):
        while True:
            for msg in await latent.fetch(50, timeout=2):
                reserved.append(PointsReserved.model_validate_json(msg.data))
                await msg.ack()
    rejected = [e for e in events.events() if isinstance(e, JobRejected)]
    assert len(reserved) == 10 and len({r.job.job_id for r in reserved}) == 10
    assert len(rejected) == 40
    assert {r.job.job_id for r in reserved}.isdisjoint({r.job.job_id for r in rejected})
    assert books.balance("crowd") == 0
    assert books.reconcile() == []


async def test_a_refunded_generation_is_not_run_again_by_a_late_redelivery(
    js: JetStreamContext, nats_server: NatsServer, ledger_target: str
) -> None:
    """The command comes back after its refund and after the dedup window: billing forwards nothing and
    ends nothing twice; the replay's generation reserves afresh."""
    books = open_ledger(ledger_target)
    books.create_account("rich", 3 * PRICE)
    app = build_app(settings_for(nats_server), ledger=books, store=MemoryObjectStore())
    cmd = image_prepared("job-refunded", "rich")
    terminals = await Tail.open(js, job_events_filter(cmd.job.job_id))
    latent = await js.pull_subscribe(work_subject(Stage.LATENT), durable=durable_name(Stage.LATENT), stream=WORK_STREAM)
    await app.start()
    # The real window is an hour; what matters is outliving it. (After start: the app declares streams.)
    await _shorten_dedup_window(js, DEDUP_WINDOW_S)
    try:
        await publish(js, cmd)
        [first] = await latent.fetch(1, timeout=10)
        await first.ack()
        await publish(js, JobFailed(job=cmd.job, stage=Stage.LATENT, code="internal", reason="denoise crashed"))
        await until(lambda: _state(books, cmd, 0) == "refunded", "the refund")

        await asyncio.sleep(2 * DEDUP_WINDOW_S)
        await publish(js, cmd)
        await consumer_drained(js, Stage.BILLING)
        with contextlib.suppress(TimeoutError):
            late = await latent.fetch(1, timeout=1)
            raise AssertionError(f"a refunded generation went to latent again: {late[0].data[:200]!r}")
        assert books.balance("rich") == 3 * PRICE

        replay = cmd.model_copy(update={"job": cmd.job.model_copy(update={"generation": 1})})
        await publish(js, replay)
        [again] = await latent.fetch(1, timeout=10)
        await again.ack()
    finally:
        await app.stop()

    assert PointsReserved.model_validate_json(again.data).job.generation == 1
    assert books.balance("rich") == 2 * PRICE
    await terminals.quiet(0.5)
    assert [type(e) for e in terminals.events() if is_terminal(e)] == [JobFailed]  # ended once
    assert books.reconcile() == []


DEDUP_WINDOW_S = 0.5


async def _shorten_dedup_window(js: JetStreamContext, seconds: float) -> None:
    for stream in (WORK_STREAM, EVENTS_STREAM):
        config = (await js.stream_info(stream)).config
        config.duplicate_window = seconds
        await js.update_stream(config)


def _state(books: SqlLedger, cmd: ImagePrepared, generation: int) -> str | None:
    reservation = books.reservation(cmd.job.job_id, generation)
    return None if reservation is None else reservation.state
