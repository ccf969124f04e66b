"""A service app's wiring on FastStream's in-memory broker (TestNatsBroker): which handler a subject
reaches, what it publishes where, how an unreadable message ends. Billing, with a SQLite ledger and the
in-memory store; delivery, redelivery and dedup are tested on a real nats-server elsewhere."""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faststream import FastStream
from faststream.nats import JStream, NatsBroker, TestNatsBroker

from contracts.failures import FailureCode
from contracts.keys import artifact_key, command_key
from contracts.messages import (
    DeadLetter,
    Event,
    ImagePrepared,
    JobSpec,
    PointsReserved,
    StageStarted,
)
from contracts.params import GenerationParams
from contracts.pricing import price_points
from contracts.refs import ObjectRef
from contracts.stages import Stage
from contracts.subjects import (
    DLQ_STREAM,
    EVENTS_STREAM,
    WORK_STREAM,
    dlq_subject,
    event_subject,
    work_subject,
)
from infra.objectstore import MemoryObjectStore
from services.billing.app import build_app
from services.billing.ledger import SqlLedger, open_ledger
from services.bus.publishing import route
from services.config import Settings
from tests.services.job_messages import completed

PRICE = price_points(GenerationParams(duration=2, fps=8), 128, 64)
STAGE_EVENTS = "i2v.events.*.stage"


@dataclass
class Outbox:
    """What the app published: work for latent, lifecycle events, billing's dead letters."""

    latent: list[PointsReserved] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


@dataclass
class Billing:
    app: FastStream
    broker: NatsBroker
    ledger: SqlLedger
    store: MemoryObjectStore
    outbox: Outbox


@pytest.fixture
async def billing(tmp_path: Path) -> AsyncIterator[Billing]:
    ledger = open_ledger(str(tmp_path / "ledger.sqlite3"))
    ledger.create_account("rich", 3 * PRICE)
    store = MemoryObjectStore()
    # Nothing listens there: the in-memory broker never connects, and building the app connects nothing.
    settings = Settings(
        nats_url="nats://127.0.0.1:9", s3_endpoint="http://127.0.0.1:9", billing_secret="the wiring test secret"
    )
    app = build_app(settings, ledger=ledger, store=store)
    outbox = Outbox()
    broker = app.broker
    assert isinstance(broker, NatsBroker)

    @broker.subscriber(work_subject(Stage.LATENT), stream=JStream(WORK_STREAM, declare=False))
    async def latent(cmd: PointsReserved) -> None:
        outbox.latent.append(cmd)

    @broker.subscriber(STAGE_EVENTS, stream=JStream(EVENTS_STREAM, declare=False))
    async def events(event: Event) -> None:
        outbox.events.append(event)

    @broker.subscriber(dlq_subject(Stage.BILLING), stream=JStream(DLQ_STREAM, declare=False))
    async def dead(letter: DeadLetter) -> None:
        outbox.dead.append(letter)

    async with TestNatsBroker(broker) as test_broker:
        yield Billing(app, test_broker, ledger, store, outbox)


def prepared(job_id: str) -> ImagePrepared:
    job = JobSpec(job_id=job_id, account="rich", params=GenerationParams(duration=2, fps=8, seed=1))
    image = ObjectRef(
        bucket="i2v", key=artifact_key(job_id, 0, "image.png"), size=1, sha256="0" * 64, content_type="image/png"
    )
    return ImagePrepared(job=job, image=image, width=128, height=64, source_width=128, source_height=64)


async def test_image_prepared_reaches_billing_which_reserves_and_forwards_to_latent(billing: Billing) -> None:
    cmd = prepared("job-wired-1")
    where = route(cmd)

    await billing.broker.publish(cmd, where.subject, stream=where.stream, headers={"Nats-Msg-Id": where.msg_id})

    [reserved] = billing.outbox.latent
    assert (reserved.job, reserved.price, reserved.image) == (cmd.job, PRICE, cmd.image)
    started = [e for e in billing.outbox.events if isinstance(e, StageStarted)]
    assert [(e.job_id, e.stage, e.attempt) for e in started] == [("job-wired-1", Stage.BILLING, 1)]
    assert billing.ledger.balance("rich") == 2 * PRICE
    kept = billing.store.head(command_key("job-wired-1", Stage.BILLING))
    assert kept is not None and ImagePrepared.model_validate_json(billing.store.get(kept)) == cmd


async def test_a_terminal_event_reaches_the_settlement_which_captures(billing: Billing) -> None:
    cmd = prepared("job-wired-2")
    await billing.broker.publish(cmd, route(cmd).subject, stream=WORK_STREAM)
    done = completed(cmd.job, PRICE)

    await billing.broker.publish(done, route(done).subject, stream=EVENTS_STREAM)

    reservation = billing.ledger.reservation("job-wired-2", 0)
    assert reservation is not None and reservation.state == "captured"
    assert not billing.outbox.dead


async def test_an_unreadable_terminal_event_is_dead_lettered_under_billing(billing: Billing) -> None:
    subject = event_subject("job-wired-3", "terminal")

    await billing.broker.publish(b"\x00 not an event", subject, stream=EVENTS_STREAM)

    [letter] = billing.outbox.dead
    assert (letter.stage, letter.subject, letter.code, letter.job_id) == (
        Stage.BILLING,
        subject,
        FailureCode.NOT_JSON,
        None,
    )
