"""``i2v generate``: one picture to one video through the whole pipeline, with live progress."""

import asyncio
import os
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nats.errors
from anyio import to_thread
from pydantic import ValidationError

from contracts.messages import (
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobRejected,
    JobSpec,
    StageFinished,
    StageProgress,
    StageStarted,
)
from contracts.params import MAX_SEED, GenerationParams, Resolution
from contracts.stages import PIPELINE_ORDER, Stage
from contracts.webhooks import DEFAULT_WEBHOOK_EVENTS, Webhook, check_webhook_url, parse_webhook_events
from infra.objectstore import ObjectStoreError, ObjectStoreUnavailableError, S3ObjectStore
from services.cli.errors import CliError
from services.config import Settings
from services.gateway.eta import standing_once
from services.gateway.progress import JobView
from services.jobclient import BusUnreachableError, JobClient
from services.objectstore import object_store_from
from services.stack.embedded import LOCAL_ACCOUNT
from services.telemetry import tracer_provider
from services.threads import available_cores


@dataclass(frozen=True)
class GenerateRequest:
    image: Path
    output: Path
    params: GenerationParams
    account: str
    timeout_s: float
    webhook: Webhook | None = None
    variations: int = 1
    """Jobs of consecutive seeds; the first writes ``output``, the next ones ``out-2.mp4``, ``out-3.mp4``, …"""


def variation_outputs(output: Path, variations: int) -> list[Path]:
    """Where each variation's video goes: ``output`` itself, then the same name with ``-2``, ``-3``, …"""
    return [output, *(output.with_name(f"{output.stem}-{n}{output.suffix}") for n in range(2, variations + 1))]


def variation_params(params: GenerationParams, variations: int) -> list[GenerationParams]:
    """One job's parameters per variation: seeds seed, seed + 1, … (a random seed drawn once), wrapping
    within the seed's range as the gateway's ``variations`` does."""
    first = params.with_resolved_seed().seed
    return [params.model_copy(update={"seed": (first + n) % (MAX_SEED + 1)}) for n in range(variations)]


def webhook_of(url: str | None, events: str | None, settings: Settings) -> Webhook | None:
    """``--webhook`` and ``--webhook-events`` as the job's webhook; one-line CliError for a bad URL, an
    unknown event, or a host on a loopback or private address where the stack does not allow them (an
    embedded stack, started when no servers are named, allows them)."""
    from services.webhooks.destination import WebhookRefusedError, resolve

    if url is None:
        if events is not None:
            raise CliError("--webhook-events: give --webhook URL too")
        return None
    try:
        webhook = Webhook(
            url=check_webhook_url(url), events=parse_webhook_events(events or ",".join(DEFAULT_WEBHOOK_EVENTS))
        )
        resolve(url, allow_private=settings.webhook_allow_private or not settings.nats_url)
    except WebhookRefusedError as exc:
        raise CliError(f"--{exc}") from None
    except ValueError as exc:
        raise CliError(f"--{str(exc).replace('webhook_events', 'webhook-events')}") from None
    return webhook


def check_output(output: Path) -> None:
    """Refuse an output the video could not be written to, before any work is done."""
    if output.is_dir():
        raise CliError(f"-o {output}: is a folder; name a file, e.g. -o {output / 'out.mp4'}")
    folder = output.parent
    if not folder.exists():
        raise CliError(f"-o {output}: folder {folder} does not exist")
    if not folder.is_dir():
        raise CliError(f"-o {output}: {folder} is not a folder")
    existed = output.exists()
    try:
        # Opening is the only honest test (permissions, read-only mounts, root); append keeps a file as it was.
        with output.open("ab"):
            pass
    except OSError as exc:
        raise CliError(f"-o {output}: cannot write there ({exc.strerror})") from None
    if not existed:
        output.unlink(missing_ok=True)


def check_locally(request: GenerateRequest) -> tuple[bytes, tuple[int, int]]:
    """Fail fast, before any server starts: the output, the file, the model and the image itself.
    Returns the image's bytes and the (width, height) the video will be made at."""
    from pipeline.image import ImageRejected, prepare_image
    from pipeline.model_catalog import ModelNotFoundError, model_defaults

    for output in variation_outputs(request.output, request.variations):
        check_output(output)
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
        prepared = prepare_image(
            data,
            model_size=(defaults.width, defaults.height),
            requested=(resolution.width, resolution.height) if resolution else None,
        )
    except ImageRejected as exc:
        raise CliError(f"{request.image}: {exc}") from None
    return data, (prepared.width, prepared.height)


def with_preset(request: GenerateRequest, data: bytes, video_size: tuple[int, int]) -> GenerateRequest:
    """The request with its preset resolved against the picture (options given win), each value said
    with its reason on stderr."""
    from pipeline.presets import resolve_preset, small_picture

    try:
        suggestion = resolve_preset(small_picture(data), request.params, video_size)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"--preset {request.params.preset}: {first['loc'][0]}: {first['msg'].lower()}") from None
    say(f"preset {suggestion.preset}: {suggestion.reasons['preset']}")
    for name, value in suggestion.values.items():
        say(f"  --{name.replace('_', '-')} {value}  ({suggestion.reasons[name]})")
    if suggestion.kept:
        say(f"  kept as given: {', '.join('--' + name.replace('_', '-') for name in suggestion.kept)}")
    return replace(request, params=suggestion.params)


def run_generate(request: GenerateRequest, settings: Settings, *, embedded_state: Path | None) -> int:
    """Run one job; start the embedded stack first when no NATS/S3 URLs are set."""
    data, video_size = check_locally(request)
    if request.params.preset:
        # Before the job is submitted, so it is priced and recorded with the preset's values.
        request = with_preset(request, data, video_size)
    with ExitStack() as stack:
        if not (settings.nats_url and settings.s3_endpoint):
            from services.stack.embedded import EmbeddedStack

            state = embedded_state or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="i2v-")))
            say("starting the embedded stack (nats-server, SeaweedFS, 5 services)...")
            extra_env = {"I2V_MODEL": request.params.model, **_one_job_threads(settings, request.variations)}
            embedded = stack.enter_context(EmbeddedStack(state, say=say, extra_env=extra_env))
            settings = embedded.settings()
        return asyncio.run(_submit_and_follow(request, data, settings))


def _one_job_threads(settings: Settings, jobs: int) -> dict[str, str]:
    """A stack started for one job: its stages take turns, so each may use every core instead of a share
    (several variations overlap, so they keep the split). A share set in the shell stays."""
    if jobs > 1:
        return {}
    cores = str(settings.threads or available_cores())
    names = (f"I2V_THREADS_{service.upper()}" for service in ("ingest", "latent", "decode", "mux"))
    return {name: os.environ.get(name, cores) for name in names}


async def reach(settings: Settings) -> tuple[JobClient, S3ObjectStore]:
    """Connect to NATS and try S3 at once; every server that fails is named in one line."""
    try:
        store = object_store_from(settings)
    except ValueError as exc:
        raise CliError(f"--s3: {exc}") from None
    bus, probe = await asyncio.gather(
        JobClient.from_settings(settings, store),
        to_thread.run_sync(_probe_store, store, settings),
        return_exceptions=True,
    )
    problems = [str(bus)] if isinstance(bus, BusUnreachableError) else []
    if isinstance(probe, CliError):
        problems.append(str(probe))
    for unexpected in (bus, probe):
        if isinstance(unexpected, BaseException) and not isinstance(unexpected, BusUnreachableError | CliError):
            raise unexpected
    if problems:
        if isinstance(bus, JobClient):
            await bus.close()
        raise CliError("; ".join(problems), 1)
    assert isinstance(bus, JobClient)
    return bus, store


def _probe_store(store: S3ObjectStore, settings: Settings) -> None:
    try:
        store.head("i2v-cli-probe")
    except ObjectStoreUnavailableError as exc:
        raise CliError(f"cannot reach S3 at {settings.s3_endpoint} ({_cause(exc)})") from None
    except ObjectStoreError as exc:
        keys = "I2V_S3_ACCESS_KEY and I2V_S3_SECRET_KEY"
        given = "are refused" if settings.s3_access_key or settings.s3_secret_key else "are not set"
        raise CliError(
            f"S3 at {settings.s3_endpoint} refused access ({_cause(exc)}): its keys {given}; set {keys} "
            "(`i2v stack up` writes them to its state folder's stack.env)"
        ) from None


def _cause(exc: BaseException) -> str:
    """The innermost reason, in a few words: 'connection refused', 'AccessDenied'."""
    root: BaseException = exc
    while root.__cause__ is not None:
        root = root.__cause__
    code = getattr(root, "code", None)
    if isinstance(code, str):
        return code
    for inner in (root, *getattr(root, "args", ())):
        if isinstance(inner, ConnectionRefusedError) or "Connection refused" in str(inner):
            return "connection refused"
    return " ".join(str(root).split())[:160] or type(root).__name__


async def _submit_and_follow(request: GenerateRequest, data: bytes, settings: Settings) -> int:
    client, store = await reach(settings)
    tracing = tracer_provider("cli", settings.trace_file)
    tracer = tracing.get_tracer("i2v.cli")
    try:
        with tracer.start_as_current_span("i2v generate") as span:
            started = time.perf_counter()
            account = request.account or LOCAL_ACCOUNT
            # Every variation is queued before any is followed: the stages run them side by side.
            jobs = [
                await client.submit(data, params, account, webhook=request.webhook)
                for params in variation_params(request.params, request.variations)
            ]
            span.set_attribute("i2v.job_id", jobs[0].job_id)
            for job, output in zip(jobs, variation_outputs(request.output, request.variations), strict=True):
                say(
                    f"job {job.job_id}  seed {job.params.seed}  {job.params.frame_count} frames at {job.params.fps} fps"
                )
                bars = ProgressBars(ends_in_s=await eta_of(client, job))
                left_s = request.timeout_s - (time.perf_counter() - started)
                try:
                    outcome = await asyncio.wait_for(follow_outcome(client, job.job_id, bars), left_s)
                except TimeoutError:
                    raise CliError(f"job {job.job_id} did not finish within {request.timeout_s:.0f}s", 1) from None
                finally:
                    bars.close()
                wall = time.perf_counter() - started
                report_outcome(outcome, bars.timings, output, store, wall)
        return 0
    except ObjectStoreError as exc:
        raise CliError(f"object store at {settings.s3_endpoint}: {exc}", 1) from None
    except nats.errors.Error as exc:
        raise CliError(f"NATS at {settings.nats_url}: {exc}", 1) from None
    finally:
        await client.close()
        tracing.shutdown()


async def follow_outcome(
    client: JobClient, job_id: str, bars: "ProgressBars"
) -> JobCompleted | JobFailed | JobRejected | JobCancelled:
    """The job's end, its stages shown on ``bars`` meanwhile."""
    async for item in client.follow(job_id):
        event = item.event
        if isinstance(event, StageStarted | StageProgress | StageFinished):
            bars.update(event)
        elif isinstance(event, JobCompleted | JobFailed | JobRejected | JobCancelled):
            return event
    raise CliError(f"event stream of job {job_id} ended without a result", 1)


def report_outcome(
    outcome: JobCompleted | JobFailed | JobRejected | JobCancelled,
    timings: dict[Stage, float],
    output: Path,
    store: S3ObjectStore,
    wall: float,
) -> int:
    """Write a completed job's video to ``output`` and report it; one-line CliError for any other end."""
    job = outcome.job
    if isinstance(outcome, JobRejected):
        raise CliError(f"job {job.job_id} rejected: {outcome.reason}", 1)
    if isinstance(outcome, JobFailed):
        raise CliError(f"job {job.job_id} failed at {outcome.stage}: {outcome.reason}", 1)
    if isinstance(outcome, JobCancelled):
        raise CliError(f"job {job.job_id} was cancelled", 1)
    try:
        output.write_bytes(store.get(outcome.video))
    except OSError as exc:
        raise CliError(f"job {job.job_id} done but {output} cannot be written: {exc.strerror}", 1) from None
    stages = "  ".join(f"{s.value} {timings[s]:.2f}s" for s in PIPELINE_ORDER if s in timings)
    print(f"video     {output.resolve()}")
    print(f"job       {job.job_id}")
    print(f"price     {outcome.price} points")
    print(f"seed      {job.params.seed}")
    if job.params.motion_prompt:
        unknown = f"  (not understood: {' '.join(outcome.camera_unknown)})" if outcome.camera_unknown else ""
        words = outcome.camera_words
        moves = ", ".join(" ".join(words[i : i + 3]) for i in range(0, len(words), 3))
        print(f"camera    {moves}{unknown}")
    print(
        f"output    {outcome.frame_count} frames, {outcome.fps} fps, {outcome.duration_s:g} s, "
        f"{outcome.width}x{outcome.height}, {outcome.format}"
    )
    print(f"stages    {stages}")
    print(f"total     {wall:.2f}s from submit to done")
    return 0


class ProgressBars:
    """A bar per stage on stderr while it runs (denoising step by step); plain lines when not a terminal."""

    def __init__(self, ends_in_s: float | None = None) -> None:
        self.timings: dict[Stage, float] = {}
        self._ends_at = None if ends_in_s is None else time.monotonic() + ends_in_s
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
                    bar_format="{desc} |{bar:30}| {n_fmt}/{total_fmt} [{elapsed}]{postfix}",
                )
                self._bar.set_postfix_str(self._left().removeprefix(", "), refresh=False)
            else:
                say(f"{event.stage.value:>7}: started{retry}{self._left()}")
        elif isinstance(event, StageProgress):
            if self._bar is not None and event.stage == self._stage:
                self._bar.total = event.total
                self._bar.n = event.step
                self._bar.set_postfix_str(self._left().removeprefix(", "), refresh=False)
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

    def _left(self) -> str:
        """``, about 40 s left`` from the ETA at submit (tqdm puts its own comma before a postfix); "" without."""
        if self._ends_at is None:
            return ""
        return f", about {max(0.0, self._ends_at - time.monotonic()):.0f} s left"


async def eta_of(client: JobClient, job: JobSpec) -> float | None:
    """Seconds until the queued job should end (services/gateway/eta.py); None before the stages are measured,
    or when the line cannot be read (the bar goes without)."""
    with suppress(TimeoutError, nats.errors.Error):
        return (await standing_once(client.jetstream(), JobView.submitted(job))).eta_s
    return None


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


_SIDE = 64
_MIN_SIDE, _MAX_SIDE = 64, 2048


def parse_resolution(text: str) -> Resolution:
    """``WxH`` from --resolution; a bad size says what is allowed and the nearest size that is."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise CliError(f"--resolution: give it as WIDTHxHEIGHT, e.g. 1024x576 (got {text!r})")
    width, height = (int(p) for p in parts)
    try:
        return Resolution(width=width, height=height)
    except ValidationError:
        nearest = "x".join(str(_nearest_side(side)) for side in (width, height))
        raise CliError(
            f"--resolution {text}: width and height must be multiples of {_SIDE} "
            f"from {_MIN_SIDE} to {_MAX_SIDE}; the nearest valid size is {nearest}"
        ) from None


def _nearest_side(side: int) -> int:
    return min(max(round(side / _SIDE) * _SIDE, _MIN_SIDE), _MAX_SIDE)


def output_format(output: Path, asked: str | None) -> str:
    """The format of ``-o output``: ``--format`` when given (and fitting the extension), else the extension's."""
    from pipeline.video import extension_of_format, format_from_extension, parse_format

    if asked is None:
        try:
            return format_from_extension(output).value
        except ValueError:
            raise CliError(
                f"-o {output}: cannot tell the format from the name; end it in .mp4, .webm, .gif or .webp, "
                "or give --format"
            ) from None
    try:
        chosen = parse_format(asked)
    except ValueError:
        raise CliError(f"--format: must be one of mp4, webm, gif, webp, av1 (got {asked!r})") from None
    extension = extension_of_format(chosen)
    if output.suffix.lower() != extension:
        raise CliError(f"--format {chosen.value} writes a {extension} file but -o {output} ends in {output.suffix!r}")
    return chosen.value


def params_from(values: dict[str, object]) -> GenerationParams:
    """GenerationParams from CLI values; a bad value becomes one line naming the option."""
    try:
        return GenerationParams.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "value"
        option = "--" + field.replace("_", "-")
        raise CliError(f"{option}: {first['msg'].lower()} (got {first.get('input')!r})") from None
