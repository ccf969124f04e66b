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

from contracts.failures import FailureCode
from contracts.keys import artifact_key
from contracts.messages import (
    FramesReady,
    ImagePrepared,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobSpec,
    LatentsReady,
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
from services.billing.seal import ReservationSeal
from services.bus.publishing import Command, route
from services.decode.app import build_app as build_decode
from services.latent.app import build_app as build_latent
from services.mux.app import build_app as build_mux
from tests.services.bus_helpers import TEST_BILLING_SECRET, Tail, consumer_drained, has, settings_for
from tests.services.job_messages import completed
from tests.services.sql_backends import SQL_BACKENDS, sql_target

pytestmark = pytest.mark.integration

DURATION, FPS = 2, 8
PRICE = price_points(GenerationParams(duration=DURATION, fps=FPS), 128, 64)
SEAL = ReservationSeal(TEST_BILLING_SECRET.encode())  # what settings_for gives every service


@pytest.fixture
def ledger(tmp_path: Path) -> SqlLedger:
    books = open_ledger(str(tmp_path / "ledger.sqlite3"))
    books.create_account("rich", 3 * PRICE)
    books.create_account("poor", PRICE - 1)
    return books


@pytest.fixture
def store() -> MemoryObjectStore:
    return MemoryObjectStore()


@pytest.fixture
async def billing(
    nats_server: NatsServer, ledger: SqlLedger, store: MemoryObjectStore, js: JetStreamContext
) -> AsyncIterator[FastStream]:
    app = build_app(settings_for(nats_server), ledger=ledger, store=store)
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
    assert all(SEAL.checked(r) is r for r in reserved)  # sealed: latent will take them

    await publish(js, completed(done.job, PRICE))
    await publish(js, JobFailed(job=broken.job, stage=Stage.DECODE, code="internal", reason="decode crashed"))

    def state(job: ImagePrepared) -> str | None:
        reservation = ledger.reservation(job.job.job_id, 0)
        return None if reservation is None else reservation.state

    await until(lambda: state(done) == "captured", "the completed job's capture")
    await until(lambda: state(broken) == "refunded", "the failed job's refund")
    assert ledger.balance("rich") == 2 * PRICE
    assert ledger.reconcile() == []


@pytest.fixture(params=SQL_BACKENDS)
def ledger_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return sql_target(request, tmp_path / "shared-ledger.sqlite3")


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


# --- no reservation, no video -------------------------------------------------------------------


def stored_video(store: MemoryObjectStore, job: JobSpec) -> JobCompleted:
    """The job's video and poster in the store, and the JobCompleted that names them."""
    video = store.put(artifact_key(job.job_id, job.generation, "video.mp4"), b"mp4", "video/mp4")
    poster = store.put(artifact_key(job.job_id, job.generation, "poster.jpg"), b"jpg", "image/jpeg")
    return completed(job, PRICE, video=video, poster=poster)


@pytest.mark.parametrize("before", ["nothing reserved", "refunded"])
async def test_a_completion_billing_holds_no_reservation_for_fails_the_job_and_withdraws_the_video(
    js: JetStreamContext, ledger: SqlLedger, store: MemoryObjectStore, billing: FastStream, before: str
) -> None:
    cmd = image_prepared(f"job-free-{before[:4]}", "rich")
    events = await Tail.open(js, job_events_filter(cmd.job.job_id))
    if before == "refunded":  # reserved, then failed and refunded: the generation is over
        latent = await js.pull_subscribe(
            work_subject(Stage.LATENT), durable=durable_name(Stage.LATENT), stream=WORK_STREAM
        )
        await publish(js, cmd)
        [msg] = await latent.fetch(1, timeout=10)
        await msg.ack()
        await publish(js, JobFailed(job=cmd.job, stage=Stage.LATENT, code="internal", reason="denoise crashed"))
        await until(lambda: _state(ledger, cmd, 0) == "refunded", "the refund")
    other = store.put(artifact_key("job-of-someone-else", 0, "video.mp4"), b"theirs", "video/mp4")
    forged = stored_video(store, cmd.job)
    # Its video in another format too (mux writes video.<format>): withdrawn whatever the event names.
    webm = store.put(artifact_key(cmd.job.job_id, 0, "video.webm"), b"webm", "video/webm")
    # Forged, so under ids of the forger's choosing (a JobCompleted under the generation's own terminal id
    # would be dropped as a duplicate after a refund). It may name another job's objects, too: those are
    # not billing's to delete.
    subject = route(forged).subject
    await js.publish(subject, forged.model_copy(update={"poster": other}).model_dump_json().encode())
    await js.publish(subject, forged.model_dump_json().encode(), headers={"Nats-Msg-Id": "forged-twice"})

    await events.until(has(JobFailed, 2 if before == "refunded" else 1))
    await consumer_drained(js, Stage.BILLING)  # nothing left to settle
    await events.quiet(0.5)

    voided = [e for e in events.events() if isinstance(e, JobFailed) and e.stage == Stage.BILLING]
    assert len(voided) == 1, events.events()  # once, however often the completion came
    assert voided[0].code == FailureCode.NOT_RESERVED and "withdrawn" in voided[0].reason
    history = events.events()
    assert history.index(voided[0]) > min(i for i, e in enumerate(history) if isinstance(e, JobCompleted))
    assert store.head(forged.video.key) is None and store.head(forged.poster.key) is None
    assert store.head(webm.key) is None
    assert store.get(other) == b"theirs"
    assert ledger.balance("rich") == 3 * PRICE  # charged nothing, and no free video either
    reason = "no reservation was made" if before == "nothing reserved" else "its reservation was refunded"
    assert ledger.reconcile() == [f"job {cmd.job.job_id}/0 (account 'rich') completed without a reservation: {reason}"]


async def test_a_paid_completion_is_captured_and_keeps_its_video(
    js: JetStreamContext, ledger: SqlLedger, store: MemoryObjectStore, billing: FastStream
) -> None:
    cmd = image_prepared("job-paid", "rich")
    events = await Tail.open(js, job_events_filter(cmd.job.job_id))
    latent = await js.pull_subscribe(work_subject(Stage.LATENT), durable=durable_name(Stage.LATENT), stream=WORK_STREAM)
    await publish(js, cmd)
    [msg] = await latent.fetch(1, timeout=10)
    await msg.ack()

    done = stored_video(store, cmd.job)
    await publish(js, done)
    await until(lambda: _state(ledger, cmd, 0) == "captured", "the capture")
    await consumer_drained(js, Stage.BILLING)
    await events.quiet(0.3)

    assert [type(e).__name__ for e in events.events() if is_terminal(e)] == ["JobCompleted"]
    assert store.get(done.video) == b"mp4"
    assert ledger.reconcile() == []


def forged_commands(store: MemoryObjectStore) -> list[tuple[Stage, Command]]:
    """For each stage after billing, a command billing did not seal as it stands (one job each)."""
    forged: list[tuple[Stage, Command]] = []
    for stage in (Stage.LATENT, Stage.DECODE, Stage.MUX):
        job = image_prepared(f"job-forged-{stage}", "rich").job
        ref = store.put(artifact_key(job.job_id, 0, "image.png"), b"never read", "image/png")
        honest = SEAL.sign(job, PRICE)
        if stage == Stage.LATENT:  # no seal: straight onto i2v.work.latent
            forged.append((stage, PointsReserved(job=job, image=ref, width=128, height=64, price=PRICE)))
        elif stage == Stage.DECODE:  # billing's seal, a lower price
            latents = LatentsReady(job=job, latents=ref, native_frames=8, width=128, height=64, price=1, seal=honest)
            forged.append((stage, latents))
        else:  # billing's seal, charged to another account
            other = job.model_copy(update={"account": "poor"})
            common = {"frames": ref, "frame_count": 16, "native_frames": 8, "width": 128, "height": 64}
            forged.append((stage, FramesReady(job=other, price=PRICE, seal=honest, **common)))
    return forged


BUILDERS: dict[Stage, Callable[..., FastStream]] = {
    Stage.LATENT: build_latent,
    Stage.DECODE: build_decode,
    Stage.MUX: build_mux,
}


@pytest.mark.slow
async def test_latent_decode_and_mux_fail_a_command_billing_did_not_seal(
    js: JetStreamContext, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Each stage after billing refuses, before any work, a command without billing's seal or whose job or
    price changed since: the job fails ``not_reserved`` and nothing is computed."""
    store = MemoryObjectStore()
    settings = settings_for(nats_server, state_dir=tmp_path)
    for stage, command in forged_commands(store):
        events = await Tail.open(js, job_events_filter(command.job.job_id))
        app = BUILDERS[stage](settings, store=store)
        await app.start()
        try:
            await publish(js, command)
            await events.until(has(JobFailed))
            await consumer_drained(js, stage)
        finally:
            await app.stop()
        [failed] = [e for e in events.events() if isinstance(e, JobFailed)]
        assert (failed.stage, failed.code) == (stage, FailureCode.NOT_RESERVED), failed
    names = store.keys()
    assert not any(name.endswith(("latents.safetensors", "frames.safetensors", "video.mp4")) for name in names)
