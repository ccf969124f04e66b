"""Events a service follows (billing's settlement), on a real nats-server: an unreadable event is
dead-lettered once and the consumer goes on; a failing one is retried with backoff a bounded number of
times, then dead-lettered. Never a hot loop of redeliveries."""

import asyncio
import itertools
import json
import time
from pathlib import Path

import pytest
from faststream.nats.annotations import NatsMessage
from nats.js import JetStreamContext

from contracts.failures import FailureCode
from contracts.messages import DeadLetter, JobFailed, JobSpec, TerminalEvent
from contracts.params import GenerationParams
from contracts.stages import Stage
from contracts.subjects import EVENTS_STREAM, TERMINAL_EVENTS_FILTER, dlq_subject, event_subject
from infra.nats_server import NatsServer
from infra.objectstore import MemoryObjectStore
from services.billing.app import build_app
from services.billing.ledger import open_ledger
from services.bus.adapters import NatsDelivery
from services.bus.publishing import route
from services.bus.service import service_kit
from tests.services.bus_helpers import Tail, at_least, consumer_settled, settings_for

pytestmark = pytest.mark.integration

SETTLE = "i2v-billing-settle"


def failed(job_id: str) -> JobFailed:
    job = JobSpec(job_id=job_id, account="rich", params=GenerationParams(duration=2, fps=8, seed=1))
    return JobFailed(job=job, stage=Stage.DECODE, code=FailureCode.INTERNAL, reason="decode crashed")


async def publish_event(js: JetStreamContext, subject: str, body: bytes, msg_id: str) -> None:
    await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id})


async def test_unreadable_terminal_events_are_dead_lettered_once_and_billing_settles_the_next(
    js: JetStreamContext, nats_server: NatsServer, tmp_path: Path
) -> None:
    books = open_ledger(str(tmp_path / "ledger.sqlite3"))
    books.create_account("rich", 100)
    books.reserve("job-settled-1", 0, "rich", 12)
    app = build_app(settings_for(nats_server), ledger=books, store=MemoryObjectStore())
    dlq = await Tail.open(js, dlq_subject(Stage.BILLING))
    v2 = failed("job-v2-event").model_dump(mode="json") | {"schema_version": 2}
    good = failed("job-settled-1")

    await app.start()
    try:
        await publish_event(js, event_subject("job-garbage-1", "terminal"), b"\x00\xff not json {", "garbage")
        await publish_event(js, event_subject("job-v2-event", "terminal"), json.dumps(v2).encode(), "v2")
        await publish_event(js, route(good).subject, good.model_dump_json().encode(), route(good).msg_id)
        await dlq.until(at_least(2))
        info = await consumer_settled(js, EVENTS_STREAM, SETTLE)
        await asyncio.sleep(1.0)  # a spinning consumer would have delivered thousands of times by now
        after = await js.consumer_info(EVENTS_STREAM, SETTLE)
        await dlq.quiet(0.1)
    finally:
        await app.stop()

    reservation = books.reservation("job-settled-1", 0)
    assert reservation is not None and reservation.state == "refunded"
    assert books.balance("rich") == 100
    assert info.delivered is not None and after.delivered is not None
    assert after.delivered.consumer_seq == info.delivered.consumer_seq == 3  # each event delivered once
    assert after.num_redelivered == 0
    letters = [DeadLetter.model_validate_json(m.data) for m in dlq.messages]
    assert [(d.stage, d.subject, d.code, d.attempts, d.job_id) for d in letters] == [
        (Stage.BILLING, "i2v.events.job-garbage-1.terminal", FailureCode.NOT_JSON, 1, None),
        (Stage.BILLING, "i2v.events.job-v2-event.terminal", FailureCode.SCHEMA_VIOLATION, 1, None),
    ]
    # Nothing published for the unreadable events' jobs: the job part of an event is not a job to fail.
    terminal = await js.stream_info(EVENTS_STREAM, subjects_filter="i2v.events.>")
    assert terminal.state.subjects == {
        "i2v.events.job-garbage-1.terminal": 1,
        "i2v.events.job-v2-event.terminal": 1,
        "i2v.events.job-settled-1.terminal": 1,
    }


async def test_an_event_that_keeps_failing_is_retried_with_backoff_then_dead_lettered(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    settings = settings_for(nats_server, event_max_deliver=3, retry_backoff_s=(0.3,))
    kit = service_kit("probe", settings)
    runner = kit.runner(Stage.BILLING, None)
    seen: list[tuple[int, float]] = []

    @kit.event_subscriber(TERMINAL_EVENTS_FILTER, stage=Stage.BILLING, durable="probe-settle", description="probe")
    async def on_terminal(event: TerminalEvent, msg: NatsMessage) -> None:
        delivery = NatsDelivery(msg)
        seen.append((delivery.attempt, time.monotonic()))

        def ledger_down() -> None:
            raise ConnectionError("ledger unreachable")

        await runner.handle_event(delivery, ledger_down)

    app = kit.app()
    event = failed("job-unsettled-1")
    dlq = await Tail.open(js, dlq_subject(Stage.BILLING))
    await app.start()
    try:
        await publish_event(js, route(event).subject, event.model_dump_json().encode(), route(event).msg_id)
        await dlq.until(at_least(1))
        await consumer_settled(js, EVENTS_STREAM, "probe-settle")
        await asyncio.sleep(1.0)  # three backoffs' worth: room for a wrong redelivery to show
        info = await js.consumer_info(EVENTS_STREAM, "probe-settle")
        await dlq.quiet(0.1)
    finally:
        await app.stop()

    assert [attempt for attempt, _ in seen] == [1, 2, 3]
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(seen)]
    assert all(gap >= 0.25 for gap in gaps), gaps  # the nack's delay, not an immediate redelivery
    assert info.delivered is not None and info.delivered.consumer_seq == 3
    [letter] = [DeadLetter.model_validate_json(m.data) for m in dlq.messages]
    assert (letter.code, letter.attempts, letter.job_id) == (FailureCode.TIMEOUT, 3, None)
    assert JobFailed.model_validate_json(letter.body) == event
