"""Delivery semantics of StageRunner + ServiceKit on a real nats-server: acks, retries, dead letters, dedup,
poison messages and heartbeats. The stage is a probe whose work function each test scripts; no model."""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from faststream import FastStream
from faststream.nats.annotations import NatsMessage
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from contracts.failures import FailureCode
from contracts.keys import upload_key
from contracts.messages import (
    DeadLetter,
    Event,
    ImagePrepared,
    JobFailed,
    JobSpec,
    JobSubmitted,
    StageFinished,
    StageProgress,
    StageStarted,
    parse_event,
)
from contracts.params import GenerationParams
from contracts.refs import ObjectRef
from contracts.stages import Stage
from contracts.subjects import DLQ_STREAM, WORK_STREAM, dlq_subject, durable_name, job_events_filter, work_subject
from infra.nats_server import NatsServer
from services.bus.adapters import NatsDelivery
from services.bus.faults import PermanentError
from services.bus.ports import Progress
from services.bus.publishing import route
from services.bus.service import service_kit
from services.config import Settings
from tests.services.bus_helpers import Tail, at_least, consumer_drained, has, settings_for

pytestmark = pytest.mark.integration

STAGE = Stage.INGEST  # the probe stands in for ingest: JobSubmitted in, ImagePrepared out


async def publish(js: JetStreamContext, command: JobSubmitted) -> bool:
    """Publish as the services do (subject and Nats-Msg-Id from route); True if JetStream dropped it."""
    where = route(command)
    ack = await js.publish(where.subject, command.model_dump_json().encode(), headers={"Nats-Msg-Id": where.msg_id})
    return bool(ack.duplicate)


async def publish_and_settle(js: JetStreamContext, cmd: JobSubmitted, events: Tail, kind: type[Event]) -> ConsumerInfo:
    """Publish ``cmd`` (not a duplicate), wait for its ``kind`` event, then for the stage's durable to drain."""
    assert not await publish(js, cmd)
    await events.until(has(kind))
    return await consumer_drained(js, STAGE)


def spec(job_id: str) -> JobSpec:
    return JobSpec(job_id=job_id, account="alice", params=GenerationParams(duration=2, fps=8, steps=2, seed=1))


def submitted(job_id: str) -> JobSubmitted:
    upload = ObjectRef(bucket="i2v", key=upload_key(job_id), size=1, sha256="0" * 64, content_type="image/png")
    return JobSubmitted(job=spec(job_id), upload=upload)


def prepared(cmd: JobSubmitted) -> ImagePrepared:
    return ImagePrepared(job=cmd.job, image=cmd.upload, width=128, height=64, source_width=128, source_height=64)


# --- the probe stage --------------------------------------------------------------------------------

Behaviour = Callable[[int, Progress], None]
"""What the probe's work does on a given attempt before returning ImagePrepared; raise to fail."""


@dataclass
class Probe:
    """Records each (job, attempt) its work function ran, across every replica."""

    behaviour: Behaviour
    calls: list[tuple[str, int]] = field(default_factory=list)
    prefetch: bool = False

    def app(self, settings: Settings) -> FastStream:
        kit = service_kit("probe", settings)
        runner = kit.runner(STAGE, None, prefetch=self.prefetch)

        @kit.work_subscriber(STAGE, description="a stage whose work the test scripts")
        async def on_job_submitted(cmd: JobSubmitted, msg: NatsMessage) -> None:
            delivery = NatsDelivery(msg)
            attempt = delivery.attempt

            def work(progress: Progress) -> ImagePrepared:
                self.calls.append((cmd.job.job_id, attempt))
                self.behaviour(attempt, progress)
                return prepared(cmd)

            await runner.run(delivery, cmd.job, work)

        return kit.app()


@contextlib.asynccontextmanager
async def running(*apps: FastStream) -> AsyncIterator[None]:
    for app in apps:
        await app.start()
    try:
        yield
    finally:
        for app in apps:
            await app.stop()


def succeed(_attempt: int, progress: Progress) -> None:
    progress(1, 2)
    progress(2, 2)


def transient_until(good_attempt: int) -> Behaviour:
    def behaviour(attempt: int, progress: Progress) -> None:
        if attempt < good_attempt:
            raise TimeoutError(f"flaky on attempt {attempt}")
        succeed(attempt, progress)

    return behaviour


# --- the tests --------------------------------------------------------------------------------------


async def test_success_publishes_lifecycle_events_and_the_next_command_then_acks(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    probe = Probe(succeed)
    cmd = submitted("job-ok-1")
    events = await Tail.open(js, job_events_filter(cmd.job.job_id))

    async with running(probe.app(settings_for(nats_server))):
        await publish_and_settle(js, cmd, events, StageFinished)

    assert probe.calls == [("job-ok-1", 1)]
    kinds = [(type(e).__name__, getattr(e, "step", None)) for e in events.events()]
    assert kinds == [("StageStarted", None), ("StageProgress", 1), ("StageProgress", 2), ("StageFinished", None)]
    started = events.events()[0]
    assert isinstance(started, StageStarted) and (started.stage, started.attempt) == (STAGE, 1)
    for msg, event in zip(events.messages, events.events(), strict=True):
        assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == route(event).msg_id
    # The next command waits on billing's subject with the id that deduplicates a republish.
    nxt = await js.get_last_msg(WORK_STREAM, work_subject(Stage.BILLING))
    assert nxt.data is not None
    assert ImagePrepared.model_validate_json(nxt.data) == prepared(cmd)
    assert nxt.headers is not None and nxt.headers["Nats-Msg-Id"] == route(prepared(cmd)).msg_id


async def test_a_transient_failure_is_retried_until_it_succeeds(js: JetStreamContext, nats_server: NatsServer) -> None:
    probe = Probe(transient_until(3))
    cmd = submitted("job-flaky-1")
    events = await Tail.open(js, job_events_filter(cmd.job.job_id))

    async with running(probe.app(settings_for(nats_server, max_deliver=5))):
        await publish_and_settle(js, cmd, events, StageFinished)

    assert probe.calls == [("job-flaky-1", 1), ("job-flaky-1", 2), ("job-flaky-1", 3)]
    assert [e.attempt for e in events.events() if isinstance(e, StageStarted)] == [1, 2, 3]
    assert {e.attempt for e in events.events() if isinstance(e, StageProgress)} == {3}
    assert not any(isinstance(e, JobFailed) for e in events.events())
    nxt = await js.get_last_msg(WORK_STREAM, work_subject(Stage.BILLING))
    assert nxt.data is not None
    assert ImagePrepared.model_validate_json(nxt.data).job.job_id == "job-flaky-1"


async def test_a_fault_that_never_clears_is_dead_lettered_after_max_deliver(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    probe = Probe(transient_until(99))
    cmd = submitted("job-doomed-1")
    events = await Tail.open(js, job_events_filter(cmd.job.job_id))
    dlq = await Tail.open(js, dlq_subject(STAGE))

    async with running(probe.app(settings_for(nats_server, max_deliver=3))):
        await publish_and_settle(js, cmd, events, JobFailed)
        await dlq.until(at_least(1))
        # Longer than the backoff (0.1 s): a nack instead of a final reject would have redelivered by now.
        await asyncio.sleep(1.0)
        await events.quiet(0.1)
        await dlq.quiet(0.1)

    assert probe.calls == [("job-doomed-1", 1), ("job-doomed-1", 2), ("job-doomed-1", 3)]
    [letter] = [DeadLetter.model_validate_json(m.data) for m in dlq.messages]
    assert (letter.stage, letter.attempts, letter.code, letter.job_id) == (STAGE, 3, "timeout", "job-doomed-1")
    assert "flaky on attempt 3" in letter.error
    assert JobSubmitted.model_validate_json(letter.body) == cmd  # kept whole for replay
    [failed] = [e for e in events.events() if isinstance(e, JobFailed)]
    assert (failed.stage, failed.code, failed.job.job_id) == (STAGE, "timeout", "job-doomed-1")
    assert [e.attempt for e in events.events() if isinstance(e, StageStarted)] == [1, 2, 3]
    assert not any(isinstance(e, StageFinished) for e in events.events())
    assert (await js.stream_info(WORK_STREAM)).state.messages == 0


async def test_a_permanent_failure_fails_the_job_at_once_without_a_dead_letter(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    def refuse(_attempt: int, _progress: Progress) -> None:
        raise PermanentError(FailureCode.UNSUPPORTED_FORMAT, "the upload is a spreadsheet")

    probe = Probe(refuse)
    cmd = submitted("job-bad-1")
    events = await Tail.open(js, job_events_filter(cmd.job.job_id))

    async with running(probe.app(settings_for(nats_server, max_deliver=3))):
        await publish_and_settle(js, cmd, events, JobFailed)
        await asyncio.sleep(0.5)  # five backoffs' worth: room for a wrong retry to show
        await events.quiet(0.1)

    assert probe.calls == [("job-bad-1", 1)]
    [failed] = [e for e in events.events() if isinstance(e, JobFailed)]
    assert (failed.stage, failed.code, failed.reason) == (STAGE, "unsupported_format", "the upload is a spreadsheet")
    assert [e.attempt for e in events.events() if isinstance(e, StageStarted)] == [1]
    assert (await js.stream_info(DLQ_STREAM)).state.messages == 0


async def test_poison_messages_are_dead_lettered_and_the_consumer_keeps_working(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    probe = Probe(succeed)
    good = submitted("job-after-poison")
    wrong_version = submitted("job-v2-1").model_dump(mode="json") | {"schema_version": 2}
    missing_upload = {k: v for k, v in submitted("job-partial-1").model_dump(mode="json").items() if k != "upload"}
    escaping = submitted("job-escape-1").model_dump(mode="json")
    escaping["upload"]["key"] = "jobs/job-escape-1/../../other-job/upload"  # a schema error, never retried

    poison = [
        (b"\x00\xffnot json at all {", "not_json", None),
        (json.dumps(wrong_version).encode(), "schema_violation", "job-v2-1"),
        (json.dumps(missing_upload).encode(), "schema_violation", "job-partial-1"),
        (json.dumps(escaping).encode(), "schema_violation", "job-escape-1"),
    ]
    dlq = await Tail.open(js, dlq_subject(STAGE))
    events = await Tail.open(js, "i2v.events.>")

    async with running(probe.app(settings_for(nats_server))):
        for index, (body, _, _) in enumerate(poison):
            await js.publish(work_subject(STAGE), body, headers={"Nats-Msg-Id": f"poison-{index}"})
        await publish(js, good)
        await events.until(has(StageFinished))
        await dlq.until(at_least(len(poison)))
        await consumer_drained(js, STAGE)
        await events.until(has(JobFailed, 3))
        await asyncio.sleep(0.5)  # five backoffs' worth: room for a wrong retry to show
        info = await consumer_drained(js, STAGE)

    assert probe.calls == [("job-after-poison", 1)]  # no poison reached the work function
    letters = [DeadLetter.model_validate_json(m.data) for m in dlq.messages]
    assert [(d.code, d.job_id, d.stage, d.attempts) for d in letters] == [
        (code, job, STAGE, 1) for _, code, job in poison
    ]
    assert [d.body.encode("utf-8", "backslashreplace") for d in letters[1:]] == [b for b, _, _ in poison[1:]]
    assert "not json" in letters[0].body
    # Where the job could still be read, it is failed too, so nobody waits on it forever.
    failed = sorted(e.job.job_id for e in events.events() if isinstance(e, JobFailed))
    assert failed == ["job-escape-1", "job-partial-1", "job-v2-1"]
    assert "upload.key" in letters[3].error
    # One delivery each, terminated at once: nothing was nacked and redelivered.
    assert info.delivered is not None and info.delivered.consumer_seq == len(poison) + 1
    assert info.num_redelivered == 0


async def test_the_same_command_published_twice_is_processed_once(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    probe = Probe(succeed)
    cmd, sentinel = submitted("job-twice-1"), submitted("job-sentinel-1")
    events = await Tail.open(js, "i2v.events.>")

    assert not await publish(js, cmd)
    assert await publish(js, cmd)  # JetStream reports the repeat as a duplicate and does not store it
    assert not await publish(js, sentinel)
    async with running(probe.app(settings_for(nats_server))):
        # The work stream is FIFO: once the sentinel is done, a stored twin would have run before it.
        await events.until(
            lambda ms: any(
                isinstance(e := parse_event(m.data), StageFinished) and e.job_id == "job-sentinel-1" for m in ms
            )
        )
        await consumer_drained(js, STAGE)

    assert probe.calls == [("job-twice-1", 1), ("job-sentinel-1", 1)]
    assert sum(isinstance(e, StageStarted) and e.job_id == "job-twice-1" for e in events.events()) == 1


async def test_heartbeats_keep_a_long_command_from_being_redelivered(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    def slow(attempt: int, progress: Progress) -> None:
        time.sleep(3.0)  # three times the ack deadline
        succeed(attempt, progress)

    probe = Probe(slow)
    cmd = submitted("job-long-1")
    settings = settings_for(nats_server, ack_wait_s=1.0, heartbeat_s=0.3)
    events = await Tail.open(js, job_events_filter(cmd.job.job_id))

    # A second, idle replica holds a pull request open: without heartbeats it would get the redelivery.
    async with running(probe.app(settings), probe.app(settings)):
        info = await publish_and_settle(js, cmd, events, StageFinished)
        await asyncio.sleep(1.5)  # past one more ack deadline
        await events.quiet(0.1)

    assert probe.calls == [("job-long-1", 1)]
    assert [e.attempt for e in events.events() if isinstance(e, StageStarted)] == [1]
    assert info.delivered is not None and info.delivered.consumer_seq == 1  # one delivery in all, redeliveries included


async def test_prefetching_replicas_hold_two_commands_each_and_none_without_heartbeats(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    def slow(attempt: int, progress: Progress) -> None:
        time.sleep(1.5)  # past the ack deadline: a command held without heartbeats would be redelivered
        succeed(attempt, progress)

    probe = Probe(slow, prefetch=True)
    settings = settings_for(nats_server, ack_wait_s=1.0, heartbeat_s=0.3)
    jobs = [f"job-prefetch-{i}" for i in range(6)]
    events = await Tail.open(js, "i2v.events.>")
    held: list[int] = []

    async def sample() -> None:
        while True:
            held.append((await js.consumer_info(WORK_STREAM, durable_name(STAGE))).num_ack_pending)
            await asyncio.sleep(0.05)

    async with running(probe.app(settings), probe.app(settings)):
        for job in jobs:
            assert not await publish(js, submitted(job))
        sampler = asyncio.create_task(sample())
        finished = lambda msgs: sum(b'"StageFinished"' in m.data for m in msgs) == len(jobs)  # noqa: E731
        await events.until(finished)
        sampler.cancel()
        await consumer_drained(js, STAGE)
        await asyncio.sleep(1.5)  # past one more ack deadline
        await events.quiet(0.1)

    # Each replica works on one command and holds the next (4 in hand at most, FastStream's fetch loop
    # held a third each); every command runs once, on its first delivery.
    assert max(held) == 4, held
    assert sorted(probe.calls) == [(job, 1) for job in jobs]
    assert sorted(e.attempt for e in events.events() if isinstance(e, StageStarted)) == [1] * len(jobs)
