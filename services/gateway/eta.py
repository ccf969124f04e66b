"""Where a job stands in line and about when it ends: queue position from the work stream, ETA from
measured stage durations played forward.

**Queue position.** The work stream keeps each stage's commands on one subject until they are acked
(work-queue retention), so what is left on a stage's subject *is* its line, in stream order. Per stage,
:class:`WorkQueues` keeps the commands it has read by sequence (a command never changes, so each is read
once) and, at most once a second (or when a job newer than the last read asks), reads only the ones
published since (``get_msg`` with ``next``, from the last sequence read), then drops everything at or below
the stage's durable consumer's ack floor. A job's position is the number of commands before its own on that
subject; none once its stage has started it (``StageStarted``). A command a prefetching worker holds but has
not started still waits in line. Many clients polling cost one look-up of the consumer and of the subject's
count per stage per second, plus one read per new command. (An ephemeral consumer cannot read the line: a
work-queue stream allows one consumer per subject.)

**Stage times.** Each stage's time is measured (``StageFinished.seconds``) and divided by the job's size for
that stage: steps x native frames x pixels for latent, output frames x pixels for decode, one for the
others. The stages run side by side as a pipeline (the latent stage denoises job k+1 while decode decodes
job k) and, on one host, share its cores or its GPU: a stage runs slower with company. So :class:`Activity`
follows ``StageStarted``/``StageFinished`` and gives each measurement the share of its time that another
command was running; :class:`StageClock` fits, per stage, speed (units per second) as a line in that share
through the medians of the runs mostly alone and of those mostly in company (speed, not time, is what
mixes linearly: a run half in company did half its work at each speed). Its ends give the stage's time
alone and its slowdown in company; a stage never seen both ways takes the other stages' median slowdown,
and 1 when none has been. The time alone is the median of the recent measurements each brought back to
alone with that slowdown.

**ETA.** The lines are played forward (:func:`finish_times`): each stage takes commands in stream order with
as many workers as it has been seen running at once (replicas), what one stage finishes joins the next
one's line, and every command runs at its stage's pace alone while it is the only one running and at its
pace in company otherwise. A started command has done its share by its own progress (``StageProgress``) or
by the time since it started. The ETA is the job's end at mux; null while a stage it or any job in line
needs has no measurement yet (no prior).
"""

import asyncio
import contextlib
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING

import anyio.to_thread
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import TypeAdapter, ValidationError

from contracts.messages import Command, StageFinished, StageProgress, StageStarted, Terminal
from contracts.params import GenerationParams
from contracts.stages import PIPELINE_ORDER, Stage
from contracts.subjects import EVENTS_STREAM, EVENTS_SUBJECTS, WORK_STREAM, durable_name, work_subject
from services.gateway.progress import JobView

if TYPE_CHECKING:  # events imports the schemas, which import this module
    from services.gateway.events import Frame

log = logging.getLogger("i2v.gateway")

QUEUE_CACHE_S = 1.0
"""How long one read of a stage's line (and one play of the lines forward) answers every client asking."""
RECENT_SAMPLES = 16
"""Measured durations per stage the prediction draws on: recent enough to follow a change of load."""
IN_COMPANY = 0.5
"""A run that had company for at least this share of its time counts among those in company."""
MAX_SLOWDOWN = 4.0
"""The most a stage is taken to slow down in company: a bound on a line fitted through noisy medians."""
RECENT_RUNS = 256
"""Finished runs kept to measure the company of the next ones (a few times the commands running at once)."""
_MOST_DONE = 0.95
"""A started command's done share is held under this: one running past its prediction still has some left."""
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


@dataclass(frozen=True)
class Pace:
    """A stage's measured pace: seconds per unit of size while it runs alone, and how many times longer
    it takes while another command runs (on the same cores or GPU)."""

    seconds_per_unit: float
    slowdown: float = 1.0

    def seconds(self, stage: Stage, size: JobSize, in_company: bool = False) -> float:
        return self.seconds_per_unit * size.units(stage) * (self.slowdown if in_company else 1.0)


@dataclass(frozen=True)
class _Sample:
    speed: float
    """Units of size per second."""
    company: float
    """The share of its time another command was running."""


class StageClock:
    """Each stage's pace, from its recent measured durations and the company they ran in."""

    def __init__(self, recent: int = RECENT_SAMPLES) -> None:
        self._samples: dict[Stage, deque[_Sample]] = {stage: deque(maxlen=recent) for stage in PIPELINE_ORDER}

    def observe(self, stage: Stage, seconds: float, size: JobSize, company: float = 0.0) -> None:
        """One run of ``stage`` for a job of ``size`` took ``seconds``, with company for ``company`` of it."""
        speed = size.units(stage) / max(seconds, 1e-6)
        self._samples[stage].append(_Sample(speed, min(max(company, 0.0), 1.0)))

    def paces(self) -> dict[Stage, Pace]:
        """The pace of every stage measured so far."""
        own = {stage: self._own_slowdown(stage) for stage in PIPELINE_ORDER}
        fitted = [slowdown for slowdown in own.values() if slowdown is not None]
        pooled = statistics.median(fitted) if fitted else 1.0
        paces = {}
        for stage, samples in self._samples.items():
            if samples:
                slowdown = own[stage] or pooled
                # Each run's speed brought back to alone: it ran (1 - c) of its time at v and c at v / slowdown.
                alone = [s.speed / (1.0 - s.company + s.company / slowdown) for s in samples]
                paces[stage] = Pace(1.0 / statistics.median(alone), slowdown)
        return paces

    def predict(self, stage: Stage, size: JobSize, in_company: bool = False) -> float | None:
        """Seconds the stage should take for a job of ``size``; None before any measurement of it."""
        pace = self.paces().get(stage)
        return None if pace is None else pace.seconds(stage, size, in_company)

    def _own_slowdown(self, stage: Stage) -> float | None:
        """The slowdown in company that the stage's own runs show; None unless some ran mostly alone and
        some mostly in company. Speed is a line in the share of company: through the two groups' medians."""
        samples = self._samples[stage]
        alone = [s for s in samples if s.company < IN_COMPANY]
        shared = [s for s in samples if s.company >= IN_COMPANY]
        if not alone or not shared:
            return None
        c_lo, v_lo = statistics.median(s.company for s in alone), statistics.median(s.speed for s in alone)
        c_hi, v_hi = statistics.median(s.company for s in shared), statistics.median(s.speed for s in shared)
        slope = (v_hi - v_lo) / (c_hi - c_lo)
        if slope >= 0:
            return 1.0  # company did not slow it down
        speed_alone, speed_shared = v_lo - slope * c_lo, v_lo + slope * (1.0 - c_lo)
        return MAX_SLOWDOWN if speed_shared <= 0 else min(MAX_SLOWDOWN, speed_alone / speed_shared)


@dataclass
class _Run:
    started: float
    done: float | None = None
    """The share done by the stage's own progress events; None before the first."""


class Activity:
    """What the stages are running now and ran lately, from the events, in the time of ``offer``'s clock."""

    def __init__(self, recent: int = RECENT_RUNS) -> None:
        self._running: dict[tuple[str, Stage], _Run] = {}
        self._ran: deque[tuple[float, float, str, Stage]] = deque(maxlen=recent)
        self._at_once: dict[Stage, deque[int]] = {stage: deque(maxlen=32) for stage in PIPELINE_ORDER}

    def started(self, job_id: str, stage: Stage, at: float) -> None:
        self._running[(job_id, stage)] = _Run(at)
        if len(self._running) > _KNOWN_JOBS:  # a run whose end was never seen (its events read back in part)
            with contextlib.suppress(StopIteration):
                del self._running[next(iter(self._running))]

    def progressed(self, job_id: str, stage: Stage, step: int, total: int) -> None:
        run = self._running.get((job_id, stage))
        if run is not None and total > 0:
            run.done = min(max(step / total, 0.0), 1.0)

    def finished(self, job_id: str, stage: Stage, seconds: float, at: float) -> float:
        """Record the run that ended ``at`` after ``seconds``; return the share of its time another command
        was running."""
        self._running.pop((job_id, stage), None)
        begin = at - seconds
        others = [(a, b, s) for a, b, j, s in self._ran if (j, s) != (job_id, stage)]
        others += [(run.started, at, s) for (_, s), run in self._running.items()]
        self._ran.append((begin, at, job_id, stage))
        # Replicas: how many of the stage ran at this run's midpoint (a prefetched command's StageStarted
        # may come a moment before this StageFinished; it never reaches the midpoint).
        middle = (begin + at) / 2
        self._at_once[stage].append(1 + sum(1 for a, b, s in others if s == stage and a <= middle <= b))
        if seconds <= 0:
            return 0.0
        return _covered([(a, b) for a, b, _ in others], begin, at) / seconds

    def ended(self, job_id: str) -> None:
        """The job ended (a terminal event): a stage that failed or was cancelled sends no StageFinished."""
        for key in [key for key in self._running if key[0] == job_id]:
            del self._running[key]

    def run(self, job_id: str, stage: Stage) -> _Run | None:
        return self._running.get((job_id, stage))

    def workers(self, stage: Stage) -> int:
        """Commands of ``stage`` seen running at once lately (its replicas); 1 before any was seen."""
        return max(self._at_once[stage], default=1)


def _covered(spans: Iterable[tuple[float, float]], low: float, high: float) -> float:
    """How much of [low, high] the union of ``spans`` covers."""
    clipped = sorted((max(a, low), min(b, high)) for a, b in spans if b > low and a < high)
    covered, reach = 0.0, low
    for a, b in clipped:
        if b > reach:
            covered += b - max(a, reach)
            reach = b
    return covered


@dataclass(frozen=True)
class Queued:
    """One command in a stage's line."""

    sequence: int
    job_id: str
    size: JobSize | None
    started: float | None = None
    """When its stage started it (``StageStarted``); None while it waits, prefetched by a worker or not."""
    done: float | None = None
    """The share of it done, by the stage's progress events; None when unknown."""


@dataclass
class _Task:
    job_id: str
    size: JobSize
    stage: int
    """Index in PIPELINE_ORDER."""
    left: float = 0.0
    """Seconds of work left at the stage's pace alone."""


def finish_times(
    lines: Mapping[Stage, Sequence[Queued]],
    clock: StageClock,
    *,
    now: float = 0.0,
    workers: Callable[[Stage], int] = lambda _: 1,
) -> dict[str, float | None]:
    """Seconds from ``now`` until each job in ``lines`` leaves mux, playing the lines forward: each stage
    takes its line in order with ``workers(stage)`` workers, what a stage finishes joins the next stage's
    line, and a command runs at its stage's pace alone while it is the only one running and in company
    otherwise. None for every job while a stage that one of them needs is not yet measured (they share the
    stages, so one unknown leaves the others' waits unknown too). An unreadable command (size None) is left
    out: its stage dead-letters it at once."""
    paces = clock.paces()
    items = [
        (stage, q) for stage in PIPELINE_ORDER for q in sorted(lines.get(stage, ()), key=_seq) if q.size is not None
    ]
    needed = {later for stage, _ in items for later in PIPELINE_ORDER[PIPELINE_ORDER.index(stage) :]}
    if not needed <= paces.keys():
        return {q.job_id: None for _, q in items}

    def alone(task: _Task) -> float:
        stage = PIPELINE_ORDER[task.stage]
        return paces[stage].seconds(stage, task.size)

    # 1. Who runs now and how much each has left; who waits in which line, in order.
    waiting: dict[Stage, deque[_Task]] = {stage: deque() for stage in PIPELINE_ORDER}
    started: list[tuple[_Task, Queued]] = []
    for stage, q in items:
        assert q.size is not None
        task = _Task(q.job_id, q.size, PIPELINE_ORDER.index(stage))
        if q.started is None:
            waiting[stage].append(task)
        else:
            started.append((task, q))
    running: list[_Task] = []
    for task, q in started:
        stage = PIPELINE_ORDER[task.stage]
        task.left = alone(task)
        took = task.left * (paces[stage].slowdown if len(started) > 1 else 1.0)
        done = q.done if q.done is not None else (now - (q.started or now)) / took if took > 0 else 1.0
        task.left *= 1.0 - min(max(done, 0.0), _MOST_DONE)
        running.append(task)
    # 2. From one end of a command to the next: free workers take from their lines, then every running
    #    command advances at its pace until the first one ends.
    ends: dict[str, float | None] = {}
    elapsed = 0.0
    while True:
        for stage in PIPELINE_ORDER:
            free = workers(stage) - sum(1 for task in running if PIPELINE_ORDER[task.stage] == stage)
            while free > 0 and waiting[stage]:
                task = waiting[stage].popleft()
                task.left = alone(task)
                running.append(task)
                free -= 1
        if not running:
            return ends
        in_company = len(running) > 1
        rates = [1.0 / paces[PIPELINE_ORDER[task.stage]].slowdown if in_company else 1.0 for task in running]
        step = min(task.left / rate for task, rate in zip(running, rates, strict=True))
        elapsed += step
        still: list[_Task] = []
        for task, rate in zip(running, rates, strict=True):
            task.left -= step * rate
            if task.left > 1e-9:
                still.append(task)
            elif task.stage + 1 < len(PIPELINE_ORDER):
                task.stage += 1
                waiting[PIPELINE_ORDER[task.stage]].append(task)
            else:
                ends[task.job_id] = elapsed
        running = still


def _seq(item: Queued) -> int:
    return item.sequence


@dataclass
class _Line:
    read_to: int = 0
    commands: dict[int, Queued] = field(default_factory=dict)
    read_at: float = float("-inf")
    read_wall: float = float("-inf")
    """When it was last read, in wall-clock seconds (to compare with a job's submit time)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class WorkQueues:
    """Each stage's line of commands on the work stream, read at most once per :data:`QUEUE_CACHE_S`."""

    def __init__(self, js: JetStreamContext, cache_s: float = QUEUE_CACHE_S) -> None:
        self._js = js
        self._cache_s = cache_s
        self._lines = {stage: _Line() for stage in PIPELINE_ORDER}

    async def line(self, stage: Stage, newer_than: float = float("-inf")) -> list[Queued]:
        """The stage's commands in stream order, as of at most ``cache_s`` ago and read after the wall-clock
        time ``newer_than`` (a job submitted since the last read is not in it yet)."""
        line = self._lines[stage]
        async with line.lock:
            if time.monotonic() - line.read_at >= self._cache_s or line.read_wall <= newer_than:
                read_wall = time.time()
                try:
                    await self._refresh(stage, line)
                except (nats.errors.Error, TimeoutError) as exc:
                    # A place in line is a courtesy: the job resource is answered with the last line read.
                    log.warning("could not read the %s line of the work stream: %r", stage, exc)
                line.read_at, line.read_wall = time.monotonic(), read_wall
            return sorted(line.commands.values(), key=_seq)

    async def lines(self, newer_than: float = float("-inf")) -> dict[Stage, list[Queued]]:
        read = await asyncio.gather(*(self.line(stage, newer_than) for stage in PIPELINE_ORDER))
        return dict(zip(PIPELINE_ORDER, read, strict=True))

    async def _refresh(self, stage: Stage, line: _Line) -> None:
        acked = await self._ack_floor(stage)
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
        line.commands = kept

    async def _ack_floor(self, stage: Stage) -> int:
        """The stream sequence of the stage durable's ack floor; 0 before it exists."""
        try:
            info = await self._js.consumer_info(WORK_STREAM, durable_name(stage))
        except NotFoundError:
            return 0
        return info.ack_floor.stream_seq or 0


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
    """Learns stage durations and what runs from the live feed (:meth:`offer`) and answers where a job
    stands. ``now`` is the clock of the events' times (wall-clock seconds)."""

    def __init__(
        self,
        queues: WorkQueues,
        params_of: Callable[[str], GenerationParams | None],
        now: Callable[[], float] = time.time,
    ) -> None:
        self.queues = queues
        self.clock = StageClock()
        self.activity = Activity()
        self._params_of = params_of
        """Blocking look-up of a job's parameters (the jobs index), for a measured job not seen in line."""
        self._now = now
        self._sizes: dict[str, JobSize] = {}
        self._unmeasured: list[tuple[StageFinished, float]] = []
        self._plan: tuple[float, float, dict[str, float | None]] | None = None
        """(monotonic and wall-clock time it was made, each job's end from then) of the last play forward;
        dropped when a command starts or ends."""

    def offer(self, item: "Frame", at: float | None = None) -> None:
        """Follow one event of the feed, published at ``at`` (by default now: the live feed). A
        StageFinished is kept with the share of its time it had company; it is sized and learned on the
        next estimate."""
        event = item.event
        at = self._now() if at is None else at
        if isinstance(event, StageStarted | StageFinished | Terminal):
            self._plan = None  # what runs has changed
        if isinstance(event, StageStarted):
            self.activity.started(event.job_id, event.stage, at)
        elif isinstance(event, StageProgress):
            self.activity.progressed(event.job_id, event.stage, event.step, event.total)
        elif isinstance(event, StageFinished):
            company = self.activity.finished(event.job_id, event.stage, event.seconds, at)
            self._unmeasured.append((event, company))
            del self._unmeasured[: -RECENT_SAMPLES * len(PIPELINE_ORDER)]
        elif isinstance(event, Terminal):
            self.activity.ended(event.job.job_id)

    def learn(self) -> None:
        """Size the durations offered since the last call and learn them. Blocking (the jobs index)."""
        pending, self._unmeasured = self._unmeasured, []
        for finished, company in pending:
            size = self._size(finished.job_id)
            if size is not None:
                self.clock.observe(finished.stage, finished.seconds, size, company)

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
        """The job's queue position in the stage it waits for (None once that stage started it, or when it
        has ended) and its ETA in seconds (None when ended or not yet predictable)."""
        if view.terminal:
            return Standing()
        lines = await self.queues.lines(newer_than=view.created_at.timestamp())
        if not any(item.job_id == view.job_id for line in lines.values() for item in line):
            # A submit publishes its command a moment after it makes the job: another request may have read
            # the lines in between. Read them again, once, rather than leave the job without a place.
            lines = await self.queues.lines(newer_than=time.time())
        for line in lines.values():
            for item in line:
                if item.size is not None:
                    self._sizes.setdefault(item.job_id, item.size)
        self._sizes.setdefault(view.job_id, size_of(view.params))
        if self._unmeasured:
            await anyio.to_thread.run_sync(self.learn)
        # A job moves on by publishing the next command before acking this one: its latest stage counts.
        where: dict[str, Stage] = {}
        for stage in PIPELINE_ORDER:
            for item in lines[stage]:
                where[item.job_id] = stage
        waits_in = where.get(view.job_id)
        if waits_in is None:
            return Standing()
        lines = {
            stage: [self._as_running(q, stage) for q in line if where[q.job_id] == stage]
            for stage, line in lines.items()
        }
        line = lines[waits_in]
        mine = next(i for i, q in enumerate(line) if q.job_id == view.job_id)
        position = None if line[mine].started is not None else mine
        eta = self._eta(view.job_id, lines)
        return Standing(position, None if eta is None else round(eta, 1))

    def _as_running(self, item: Queued, stage: Stage) -> Queued:
        run = self.activity.run(item.job_id, stage)
        return item if run is None else replace(item, started=run.started, done=run.done)

    def _eta(self, job_id: str, lines: Mapping[Stage, Sequence[Queued]]) -> float | None:
        """Seconds until the job ends, from a play forward of the lines at most :data:`QUEUE_CACHE_S` old
        (every client asking within it shares one), made again for a job it did not hold and after a command
        started or ended."""
        plan = self._plan
        if plan is None or time.monotonic() - plan[0] >= QUEUE_CACHE_S or job_id not in plan[2]:
            now = self._now()
            ends = finish_times(lines, self.clock, now=now, workers=self.activity.workers)
            plan = self._plan = (time.monotonic(), now, ends)
        end = plan[2].get(job_id)
        return None if end is None else max(0.0, end - (self._now() - plan[1]))


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
                estimator.offer(item, at=msg.metadata.timestamp.timestamp())
                if msg.metadata.sequence.stream >= last:
                    break
        finally:
            await sub.unsubscribe()
    return await estimator.standing(view)
