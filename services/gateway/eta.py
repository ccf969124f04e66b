"""Where a job stands in line and about when it ends: queue position from the work stream, ETA from
measured stage durations.

**Queue position.** The work stream keeps each stage's commands on one subject until they are acked
(work-queue retention), so what is left on a stage's subject *is* its line, in stream order. Per stage,
:class:`WorkQueues` keeps the commands it has read by sequence (a command never changes, so each is read
once) and, at most once a second, reads only the ones published since (``get_msg`` with ``next``, from the
last sequence read), then drops everything at or below the stage's durable consumer's ack floor. The
consumer's delivered sequence tells the commands handed to a worker from those still waiting. A job's
position is the number of commands before its own on that subject. Many clients polling cost one look-up of
the consumer and of the subject's count per stage per second, plus one read per new command. (An ephemeral
consumer cannot read the line: a work-queue stream allows one consumer per subject.)

**ETA.** Each stage's time is measured (``StageFinished.seconds``) and divided by the job's size for that
stage: steps x native frames x pixels for latent, output frames x pixels for decode, one for the others.
The median of the recent rates, times a job's size, predicts its time. The in-flight work of every stage
is then played forward as a flow shop, one worker per stage taking commands in stream order (a stage's
service does one command at a time): a job finishes a stage at max(the worker is free, it arrived) plus its
time. A command a worker already holds is counted as half done (its own job's progress when it is the job
asked about). The ETA is the job's end at mux; null while a stage it or any job ahead needs has no
measurement yet. Replicas of a stage make the real wait shorter than this says.
"""

import asyncio
import contextlib
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import anyio.to_thread
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import TypeAdapter, ValidationError

from contracts.messages import Command, StageFinished, Terminal
from contracts.params import GenerationParams
from contracts.stages import PIPELINE_ORDER, Stage
from contracts.subjects import EVENTS_STREAM, EVENTS_SUBJECTS, WORK_STREAM, durable_name, work_subject
from services.gateway.progress import JobView

if TYPE_CHECKING:  # events imports the schemas, which import this module
    from services.gateway.events import Frame

log = logging.getLogger("i2v.gateway")

QUEUE_CACHE_S = 1.0
"""How long one read of a stage's line answers every client asking."""
RECENT_SAMPLES = 16
"""Measured durations per stage the prediction draws on: recent enough to follow a change of load."""
_HELD_DONE = 0.5
_KNOWN_JOBS = 4096

_COMMAND: TypeAdapter[Command] = TypeAdapter(Command)


@dataclass(frozen=True)
class JobSize:
    """What a job's stage times scale with."""

    steps: int
    native_frames: int
    output_frames: int
    pixels: int

    def units(self, stage: Stage) -> float:
        """The job's size for ``stage``: denoising scales with steps x native frames x pixels, decoding with
        output frames x pixels; ingest, billing and mux take about the same time for any job."""
        if stage == Stage.LATENT:
            return float(self.steps * self.native_frames * self.pixels)
        if stage == Stage.DECODE:
            return float(self.output_frames * self.pixels)
        return 1.0


@lru_cache(maxsize=64)
def _model_shape(model: str) -> tuple[int, int, int]:
    from pipeline.model_catalog import ModelNotFoundError, model_defaults

    try:
        defaults = model_defaults(model)
    except ModelNotFoundError:
        return (1024, 576, 14)  # the size SVD generates; a job on a model this host lacks fails at ingest anyway
    return defaults.width, defaults.height, defaults.native_frames


def size_of(params: GenerationParams) -> JobSize:
    """The job's size from its parameters and its model's defaults (read from config files: blocking)."""
    width, height, native_frames = _model_shape(params.model)
    if params.resolution is not None:
        width, height = params.resolution.width, params.resolution.height
    return JobSize(params.steps, native_frames, params.frame_count, width * height)


class StageClock:
    """Seconds per unit of size for each stage, from the recent measured durations."""

    def __init__(self, recent: int = RECENT_SAMPLES) -> None:
        self._rates: dict[Stage, deque[float]] = {stage: deque(maxlen=recent) for stage in PIPELINE_ORDER}

    def observe(self, stage: Stage, seconds: float, size: JobSize) -> None:
        self._rates[stage].append(max(0.0, seconds) / size.units(stage))

    def predict(self, stage: Stage, size: JobSize) -> float | None:
        """Seconds the stage should take for a job of ``size``; None before any measurement of it."""
        rates = self._rates[stage]
        return statistics.median(rates) * size.units(stage) if rates else None


@dataclass(frozen=True)
class Queued:
    """One command in a stage's line."""

    sequence: int
    job_id: str
    size: JobSize | None
    held: bool = False
    """A worker has it (delivered, not yet acked)."""


def finish_times(
    lines: Mapping[Stage, Sequence[Queued]],
    clock: StageClock,
    held_done: Callable[[Queued], float] = lambda _: _HELD_DONE,
) -> dict[str, float | None]:
    """Seconds from now until each job in ``lines`` leaves mux, playing the lines forward as a flow shop
    (one worker per stage, in line order; what reaches a stage later queues behind what is there now);
    None for a job whose way, or that of one ahead of it, crosses a stage not yet measured.
    ``held_done`` says how much of a held command's work is done already."""
    done_at: dict[str, float | None] = {}
    arriving: list[tuple[float | None, Queued]] = []
    for stage in PIPELINE_ORDER:
        here = sorted(lines.get(stage, ()), key=_seq)
        # What arrives from upstream is published later than anything on the subject now, and in the order
        # it ends upstream; a worker can hold only a command that is on the subject now.
        line = [(0.0, q, q.held) for q in here] + [(end, q, False) for end, q in arriving]
        free: float | None = 0.0
        arriving = []
        for arrival, item, held in line:
            took = clock.predict(stage, item.size) if item.size is not None else None
            if took is not None and held:
                took *= 1.0 - held_done(item)
            free = None if free is None or arrival is None or took is None else max(free, arrival) + took
            arriving.append((free, item))
    for end, item in arriving:
        done_at[item.job_id] = end
    return done_at


def _seq(item: Queued) -> int:
    return item.sequence


@dataclass
class _Line:
    read_to: int = 0
    commands: dict[int, Queued] = field(default_factory=dict)
    read_at: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class WorkQueues:
    """Each stage's line of commands on the work stream, read at most once per :data:`QUEUE_CACHE_S`."""

    def __init__(self, js: JetStreamContext, cache_s: float = QUEUE_CACHE_S) -> None:
        self._js = js
        self._cache_s = cache_s
        self._lines = {stage: _Line() for stage in PIPELINE_ORDER}

    async def line(self, stage: Stage) -> list[Queued]:
        """The stage's commands in stream order, as of at most ``cache_s`` ago."""
        line = self._lines[stage]
        async with line.lock:
            if time.monotonic() - line.read_at >= self._cache_s:
                try:
                    await self._refresh(stage, line)
                except (nats.errors.Error, TimeoutError) as exc:
                    # A place in line is a courtesy: the job resource is answered with the last line read.
                    log.warning("could not read the %s line of the work stream: %r", stage, exc)
                line.read_at = time.monotonic()
            return sorted(line.commands.values(), key=_seq)

    async def lines(self) -> dict[Stage, list[Queued]]:
        read = await asyncio.gather(*(self.line(stage) for stage in PIPELINE_ORDER))
        return dict(zip(PIPELINE_ORDER, read, strict=True))

    async def _refresh(self, stage: Stage, line: _Line) -> None:
        acked, delivered = await self._consumer_floor(stage)
        subject = work_subject(stage)
        info = await self._js.stream_info(WORK_STREAM, subjects_filter=subject)
        left = (info.state.subjects or {}).get(subject, 0)
        kept = {seq: q for seq, q in line.commands.items() if seq > acked}
        if len(kept) > left:
            # Some command above the floor was acked out of turn (a prefetched one): read the line again.
            kept, line.read_to = {}, acked
        line.read_to = max(line.read_to, acked)
        while True:
            try:
                msg = await self._js.get_msg(WORK_STREAM, seq=line.read_to + 1, subject=subject, next=True)
            except NotFoundError:
                break
            assert msg.seq is not None
            line.read_to = msg.seq
            kept[msg.seq] = _queued(msg.seq, msg.data or b"")
        line.commands = {seq: Queued(q.sequence, q.job_id, q.size, held=seq <= delivered) for seq, q in kept.items()}

    async def _consumer_floor(self, stage: Stage) -> tuple[int, int]:
        """(ack floor, last delivered) stream sequences of the stage's durable; (0, 0) before it exists."""
        try:
            info = await self._js.consumer_info(WORK_STREAM, durable_name(stage))
        except NotFoundError:
            return 0, 0
        return info.ack_floor.stream_seq or 0, info.delivered.stream_seq or 0


def _queued(sequence: int, body: bytes) -> Queued:
    try:
        command = _COMMAND.validate_json(body)
    except ValidationError:
        return Queued(
            sequence, f"?{sequence}", None
        )  # unreadable: it still stands in line; the stage will dead-letter it
    return Queued(sequence, command.job.job_id, size_of(command.job.params))


@dataclass(frozen=True)
class Standing:
    """A job's place in line and its expected end."""

    queue_position: int | None = None
    eta_s: float | None = None


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th ... 11th, 12th, 13th ... 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def describe(standing: Standing) -> str:
    """The standing in words, as the page and the CLI show it: ``3rd in line · about 40 s``; "" when unknown."""
    parts = []
    if standing.queue_position is not None:
        parts.append(f"{ordinal(standing.queue_position + 1)} in line")
    if standing.eta_s is not None:
        parts.append(f"about {standing.eta_s:.0f} s")
    return " · ".join(parts)


class Estimator:
    """Learns stage durations from the live feed (:meth:`offer`) and answers where a job stands."""

    def __init__(self, queues: WorkQueues, params_of: Callable[[str], GenerationParams | None]) -> None:
        self.queues = queues
        self.clock = StageClock()
        self._params_of = params_of
        """Blocking look-up of a job's parameters (the jobs index), for a measured job not seen in line."""
        self._sizes: dict[str, JobSize] = {}
        self._unmeasured: list[StageFinished] = []

    def offer(self, item: "Frame") -> None:
        """Keep a StageFinished of the live feed; it is sized and learned on the next estimate."""
        if isinstance(item.event, StageFinished):
            self._unmeasured.append(item.event)
            del self._unmeasured[: -RECENT_SAMPLES * len(PIPELINE_ORDER)]

    def learn(self) -> None:
        """Size the durations offered since the last call and learn them. Blocking (the jobs index)."""
        pending, self._unmeasured = self._unmeasured, []
        for finished in pending:
            size = self._size(finished.job_id)
            if size is not None:
                self.clock.observe(finished.stage, finished.seconds, size)

    def _size(self, job_id: str) -> JobSize | None:
        size = self._sizes.get(job_id)
        if size is None:
            params = self._params_of(job_id)
            if params is None:
                return None
            size = self._remember(job_id, params)
        return size

    def _remember(self, job_id: str, params: GenerationParams) -> JobSize:
        size = self._sizes[job_id] = size_of(params)
        if len(self._sizes) > _KNOWN_JOBS:
            with contextlib.suppress(StopIteration):
                del self._sizes[next(iter(self._sizes))]
        return size

    async def standing(self, view: JobView) -> Standing:
        """The job's queue position in the stage it waits for (None when a worker has it, or it has ended)
        and its ETA in seconds (None when ended or not yet predictable)."""
        if view.terminal:
            return Standing()
        lines = await self.queues.lines()
        for line in lines.values():
            for item in line:
                if item.size is not None:
                    self._sizes.setdefault(item.job_id, item.size)
        self._sizes.setdefault(view.job_id, size_of(view.params))
        await anyio.to_thread.run_sync(self.learn)
        # A job moves on by publishing the next command before acking this one: its latest stage counts.
        where: dict[str, Stage] = {}
        for stage in PIPELINE_ORDER:
            for item in lines[stage]:
                where[item.job_id] = stage
        lines = {stage: [q for q in line if where[q.job_id] == stage] for stage, line in lines.items()}
        position: int | None = None
        waits_in = where.get(view.job_id)
        if waits_in is not None:
            line = lines[waits_in]
            mine = next(i for i, q in enumerate(line) if q.job_id == view.job_id)
            position = None if line[mine].held else mine

        def held_done(item: Queued) -> float:
            if item.job_id == view.job_id:
                return min(view.step, view.total) / view.total if view.total else 0.0
            return _HELD_DONE

        eta = finish_times(lines, self.clock, held_done).get(view.job_id) if waits_in is not None else None
        return Standing(position, None if eta is None else round(eta, 1))


LOOK_BACK_EVENTS = 1000
"""Events a process without the live feed (the CLI) reads back to measure the stages: a few dozen jobs."""


async def standing_once(js: JetStreamContext, view: JobView, look_back: int = LOOK_BACK_EVENTS) -> Standing:
    """:meth:`Estimator.standing` for a process that does not follow the live feed (``i2v jobs show``,
    ``i2v generate``): the stage times are measured from the last ``look_back`` events of the events stream,
    sized from the jobs' specs that those events (terminal ones) or the work lines carry."""
    from services.gateway.events import frame  # here: events imports the schemas, which import this module

    if view.terminal:
        return Standing()
    specs: dict[str, GenerationParams] = {}
    estimator = Estimator(WorkQueues(js, cache_s=0.0), params_of=specs.get)
    last = (await js.stream_info(EVENTS_STREAM)).state.last_seq or 0
    if last:
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, last - look_back + 1)
        )
        sub = await js.subscribe(EVENTS_SUBJECTS, stream=EVENTS_STREAM, ordered_consumer=True, config=config)
        try:
            while True:
                msg = await sub.next_msg(timeout=2.0)
                item = frame(msg.metadata.sequence.stream, msg.data)
                if isinstance(item.event, Terminal):
                    specs[item.event.job.job_id] = item.event.job.params
                estimator.offer(item)
                if msg.metadata.sequence.stream >= last:
                    break
        finally:
            await sub.unsubscribe()
    return await estimator.standing(view)
