"""The streams on a real nats-server: the work stream takes known stages' subjects only, and what an older
configuration let onto another ``i2v.work.*`` subject is dead-lettered, not kept for 7 days."""

import asyncio

import pytest
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StreamConfig
from nats.js.errors import NoStreamResponseError

from contracts.failures import FailureCode
from contracts.messages import DeadLetter
from contracts.stages import Stage
from contracts.subjects import DLQ_STREAM, EVENTS_STREAM, WORK_STREAM, dlq_subject, work_subject
from services.bus.streams import (
    DLQ_MAX_BYTES,
    EVENTS_MAX_BYTES,
    STAGE_SUBJECTS,
    WORK_MAX_BYTES,
    ensure_streams,
    sweep_unknown_work,
)
from tests.services.bus_helpers import Tail, at_least

pytestmark = pytest.mark.integration


async def letters(js: JetStreamContext, count: int) -> list[DeadLetter]:
    tail = await Tail.open(js, dlq_subject(None))
    await tail.until(at_least(count))
    await tail.quiet(0.3)
    return [DeadLetter.model_validate_json(m.data) for m in tail.messages]


async def test_a_publish_to_a_subject_no_stage_consumes_is_refused(js: JetStreamContext) -> None:
    with pytest.raises(NoStreamResponseError):
        await js.publish("i2v.work.upscale", b"{}", timeout=2)

    assert (await js.stream_info(WORK_STREAM)).config.subjects == STAGE_SUBJECTS
    await js.publish(work_subject(Stage.INGEST), b"{}")  # known stages still publish


async def test_messages_left_on_unknown_work_subjects_are_dead_lettered_and_removed(js: JetStreamContext) -> None:
    # A stream as the previous configuration made it: every i2v.work.> subject accepted.
    await js.delete_stream(WORK_STREAM)
    await js.add_stream(StreamConfig(name=WORK_STREAM, subjects=["i2v.work.>"], retention=RetentionPolicy.WORK_QUEUE))
    await js.publish("i2v.work.upscale", b'{"kind": "orphan"}')
    await js.publish(work_subject(Stage.DECODE), b'{"kind": "real work"}')
    await js.publish("i2v.work.ingest.v2", b"\x00\xff not json")

    await ensure_streams(js)

    found = await letters(js, 2)
    assert [(d.stage, d.subject, d.code, d.attempts, d.job_id) for d in found] == [
        (None, "i2v.work.ingest.v2", FailureCode.UNKNOWN_SUBJECT, 0, None),
        (None, "i2v.work.upscale", FailureCode.UNKNOWN_SUBJECT, 0, None),
    ]
    assert found[1].body == '{"kind": "orphan"}' and "no stage consumes i2v.work.upscale" in found[1].error
    assert found[0].body == "\x00\\xff not json"
    info = await js.stream_info(WORK_STREAM, subjects_filter=">")
    assert info.config.subjects == STAGE_SUBJECTS
    assert info.state.subjects == {work_subject(Stage.DECODE): 1}  # the real work stays for its stage


async def test_sweepers_running_at_once_dead_letter_each_message_once(js: JetStreamContext) -> None:
    await js.delete_stream(WORK_STREAM)
    await js.add_stream(StreamConfig(name=WORK_STREAM, subjects=["i2v.work.>"], retention=RetentionPolicy.WORK_QUEUE))
    for index in range(5):
        await js.publish(f"i2v.work.stage{index % 2}", f"{index}".encode())
    await js.update_stream(
        StreamConfig(name=WORK_STREAM, subjects=STAGE_SUBJECTS, retention=RetentionPolicy.WORK_QUEUE)
    )

    await asyncio.gather(*(sweep_unknown_work(js) for _ in range(3)))
    await asyncio.gather(*(ensure_streams(js) for _ in range(2)))

    found = await letters(js, 5)
    assert sorted(d.body for d in found) == ["0", "1", "2", "3", "4"]
    assert (await js.stream_info(DLQ_STREAM)).state.messages == 5
    assert (await js.stream_info(WORK_STREAM)).state.messages == 0


async def test_every_stream_is_bounded_in_bytes_as_well_as_age(js: JetStreamContext) -> None:
    # A stream as an older configuration made it: an age limit only.
    await js.delete_stream(DLQ_STREAM)
    await js.add_stream(StreamConfig(name=DLQ_STREAM, subjects=["i2v.dlq.>"], max_age=90 * 24 * 3600.0))

    await ensure_streams(js)

    limits = {}
    for name in (WORK_STREAM, EVENTS_STREAM, DLQ_STREAM):
        config = (await js.stream_info(name)).config
        limits[name] = (config.max_bytes, config.discard)
    assert limits == {
        WORK_STREAM: (WORK_MAX_BYTES, DiscardPolicy.NEW),  # a full queue refuses new jobs, never drops queued ones
        EVENTS_STREAM: (EVENTS_MAX_BYTES, DiscardPolicy.OLD),
        DLQ_STREAM: (DLQ_MAX_BYTES, DiscardPolicy.OLD),
    }
    assert all(limit is not None and 0 < limit <= 1024**3 for limit, _ in limits.values())
