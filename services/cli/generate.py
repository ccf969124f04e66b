"""``i2v generate``: one picture to one MP4 through the whole pipeline, with live progress."""

import asyncio
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts.messages import (
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobRejected,
    StageFinished,
    StageProgress,
    StageStarted,
)
from contracts.params import GenerationParams
from contracts.stages import PIPELINE_ORDER, Stage
from infra.objectstore import S3ObjectStore
from services.cli.errors import CliError
from services.config import Settings
from services.jobclient import JobClient
from services.objectstore import object_store_from
from services.stack.embedded import LOCAL_ACCOUNT
from services.telemetry import tracer_provider


@dataclass(frozen=True)
class GenerateRequest:
    image: Path
    output: Path
    params: GenerationParams
    account: str
    timeout_s: float


def check_locally(request: GenerateRequest) -> bytes:
    """Fail fast, before any server starts: the file, the model and the image itself."""
    from pipeline.image import ImageRejected, prepare_image
    from pipeline.models import ModelNotFoundError, model_defaults

    try:
        data = request.image.read_bytes()
    except FileNotFoundError:
        raise CliError(f"{request.image}: no such file") from None
    except OSError as exc:
        raise CliError(f"{request.image}: cannot read ({exc.strerror})") from None
    try:
        defaults = model_defaults(request.params.model)
    except ModelNotFoundError as exc:
        raise CliError(str(exc)) from None
    resolution = request.params.resolution
    try:
        prepare_image(
            data,
            model_size=(defaults.width, defaults.height),
            requested=(resolution.width, resolution.height) if resolution else None,
        )
    except ImageRejected as exc:
        raise CliError(f"{request.image}: {exc}") from None
    if not request.output.parent.exists():
        raise CliError(f"output folder {request.output.parent} does not exist")
    return data


def run_generate(request: GenerateRequest, settings: Settings, *, embedded_state: Path | None) -> int:
    """Run one job; start the embedded stack first when no NATS/S3 URLs are set."""
    data = check_locally(request)
    with ExitStack() as stack:
        if not (settings.nats_url and settings.s3_endpoint):
            from services.stack.embedded import EmbeddedStack

            state = embedded_state or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="i2v-")))
            say("starting the embedded stack (nats-server, SeaweedFS, 5 services)...")
            embedded = stack.enter_context(EmbeddedStack(state, say=say, extra_env={"I2V_MODEL": request.params.model}))
            settings = embedded.settings()
        return asyncio.run(_submit_and_follow(request, data, settings))


async def _submit_and_follow(request: GenerateRequest, data: bytes, settings: Settings) -> int:
    store = object_store_from(settings)
    tracing = tracer_provider("cli", settings.trace_file)
    tracer = tracing.get_tracer("i2v.cli")
    client = await JobClient.connect(settings.nats_url, store)
    try:
        with tracer.start_as_current_span("i2v generate") as span:
            started = time.perf_counter()
            job = await client.submit(data, request.params, request.account or LOCAL_ACCOUNT)
            span.set_attribute("i2v.job_id", job.job_id)
            say(f"job {job.job_id}  seed {job.params.seed}  {job.params.frame_count} frames at {job.params.fps} fps")
            bars = ProgressBars()
            try:
                outcome = await asyncio.wait_for(_follow(client, job.job_id, bars), request.timeout_s)
            except TimeoutError:
                raise CliError(f"job {job.job_id} did not finish within {request.timeout_s:.0f}s", 1) from None
            finally:
                bars.close()
            wall = time.perf_counter() - started
        return _report(outcome, bars.timings, request, store, wall)
    finally:
        await client.close()
        tracing.shutdown()


async def _follow(
    client: JobClient, job_id: str, bars: "ProgressBars"
) -> JobCompleted | JobFailed | JobRejected | JobCancelled:
    async for item in client.follow(job_id):
        event = item.event
        if isinstance(event, StageStarted | StageProgress | StageFinished):
            bars.update(event)
        elif isinstance(event, JobCompleted | JobFailed | JobRejected | JobCancelled):
            return event
    raise CliError(f"event stream of job {job_id} ended without a result", 1)


def _report(
    outcome: JobCompleted | JobFailed | JobRejected | JobCancelled,
    timings: dict[Stage, float],
    request: GenerateRequest,
    store: S3ObjectStore,
    wall: float,
) -> int:
    job = outcome.job
    if isinstance(outcome, JobRejected):
        raise CliError(f"job {job.job_id} rejected: {outcome.reason}", 1)
    if isinstance(outcome, JobFailed):
        raise CliError(f"job {job.job_id} failed at {outcome.stage}: {outcome.reason}", 1)
    if isinstance(outcome, JobCancelled):
        raise CliError(f"job {job.job_id} was cancelled", 1)
    request.output.write_bytes(store.get(outcome.video))
    stages = "  ".join(f"{s.value} {timings[s]:.2f}s" for s in PIPELINE_ORDER if s in timings)
    print(f"video     {request.output.resolve()}")
    print(f"job       {job.job_id}")
    print(f"price     {outcome.price} points")
    print(f"seed      {job.params.seed}")
    print(
        f"output    {outcome.frame_count} frames, {outcome.fps} fps, {outcome.duration_s:g} s, "
        f"{outcome.width}x{outcome.height}, H.264"
    )
    print(f"stages    {stages}")
    print(f"total     {wall:.2f}s from submit to done")
    return 0


class ProgressBars:
    """A bar per stage on stderr while it runs (denoising step by step); plain lines when not a terminal."""

    def __init__(self) -> None:
        self.timings: dict[Stage, float] = {}
        self._bar: Any = None
        self._stage: Stage | None = None
        self._tty = sys.stderr.isatty()

    def update(self, event: StageStarted | StageProgress | StageFinished) -> None:
        from tqdm import tqdm

        if isinstance(event, StageStarted):
            self.close()
            self._stage = event.stage
            retry = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            if self._tty:
                self._bar = tqdm(
                    total=1,
                    desc=f"{event.stage.value:>7}{retry}",
                    file=sys.stderr,
                    leave=True,
                    bar_format="{desc} |{bar:30}| {n_fmt}/{total_fmt} [{elapsed}]",
                )
            else:
                say(f"{event.stage.value:>7}: started{retry}")
        elif isinstance(event, StageProgress):
            if self._bar is not None and event.stage == self._stage:
                self._bar.total = event.total
                self._bar.n = event.step
                self._bar.refresh()
            elif not self._tty and event.stage == Stage.LATENT:
                say(f"{event.stage.value:>7}: step {event.step}/{event.total}")
        else:
            self.timings[event.stage] = event.seconds
            if self._bar is not None and event.stage == self._stage:
                self._bar.n = self._bar.total
                self.close()
            elif not self._tty:
                say(f"{event.stage.value:>7}: done in {event.seconds:.2f}s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def params_from(values: dict[str, object]) -> GenerationParams:
    """GenerationParams from CLI values; a bad value becomes one line naming the option."""
    try:
        return GenerationParams.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "value"
        option = "--" + field.replace("_", "-")
        raise CliError(f"{option}: {first['msg'].lower()} (got {first.get('input')!r})") from None
