"""Queue position and ETA: the size scaling, the flow-shop play-forward, and the line read from a real
nats-server's work stream."""

import asyncio
from collections.abc import Mapping
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from contracts.messages import JobSpec, PointsReserved, StageFinished, StageStarted
from contracts.params import GenerationParams, Resolution
from contracts.refs import ObjectRef
from contracts.stages import PIPELINE_ORDER, Stage
from contracts.subjects import WORK_STREAM, durable_name, msg_id, work_subject
from infra.nats_server import NatsServer
from services.bus.publishing import route
from services.bus.streams import ensure_streams
from services.gateway.eta import (
    Activity,
    Estimator,
    JobSize,
    Queued,
    StageClock,
    Standing,
    WorkQueues,
    describe,
    finish_times,
    ordinal,
    size_of,
    standing_once,
)
from services.gateway.events import frame
from services.gateway.progress import JobView
from tests.services.gateway.conftest import RunningGateway
from tests.services.gateway.test_api import submit

SIZE = JobSize(steps=10, native_frames=8, output_frames=16, pixels=64 * 64)


def _clock(seconds: Mapping[Stage, float]) -> StageClock:
    clock = StageClock()
    for stage, took in seconds.items():
        clock.observe(stage, took, SIZE)
    return clock


def test_latent_scales_with_steps_frames_and_pixels_decode_with_output_frames() -> None:
    clock = _clock({Stage.LATENT: 10.0, Stage.DECODE: 2.0, Stage.MUX: 1.0})
    bigger = JobSize(steps=20, native_frames=8, output_frames=48, pixels=128 * 64)
    assert clock.predict(Stage.LATENT, bigger) == pytest.approx(10.0 * 2 * 2)
    assert clock.predict(Stage.DECODE, bigger) == pytest.approx(2.0 * 3 * 2)
    assert clock.predict(Stage.MUX, bigger) == pytest.approx(1.0)  # about the same for any job
    assert clock.predict(Stage.INGEST, SIZE) is None  # nothing measured: no guess


def test_the_median_of_recent_speeds_predicts() -> None:
    clock = StageClock()
    for took in (1.0, 9.0, 2.0):
        clock.observe(Stage.MUX, took, SIZE)
    assert clock.predict(Stage.MUX, SIZE) == pytest.approx(2.0)


def test_runs_alone_and_in_company_give_the_stage_its_slowdown_in_company() -> None:
    clock = StageClock()
    clock.observe(Stage.LATENT, 10.0, SIZE, company=0.0)
    clock.observe(Stage.LATENT, 20.0, SIZE, company=1.0)
    assert clock.predict(Stage.LATENT, SIZE) == pytest.approx(10.0)
    assert clock.predict(Stage.LATENT, SIZE, in_company=True) == pytest.approx(20.0)
    # A run half in company did half its work at each speed: 1 / (0.5 / 10 + 0.5 / 20) of a second per unit.
    clock.observe(Stage.LATENT, 40.0 / 3.0, SIZE, company=0.5)
    assert clock.predict(Stage.LATENT, SIZE) == pytest.approx(10.0)
    # Decode was only seen alone: it takes latent's slowdown.
    clock.observe(Stage.DECODE, 2.0, SIZE, company=0.1)
    assert clock.paces()[Stage.DECODE].slowdown == pytest.approx(2.0)
    # Company that did not slow a stage down leaves it at 1.
    clock.observe(Stage.MUX, 1.0, SIZE, company=0.0)
    clock.observe(Stage.MUX, 0.9, SIZE, company=1.0)
    assert clock.paces()[Stage.MUX].slowdown == 1.0


def test_a_run_s_company_is_the_share_of_its_time_another_command_ran() -> None:
    activity = Activity()
    activity.started("a", Stage.LATENT, at=0.0)
    activity.started("b", Stage.DECODE, at=6.0)
    assert activity.finished("b", Stage.DECODE, seconds=2.0, at=8.0) == pytest.approx(1.0)
    assert activity.finished("a", Stage.LATENT, seconds=10.0, at=10.0) == pytest.approx(0.2)
    activity.started("c", Stage.MUX, at=11.0)
    activity.progressed("c", Stage.MUX, step=1, total=4)
    run = activity.run("c", Stage.MUX)
    assert run is not None and run.done == 0.25
    activity.ended("c")  # failed: no StageFinished comes
    assert activity.run("c", Stage.MUX) is None
    assert activity.workers(Stage.LATENT) == 1


def test_commands_of_one_stage_running_side_by_side_are_its_replicas_a_prefetched_one_is_not() -> None:
    activity = Activity()
    # The next command's StageStarted may come a moment before the last one's StageFinished.
    activity.started("a", Stage.LATENT, at=0.0)
    activity.started("b", Stage.LATENT, at=9.99)
    activity.finished("a", Stage.LATENT, seconds=10.0, at=10.0)
    assert activity.workers(Stage.LATENT) == 1
    activity.started("c", Stage.LATENT, at=11.0)
    activity.finished("b", Stage.LATENT, seconds=10.0, at=20.0)
    assert activity.workers(Stage.LATENT) == 2


def test_size_of_reads_the_resolution_and_the_models_native_frames() -> None:
    params = GenerationParams(steps=4, duration=2, fps=6, resolution=Resolution(width=128, height=64))
    size = size_of(params)
    assert (size.steps, size.output_frames, size.pixels) == (4, 12, 128 * 64)
    assert size.native_frames >= 1


STAGE_S: dict[Stage, float] = {
    Stage.INGEST: 1.0,
    Stage.BILLING: 1.0,
    Stage.LATENT: 10.0,
    Stage.DECODE: 2.0,
    Stage.MUX: 1.0,
}


def test_jobs_in_line_wait_for_the_slowest_stage() -> None:
    line = [Queued(seq, f"j{seq}", SIZE) for seq in (1, 2, 3)]
    ends = finish_times({Stage.INGEST: line}, _clock(STAGE_S))
    # j1 runs straight through (15 s); the others queue behind it at latent, 10 s apart.
    assert ends == {"j1": pytest.approx(15.0), "j2": pytest.approx(25.0), "j3": pytest.approx(35.0)}


def test_jobs_further_on_go_first_and_a_started_command_has_done_its_share() -> None:
    lines = {
        Stage.LATENT: [Queued(7, "running", SIZE, started=0.0, done=0.5)],
        Stage.INGEST: [Queued(9, "new", SIZE)],
    }
    ends = finish_times(lines, _clock(STAGE_S))
    assert ends["running"] == pytest.approx(5.0 + 2.0 + 1.0)
    # "new" reaches latent at 2 s and waits until "running" is done at 5 s.
    assert ends["new"] == pytest.approx(5.0 + 10.0 + 2.0 + 1.0)
    # Without progress events, the time since it started tells: 4 s of its 10.
    lines[Stage.LATENT] = [Queued(7, "running", SIZE, started=100.0)]
    assert finish_times(lines, _clock(STAGE_S), now=104.0)["running"] == pytest.approx(6.0 + 2.0 + 1.0)


def test_a_prefetched_command_waits_for_the_one_running() -> None:
    lines = {Stage.LATENT: [Queued(1, "a", SIZE, started=0.0, done=0.0), Queued(2, "b", SIZE)]}
    ends = finish_times(lines, _clock(STAGE_S))
    assert ends == {"a": pytest.approx(13.0), "b": pytest.approx(23.0)}


def test_commands_in_company_run_at_their_slower_pace() -> None:
    clock = StageClock()
    for stage, took in ((Stage.LATENT, 10.0), (Stage.DECODE, 4.0), (Stage.MUX, 1.0)):
        clock.observe(stage, took, SIZE, company=0.0)
        clock.observe(stage, 2 * took, SIZE, company=1.0)
    lines = {Stage.LATENT: [Queued(1, "a", SIZE, started=0.0, done=0.0), Queued(2, "b", SIZE)]}
    # a's latent alone to 10 s; a's decode beside b's latent at half pace to 18 s (b's latent 4 s along),
    # a's mux beside it to 20 s (5 s along); b's latent alone to 25 s, its decode to 29 s, its mux to 30 s.
    assert finish_times(lines, clock) == {"a": pytest.approx(20.0), "b": pytest.approx(30.0)}


def test_a_stage_with_replicas_takes_as_many_commands_at_once() -> None:
    clock = _clock({Stage.LATENT: 10.0, Stage.DECODE: 2.0, Stage.MUX: 1.0})
    lines = {Stage.LATENT: [Queued(1, "a", SIZE), Queued(2, "b", SIZE)]}
    two = finish_times(lines, clock, workers=lambda stage: 2 if stage == Stage.LATENT else 1)
    assert two == {"a": pytest.approx(13.0), "b": pytest.approx(15.0)}  # b's decode waits for a's


def test_an_unmeasured_stage_leaves_the_eta_unknown_for_whoever_crosses_it() -> None:
    partial: dict[Stage, float] = {stage: took for stage, took in STAGE_S.items() if stage != Stage.DECODE}
    line = [Queued(1, "a", SIZE), Queued(2, "b", SIZE)]
    assert finish_times({Stage.INGEST: line}, _clock(partial)) == {"a": None, "b": None}


def test_ordinals_and_the_words_of_a_standing() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th",
    ]  # fmt: skip
    assert describe(Standing(queue_position=0, eta_s=12.4)) == "1st in line · about 12 s"
    assert describe(Standing()) == ""


def _image() -> ObjectRef:
    return ObjectRef(bucket="i2v-test", key="jobs/x/image.png", size=1, sha256="0" * 64, content_type="image/png")


def _spec(n: int) -> JobSpec:
    return JobSpec(job_id=f"job-{n:04d}", account="acct", params=GenerationParams(seed=n, steps=4, duration=1))


async def test_queue_position_counts_the_commands_ahead_on_the_stage_subject(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as server:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            # The latent stage's durable, as its service declares it, that consumes nothing yet.
            await js.add_consumer(
                WORK_STREAM,
                ConsumerConfig(
                    durable_name=durable_name(Stage.LATENT),
                    filter_subject=work_subject(Stage.LATENT),
                    ack_policy=AckPolicy.EXPLICIT,
                ),
            )
            specs = [_spec(n) for n in range(3)]
            for spec in specs:
                command = PointsReserved(job=spec, image=_image(), width=64, height=64, price=8)
                await js.publish(
                    work_subject(Stage.LATENT),
                    command.model_dump_json().encode(),
                    headers={"Nats-Msg-Id": msg_id(spec.job_id, "latent", 0)},
                )
            estimator = Estimator(WorkQueues(js, cache_s=0.0), params_of=lambda _: None)
            views = [JobView.submitted(spec) for spec in specs]

            standing = await estimator.standing(views[2])
            assert standing.queue_position == 2
            assert standing.eta_s is None  # no stage measured yet

            # A worker takes the first: held but not started (a prefetch), it still waits first in line.
            worker = await js.pull_subscribe(work_subject(Stage.LATENT), durable=durable_name(Stage.LATENT))
            [held] = await worker.fetch(1, timeout=5)
            assert (await estimator.standing(views[0])).queue_position == 0
            # Once its stage starts it, it has no place in line, and still stands ahead of the others.
            estimator.offer(
                frame(1, StageStarted(job_id=specs[0].job_id, stage=Stage.LATENT).model_dump_json().encode())
            )
            assert (await estimator.standing(views[2])).queue_position == 2
            assert (await estimator.standing(views[0])).queue_position is None

            await held.ack_sync()
            assert (await estimator.standing(views[2])).queue_position == 1
            assert (await estimator.standing(views[0])).queue_position is None  # gone from every line

            # Measured stage times (as the live feed brings them) give the ETA; job-0000 was sized from its
            # command when it stood in line, so no look-up in the jobs index is needed.
            for stage in PIPELINE_ORDER:
                finished = StageFinished(job_id=specs[0].job_id, stage=stage, seconds=2.0)
                estimator.offer(frame(1, finished.model_dump_json().encode()))
            # job-0001 is now first in line (position 0) and job-0002 waits behind it at latent.
            first, second = await estimator.standing(views[1]), await estimator.standing(views[2])
            assert (first.queue_position, second.queue_position) == (0, 1)
            assert first.eta_s == pytest.approx(2.0 * 3)
            assert second.eta_s == pytest.approx(2.0 * 4)

            # A job submitted after the last read of a line is looked for at once, not a second later.
            queues = WorkQueues(js, cache_s=60.0)
            await queues.lines()
            late = _spec(9)
            command = PointsReserved(job=late, image=_image(), width=64, height=64, price=8)
            await js.publish(work_subject(Stage.LATENT), command.model_dump_json().encode())
            assert late.job_id not in {q.job_id for q in (await queues.lines())[Stage.LATENT]}
            found = await queues.lines(newer_than=late.submitted_at.timestamp())
            assert late.job_id in {q.job_id for q in found[Stage.LATENT]}
            # A job made before another request's read of the lines, its command published after that read
            # (a submit publishes a moment after it makes the job): looked for again, not left without a place.
            estimator = Estimator(WorkQueues(js, cache_s=60.0), params_of=lambda _: None)
            slow = _spec(10)
            await estimator.queues.lines()
            command = PointsReserved(job=slow, image=_image(), width=64, height=64, price=8)
            await js.publish(work_subject(Stage.LATENT), command.model_dump_json().encode())
            assert (await estimator.standing(JobView.submitted(slow))).queue_position == 3
        finally:
            await nc.close()


async def test_the_job_resource_gives_its_place_in_line_and_eta(gateway: RunningGateway) -> None:
    _, key = gateway.account(1000)
    async with gateway.client(key) as client:
        first, second = [(await submit(client, seed=n)).json()["id"] for n in (1, 2)]
        job = (await client.get(f"/v1/jobs/{second}")).json()
        # No ingest service runs here: both wait on the ingest subject, the first ahead of the second.
        assert (job["queue_position"], job["eta_s"]) == (1, None)

        # Once every stage has a measured time (the first job's, as the stages report them), the ETA follows.
        for stage in PIPELINE_ORDER:
            await gateway.publish(StageFinished(job_id=first, stage=stage, seconds=2.0))
        for _ in range(100):
            job = (await client.get(f"/v1/jobs/{second}")).json()
            if job["eta_s"] is not None:
                break
            await asyncio.sleep(0.05)
        # Both jobs have the same size; the second one leaves each stage 2 s after the first.
        assert (job["queue_position"], job["eta_s"]) == (1, pytest.approx(12.0))


async def test_a_process_without_the_live_feed_measures_the_stages_from_the_events_stream(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as server:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            specs = [_spec(n) for n in range(2)]
            for spec in specs:
                command = PointsReserved(job=spec, image=_image(), width=64, height=64, price=8)
                await js.publish(work_subject(Stage.LATENT), command.model_dump_json().encode())
            view = JobView.submitted(specs[1])
            assert await standing_once(js, view) == Standing(queue_position=1, eta_s=None)  # nothing measured

            for stage in PIPELINE_ORDER:
                finished = StageFinished(job_id=specs[0].job_id, stage=stage, seconds=2.0)
                where = route(finished)
                await js.publish(where.subject, finished.model_dump_json().encode(), stream=where.stream)
            # job-0000 (sized from its command in line) ahead at latent, decode and mux: 2 s each, then job-0001.
            assert await standing_once(js, view) == Standing(queue_position=1, eta_s=8.0)
        finally:
            await nc.close()
