"""StageRunner's decisions against recording fakes of its ports, in milliseconds: ack, nack with backoff,
dead letter, cancel, keep the command. Real delivery is in tests/services/test_runner_delivery.py."""

import json
import time

import pytest
from pydantic import ValidationError

from contracts.failures import FailureCode
from contracts.keys import command_key, upload_key
from contracts.messages import (
    DeadLetter,
    ImagePrepared,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobSpec,
    JobSubmitted,
    StageStarted,
)
from contracts.params import GenerationParams
from contracts.refs import ObjectRef
from contracts.stages import Stage
from infra.objectstore import MemoryObjectStore
from services.bus.faults import JobCancelledError, PermanentError
from services.bus.ports import Progress
from services.bus.runner import StageRunner, Work, dead_letter_unreadable
from services.config import Settings
from tests.fakes import FakeCancelCheck, FakeDelivery, RecordingPublisher
from tests.services.job_messages import completed

STAGE = Stage.INGEST
BACKOFF = (0.5, 2.0)


def submitted(job_id: str = "job-unit-1") -> JobSubmitted:
    job = JobSpec(job_id=job_id, account="alice", params=GenerationParams(duration=2, fps=8, steps=2, seed=1))
    upload = ObjectRef(bucket="i2v", key=upload_key(job_id), size=1, sha256="0" * 64, content_type="image/png")
    return JobSubmitted(job=job, upload=upload)


CMD = submitted()
NEXT = ImagePrepared(job=CMD.job, image=CMD.upload, width=128, height=64, source_width=128, source_height=64)


def delivery(attempt: int = 1) -> FakeDelivery:
    return FakeDelivery(CMD.model_dump_json().encode(), attempt=attempt)


def make_runner(
    publisher: RecordingPublisher,
    *,
    cancels: FakeCancelCheck | None = None,
    store: MemoryObjectStore | None = None,
    max_deliver: int = 3,
    heartbeat_s: float = 60.0,
) -> StageRunner:
    settings = Settings(
        max_deliver=max_deliver, event_max_deliver=max_deliver, retry_backoff_s=BACKOFF, heartbeat_s=heartbeat_s
    )
    return StageRunner(STAGE, publisher, settings, cancels or FakeCancelCheck(), store)


class Scripted:
    """A work function whose attempts raise the scripted errors in turn, then return ``NEXT``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, progress: Progress) -> ImagePrepared:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        progress(1, 1)
        return NEXT


async def until_settled(runner: StageRunner, first: FakeDelivery, work: Work, limit: int = 10) -> list[FakeDelivery]:
    """Deliver as JetStream would: again after each nack, until acked or rejected."""
    deliveries = [first]
    while True:
        current = deliveries[-1]
        await runner.run(current, CMD.job, work)
        assert len(current.settled) == 1, current.settled  # settled exactly once per delivery
        if current.settled[0][0] != "nack" or len(deliveries) == limit:
            return deliveries
        deliveries.append(current.again())


def settlements(deliveries: list[FakeDelivery]) -> list[tuple[str, float | None]]:
    return [d.settled[0] for d in deliveries]


async def test_success_publishes_started_progress_finished_and_the_next_command_then_acks() -> None:
    publisher = RecordingPublisher()
    [only] = await until_settled(make_runner(publisher), delivery(), Scripted())

    assert only.settled == [("ack", None)]
    assert publisher.kinds() == ["StageStarted", "StageProgress", "StageFinished", "ImagePrepared"]
    assert publisher.published[-1] == NEXT


async def test_work_that_forwards_nothing_is_acked_without_a_next_command() -> None:
    publisher = RecordingPublisher()
    [only] = await until_settled(make_runner(publisher), delivery(), lambda _progress: None)

    assert only.settled == [("ack", None)]
    assert publisher.kinds() == ["StageStarted", "StageFinished"]


async def test_a_transient_fault_is_nacked_with_the_backoff_of_its_attempt_until_it_clears() -> None:
    publisher = RecordingPublisher()
    work = Scripted(TimeoutError("1"), TimeoutError("2"), TimeoutError("3"))
    deliveries = await until_settled(make_runner(publisher, max_deliver=5), delivery(), work)

    assert settlements(deliveries) == [("nack", 0.5), ("nack", 2.0), ("nack", 2.0), ("ack", None)]
    assert [e.attempt for e in publisher.of(StageStarted) if isinstance(e, StageStarted)] == [1, 2, 3, 4]
    assert not publisher.of(JobFailed) and not publisher.of(DeadLetter)


async def test_a_fault_that_never_clears_is_dead_lettered_and_the_job_failed_at_max_deliver() -> None:
    publisher = RecordingPublisher()
    work = Scripted(*(TimeoutError(f"flaky {n}") for n in range(1, 10)))
    deliveries = await until_settled(make_runner(publisher, max_deliver=3), delivery(), work)

    assert settlements(deliveries) == [("nack", 0.5), ("nack", 2.0), ("reject", None)]
    assert work.calls == 3
    [letter] = publisher.of(DeadLetter)
    [failed] = publisher.of(JobFailed)
    assert isinstance(letter, DeadLetter) and isinstance(failed, JobFailed)
    assert (letter.stage, letter.attempts, letter.code, letter.job_id) == (STAGE, 3, FailureCode.TIMEOUT, "job-unit-1")
    assert (letter.subject, JobSubmitted.model_validate_json(letter.body)) == ("i2v.work.ingest", CMD)
    assert (failed.stage, failed.code, failed.reason) == (STAGE, FailureCode.TIMEOUT, "flaky 3")
    assert publisher.kinds()[-2:] == ["DeadLetter", "JobFailed"]


async def test_a_permanent_fault_fails_the_job_at_once_without_a_dead_letter() -> None:
    publisher = RecordingPublisher()
    work = Scripted(PermanentError(FailureCode.UNSUPPORTED_FORMAT, "a spreadsheet"))
    deliveries = await until_settled(make_runner(publisher), delivery(), work)

    assert settlements(deliveries) == [("reject", None)]
    [failed] = publisher.of(JobFailed)
    assert isinstance(failed, JobFailed) and (failed.code, failed.reason) == ("unsupported_format", "a spreadsheet")
    assert not publisher.of(DeadLetter)


async def test_a_job_cancelled_before_it_starts_is_acked_with_job_cancelled_and_never_runs() -> None:
    publisher = RecordingPublisher()
    work = Scripted()
    cancels = FakeCancelCheck(cancelled={CMD.job.job_id: 0})
    deliveries = await until_settled(make_runner(publisher, cancels=cancels), delivery(), work)

    assert settlements(deliveries) == [("ack", None)]
    assert work.calls == 0
    assert publisher.kinds() == ["JobCancelled"]
    assert publisher.published[0] == JobCancelled(job=CMD.job, stage=STAGE)


async def test_a_replay_of_a_cancelled_generation_runs() -> None:
    publisher = RecordingPublisher()
    replay = CMD.job.model_copy(update={"generation": 1})
    cancels = FakeCancelCheck(cancelled={CMD.job.job_id: 0})
    runner = make_runner(publisher, cancels=cancels)
    only = delivery()

    await runner.run(only, replay, Scripted())

    assert only.settled == [("ack", None)] and "JobCancelled" not in publisher.kinds()


async def test_a_job_cancelled_while_it_runs_is_acked_with_job_cancelled() -> None:
    publisher = RecordingPublisher()
    deliveries = await until_settled(make_runner(publisher), delivery(), Scripted(JobCancelledError("job-unit-1")))

    assert settlements(deliveries) == [("ack", None)]
    assert publisher.kinds() == ["StageStarted", "JobCancelled"]


# --- A1: what raises around the work goes through the same decision ------------------------------


@pytest.mark.parametrize("where", ["cancel check", "StageStarted publish"])
async def test_a_fault_around_the_work_backs_off_then_dead_letters_and_fails_the_job(where: str) -> None:
    publisher = RecordingPublisher()
    cancels = FakeCancelCheck()
    if where == "cancel check":
        cancels.error = ConnectionError("cancel bucket unreachable")
    else:
        publisher.refuse(StageStarted, TimeoutError("publish timed out"), times=99)
    work = Scripted()
    deliveries = await until_settled(make_runner(publisher, cancels=cancels), delivery(), work)

    assert settlements(deliveries) == [("nack", 0.5), ("nack", 2.0), ("reject", None)]
    assert work.calls == 0
    [letter] = publisher.of(DeadLetter)
    [failed] = publisher.of(JobFailed)
    assert isinstance(letter, DeadLetter) and letter.attempts == 3 and letter.code == FailureCode.TIMEOUT
    assert isinstance(failed, JobFailed) and failed.job == CMD.job


async def test_a_failed_started_publish_is_retried_and_the_job_completes() -> None:
    publisher = RecordingPublisher()
    publisher.refuse(StageStarted, TimeoutError("publish timed out"))
    deliveries = await until_settled(make_runner(publisher), delivery(), Scripted())

    assert settlements(deliveries) == [("nack", 0.5), ("ack", None)]
    assert publisher.published[-1] == NEXT


async def test_a_failed_publish_of_the_next_command_is_retried_not_left_to_the_ack_deadline() -> None:
    publisher = RecordingPublisher()
    publisher.refuse(ImagePrepared, TimeoutError("publish timed out"))
    work = Scripted()
    deliveries = await until_settled(make_runner(publisher), delivery(), work)

    assert settlements(deliveries) == [("nack", 0.5), ("ack", None)]
    assert work.calls == 2 and publisher.of(ImagePrepared) == [NEXT]


async def test_a_verdict_the_bus_refuses_is_not_dropped_the_delivery_comes_back() -> None:
    publisher = RecordingPublisher()
    publisher.refuse(JobFailed, TimeoutError("bus down"))
    refusal = PermanentError(FailureCode.UNSUPPORTED_FORMAT, "a spreadsheet")
    work = Scripted(refusal, refusal)
    deliveries = await until_settled(make_runner(publisher), delivery(), work)

    # The first JobFailed was refused: no reject (that would end the job silently); the next delivery tells.
    assert settlements(deliveries) == [("nack", 0.5), ("reject", None)]
    assert len(publisher.of(JobFailed)) == 1


async def test_settling_never_raises_out_of_the_handler() -> None:
    class Broken(FakeDelivery):
        async def nack(self, delay: float) -> None:
            raise ConnectionError("connection closed")

    publisher = RecordingPublisher()
    broken = Broken(CMD.model_dump_json().encode())

    await make_runner(publisher).run(broken, CMD.job, Scripted(TimeoutError("flaky")))  # no exception


# --- A2: the command is kept for replay on every delivery ----------------------------------------


async def test_a_command_the_first_attempt_could_not_keep_is_kept_by_the_retry() -> None:
    publisher, store = RecordingPublisher(), MemoryObjectStore()
    runner = make_runner(publisher, store=store)
    work = Scripted()
    first = delivery()
    store.unavailable = True

    await runner.run(first, CMD.job, work)
    assert first.settled == [("nack", 0.5)]  # transient: nothing ran without its command kept
    assert work.calls == 0 and not publisher.published

    store.unavailable = False
    second = first.again()
    await runner.run(second, CMD.job, work)

    assert second.settled == [("ack", None)]
    kept = store.head(command_key(CMD.job.job_id, STAGE))
    assert kept is not None and JobSubmitted.model_validate_json(store.get(kept)) == CMD


async def test_a_command_first_seen_on_a_redelivery_is_kept() -> None:
    """The process died after taking the first delivery and before storing anything."""
    publisher, store = RecordingPublisher(), MemoryObjectStore()

    await make_runner(publisher, store=store).run(delivery(attempt=2), CMD.job, Scripted())

    kept = store.head(command_key(CMD.job.job_id, STAGE))
    assert kept is not None and JobSubmitted.model_validate_json(store.get(kept)) == CMD


async def test_keeping_the_command_again_on_a_retry_is_idempotent() -> None:
    publisher, store = RecordingPublisher(), MemoryObjectStore()
    work = Scripted(TimeoutError("flaky"))

    await until_settled(make_runner(publisher, store=store), delivery(), work)

    assert {ref.key for ref in store.puts} == {command_key(CMD.job.job_id, STAGE)}
    assert len({ref.sha256 for ref in store.puts}) == 1


async def test_a_store_that_never_comes_back_dead_letters_the_command() -> None:
    publisher, store = RecordingPublisher(), MemoryObjectStore()
    store.unavailable = True
    deliveries = await until_settled(make_runner(publisher, store=store, max_deliver=2), delivery(), Scripted())

    assert settlements(deliveries) == [("nack", 0.5), ("reject", None)]
    [letter] = publisher.of(DeadLetter)
    assert isinstance(letter, DeadLetter) and letter.code == FailureCode.OBJECT_STORE_UNAVAILABLE
    assert "keep the command" in letter.error
    assert len(publisher.of(JobFailed)) == 1


# --- heartbeats ---------------------------------------------------------------------------------


async def test_heartbeats_flow_while_the_work_runs_and_stop_after() -> None:
    def slow(progress: Progress) -> ImagePrepared:
        time.sleep(0.2)
        return NEXT

    publisher = RecordingPublisher()
    only = delivery()
    await make_runner(publisher, heartbeat_s=0.02).run(only, CMD.job, slow)
    beats = only.heartbeats
    time.sleep(0.05)

    assert beats >= 3 and only.heartbeats == beats
    assert only.settled == [("ack", None)]


# --- events a stage follows (billing's settlement) -----------------------------------------------

EVENT = completed(CMD.job, 12)


def event_delivery(attempt: int = 1) -> FakeDelivery:
    return FakeDelivery(EVENT.model_dump_json().encode(), subject="i2v.events.job-unit-1.terminal", attempt=attempt)


async def test_an_applied_event_is_acked() -> None:
    publisher = RecordingPublisher()
    applied: list[JobCompleted] = []
    only = event_delivery()

    await make_runner(publisher).handle_event(only, lambda: applied.append(EVENT))

    assert only.settled == [("ack", None)] and applied == [EVENT] and not publisher.published


async def test_an_event_that_keeps_failing_is_retried_with_backoff_then_dead_lettered() -> None:
    publisher = RecordingPublisher()
    runner = make_runner(publisher, max_deliver=3)

    def ledger_down() -> None:
        raise ConnectionError("ledger unreachable")

    deliveries = [event_delivery()]
    while True:
        await runner.handle_event(deliveries[-1], ledger_down)
        if deliveries[-1].settled[-1][0] != "nack":
            break
        deliveries.append(deliveries[-1].again())

    assert settlements(deliveries) == [("nack", 0.5), ("nack", 2.0), ("reject", None)]
    [letter] = publisher.published
    assert isinstance(letter, DeadLetter)
    assert (letter.stage, letter.subject, letter.attempts, letter.job_id) == (
        STAGE,
        "i2v.events.job-unit-1.terminal",
        3,
        None,  # not replayable as a job: `i2v dlq replay` would re-run it from this stage
    )
    assert JobCompleted.model_validate_json(letter.body) == EVENT


async def test_an_event_with_a_permanent_fault_is_dead_lettered_at_once() -> None:
    publisher = RecordingPublisher()
    only = event_delivery()

    def refuse() -> None:
        raise PermanentError(FailureCode.SCHEMA_VIOLATION, "no such reservation state")

    await make_runner(publisher).handle_event(only, refuse)

    assert only.settled == [("reject", None)]
    assert publisher.kinds() == ["DeadLetter"]


# --- unreadable messages ------------------------------------------------------------------------


def unreadable(body: bytes) -> ValidationError:
    try:
        JobSubmitted.model_validate_json(body)
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


async def test_an_unreadable_command_is_dead_lettered_terminated_and_its_job_failed() -> None:
    publisher = RecordingPublisher()
    body = json.dumps(CMD.model_dump(mode="json") | {"schema_version": 2}).encode()
    only = FakeDelivery(body)

    await dead_letter_unreadable(publisher, only, STAGE, unreadable(body), fail_job=True)

    assert only.settled == [("reject", None)]
    letter, failed = publisher.published
    assert isinstance(letter, DeadLetter) and isinstance(failed, JobFailed)
    assert (letter.code, letter.job_id, letter.attempts, letter.body) == (
        "schema_violation",
        "job-unit-1",
        1,
        body.decode(),
    )
    assert failed.code == FailureCode.SCHEMA_VIOLATION


async def test_an_unreadable_event_is_dead_lettered_and_terminated_without_failing_a_job() -> None:
    publisher = RecordingPublisher()
    body = b"\x00\xff not json"
    only = FakeDelivery(body, subject="i2v.events.job-unit-1.terminal")

    await dead_letter_unreadable(publisher, only, Stage.BILLING, unreadable(body), fail_job=False)

    assert only.settled == [("reject", None)]
    [letter] = publisher.published
    assert isinstance(letter, DeadLetter)
    assert (letter.stage, letter.code, letter.job_id) == (Stage.BILLING, "not_json", None)


async def test_an_unreadable_message_that_cannot_be_dead_lettered_is_left_for_redelivery() -> None:
    publisher = RecordingPublisher()
    publisher.refuse(DeadLetter, TimeoutError("bus down"))
    only = FakeDelivery(b"nope")

    await dead_letter_unreadable(publisher, only, STAGE, unreadable(b"nope"), fail_job=True)

    assert only.settled == []  # never terminated unrecorded; JetStream brings it back after ack_wait
