"""``i2v jobs`` and ``i2v dlq``: operate on a running stack (found as :mod:`services.cli.settings` says)."""

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import nats.errors
from anyio import to_thread
from pydantic import ValidationError

from contracts.extension import ExtensionRefused
from contracts.keys import command_key
from contracts.messages import DeadLetter, JobCompleted, JobSpec, JobSubmitted, PointsReserved
from contracts.params import GenerationParams
from contracts.stages import PIPELINE_ORDER, Stage
from contracts.webhooks import Webhook
from infra.objectstore import ObjectMissingError, ObjectStoreError, S3ObjectStore
from services.cli.errors import CliError
from services.config import Settings
from services.gateway.eta import Standing, describe, standing_once
from services.gateway.progress import JobStatus, JobView
from services.jobclient import BusUnreachableError, JobClient, JobHistory, JobNotFoundError, JobStateError
from services.objectstore import object_store_from

T = TypeVar("T")


def _with_client(settings: Settings, action: Callable[[JobClient], Awaitable[T]]) -> T:
    """Run ``action`` on a connected client; every failure the user can act on becomes one line."""
    store = store_for(settings)

    async def run() -> T:
        try:
            client = await JobClient.from_settings(settings, store)
        except BusUnreachableError as exc:
            raise CliError(f"{exc}; is `i2v stack up` running?", 1) from None
        try:
            return await action(client)
        except JobNotFoundError as exc:
            raise CliError(f"no job {exc.args[0]!r} on this stack", 1) from None
        except JobStateError as exc:
            raise CliError(str(exc), 1) from None
        except ObjectStoreError as exc:
            raise CliError(f"object store at {settings.s3_endpoint}: {exc}", 1) from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise CliError(f"NATS at {settings.nats_url}: {exc or type(exc).__name__}", 1) from None
        finally:
            await client.close()

    return asyncio.run(run())


def store_for(settings: Settings) -> S3ObjectStore:
    """The stack's object store; a malformed endpoint is a one-line error."""
    try:
        return object_store_from(settings)
    except ValueError as exc:
        raise CliError(f"setting I2V_S3_ENDPOINT: {exc}") from None


def cancel_job(settings: Settings, job_id: str) -> int:
    history = _with_client(settings, lambda client: client.cancel(job_id, reason="i2v jobs cancel"))
    if history.terminal is not None:
        status = history.terminal.type.removeprefix("Job").lower()
        raise CliError(f"job {job_id} already ended ({status}); there is nothing to cancel", 1)
    print(f"cancel requested for job {job_id} (generation {history.generation})")
    return 0


def replay_job(settings: Settings, job_id: str, from_stage: Stage | None) -> int:
    job = _with_client(settings, lambda client: client.replay(job_id, from_stage))
    print(f"job {job_id} replaying as generation {job.generation}" + (f" from {from_stage}" if from_stage else ""))
    return 0


def extend_job(
    settings: Settings,
    job_id: str,
    changes: dict[str, object],
    *,
    account: str,
    output: Path | None,
    webhook: Webhook | None,
    timeout_s: float,
) -> int:
    """Queue a job continuing ``job_id``'s video from its last frame, follow it, and write the whole video to
    ``output`` (default ``<new job>.<ext>`` here)."""
    from pipeline.video import extension_of_format, parse_format
    from services.cli.generate import ProgressBars, check_output, eta_of, follow_outcome, report_outcome, say

    if output is not None:
        check_output(output)
    store = store_for(settings)

    async def run(client: JobClient) -> int:
        started = time.perf_counter()
        try:
            job = await client.extension(job_id, account, changes, webhook)
        except ExtensionRefused as exc:
            raise CliError(f"--{exc.field.replace('_', '-')}{str(exc).removeprefix(exc.field)}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            option = "--" + str(first["loc"][0] if first["loc"] else "value").replace("_", "-")
            raise CliError(f"{option}: {first['msg'].lower()} (got {first.get('input')!r})") from None
        extension = extension_of_format(parse_format(job.params.format))
        target = output if output is not None else Path(f"{job.job_id}{extension}")
        if target.suffix.lower() != extension:
            raise CliError(f"-o {target}: job {job_id}'s video is {job.params.format}; name a {extension} file")
        await client.submit_extension(job)
        parent = job.extends
        assert parent is not None
        say(
            f"job {job.job_id}  extends {job_id}  seed {job.params.seed}  {parent.frame_count} + "
            f"{job.params.frame_count} frames at {job.params.fps} fps"
        )
        bars = ProgressBars(ends_in_s=await eta_of(client, job))
        try:
            outcome = await asyncio.wait_for(follow_outcome(client, job.job_id, bars), timeout_s)
        except TimeoutError:
            raise CliError(f"job {job.job_id} did not finish within {timeout_s:.0f}s", 1) from None
        finally:
            bars.close()
        return report_outcome(outcome, bars.timings, target, store, time.perf_counter() - started)

    return _with_client(settings, run)


_KEY_WIDTH = len("submitted: ")


@dataclass(frozen=True)
class JobRecord:
    """What the stack knows of one job: its events folded as the API shows them, and what they leave out."""

    history: JobHistory
    view: JobView | None
    """None when neither an event nor a stored command carries the job's parameters."""
    reserved: int | None
    """Points billing reserved for a job still running (events carry the price only at the end)."""
    standing: Standing = field(default_factory=Standing)
    """Its place in line and ETA while it runs (services/gateway/eta.py)."""

    @property
    def completed(self) -> JobCompleted | None:
        terminal = self.history.terminal
        return terminal if isinstance(terminal, JobCompleted) else None


def _record(settings: Settings, job_id: str) -> JobRecord:
    store = store_for(settings)

    async def read(client: JobClient) -> JobRecord:
        history = await client.history(job_id)
        if not history.events:
            raise JobNotFoundError(job_id)
        # Stage events name the job only; its spec rides the terminal event or the stored submission.
        spec = history.spec or await to_thread.run_sync(_stored_spec, store, job_id)
        reserved = None
        if history.terminal is None:
            reserved = await to_thread.run_sync(_stored_price, store, job_id, history.generation)
        record = fold(history, spec, reserved)
        if record.view is not None and not record.view.terminal:
            record = replace(record, standing=await standing_once(client.jetstream(), record.view))
        return record

    return _with_client(settings, read)


def fold(history: JobHistory, spec: JobSpec | None, reserved: int | None) -> JobRecord:
    """The job's events folded into the view the API shows, from generation 0 as the gateway's index folds
    them (so a replay keeps the stages before it); no view without the job's ``spec``."""
    if spec is None:
        return JobRecord(history, None, reserved)
    view = JobView.submitted(spec.model_copy(update={"generation": 0}), reserved or 0)
    for item in history.events:
        view.apply(item.sequence, item.event)
    return JobRecord(history, view, reserved)


def _stored_spec(store: S3ObjectStore, job_id: str) -> JobSpec | None:
    ref = store.head(command_key(job_id, Stage.INGEST))
    return JobSubmitted.model_validate_json(store.get(ref)).job if ref is not None else None


def _stored_price(store: S3ObjectStore, job_id: str, generation: int) -> int | None:
    """What billing reserved for ``generation``; an earlier generation's reservation was refunded."""
    ref = store.head(command_key(job_id, Stage.LATENT))
    if ref is None:
        return None
    reserved = PointsReserved.model_validate_json(store.get(ref))
    return reserved.price if reserved.job.generation == generation else None


def show_job(settings: Settings, job_id: str, *, as_json: bool = False) -> int:
    """The job in aligned ``key: value`` lines; ``as_json``: its raw event history as one JSON document."""
    record = _record(settings, job_id)
    if as_json:
        events = [
            {"sequence": item.sequence, "event": item.event.model_dump(mode="json")} for item in record.history.events
        ]
        print(json.dumps({"job_id": job_id, "events": events}, indent=2))
        return 0
    for key, value in job_lines(record):
        print(f"{key + ':':<{_KEY_WIDTH}}{value}")
    return 0


def job_lines(record: JobRecord) -> list[tuple[str, str]]:
    """The lines ``i2v jobs show`` prints, as (key, value)."""
    history, view = record.history, record.view
    if view is None:
        last = history.events[-1].event
        return [
            ("job", history.job_id),
            ("status", f"unknown; last event {last.type}"),
            ("events", str(len(history.events))),
        ]
    lines = [("job", view.job_id), ("status", _status(view)), ("account", view.account)]
    if view.stage is not None:
        step = f", step {view.step}/{view.total}" if view.total and not view.terminal else ""
        lines.append(("stage", f"{view.stage.value}{step}"))
    lines.append(("progress", f"{view.progress}%"))
    if describe(record.standing):
        lines.append(("eta", describe(record.standing)))
    if view.extends is not None:
        lines.append(("extends", f"{view.extends} (params are the new segment's; output is the whole video)"))
    lines.append(("params", describe_params(view.params)))
    if view.params.motion_prompt:
        lines.append(("prompt", view.params.motion_prompt))
    lines.append(("seed", str(view.params.seed)))
    lines.append(("price", _price(view, record.reserved)))
    completed = record.completed
    if completed is not None and view.output is not None:
        out = view.output
        lines.append(
            (
                "output",
                f"{out.frame_count} frames, {out.fps} fps, {out.duration_s:g} s, {out.width}x{out.height}, "
                f"{out.format}, {out.size_bytes:,} bytes",
            )
        )
        if completed.camera_words or completed.camera_unknown:
            unknown = f"  (not understood: {' '.join(completed.camera_unknown)})" if completed.camera_unknown else ""
            lines.append(("camera", " ".join(completed.camera_words) + unknown))
    lines.append(("submitted", f"{view.created_at:%Y-%m-%d %H:%M:%S %Z}".strip()))
    if view.timings:
        stages = "  ".join(f"{s.value} {view.timings[s]:.2f}s" for s in PIPELINE_ORDER if s in view.timings)
        lines.append(("stages", f"{stages}  (total {sum(view.timings.values()):.2f}s)"))
    if view.error is not None:
        where = f" at {view.error.stage.value}" if view.error.stage is not None else ""
        lines.append(("error", f"{view.error.code}{where}: {view.error.message}"))
    return lines


_SHOWN_APART = frozenset(
    {
        "duration",
        "fps",
        "steps",
        "cfg_scale",
        "min_cfg",
        "motion_bucket_id",
        "model",
        "resolution",
        "seed",
        "motion_prompt",
    }
)


def describe_params(params: GenerationParams) -> str:
    """The parameters in one line: the main ones always, the others where they differ from the defaults."""
    parts = [
        f"{params.duration} s at {params.fps} fps",
        f"{params.steps} steps",
        f"cfg {params.min_cfg:g}-{params.cfg_scale:g}",
        f"motion {params.motion_bucket_id}",
        f"model {params.model}",
        f"resolution {params.resolution or 'auto'}",
    ]
    defaults = GenerationParams()
    for name in GenerationParams.model_fields:
        value = getattr(params, name)
        if name in _SHOWN_APART or value == getattr(defaults, name):
            continue
        parts.append(f"{name.replace('_', '-')} {value}")
    return ", ".join(parts)


def _status(view: JobView) -> str:
    status = view.status.value
    if view.generation:
        status += f" (generation {view.generation}, replayed)"
    if view.cancel_requested and not view.terminal:
        status += ", cancel requested"
    return status


def _price(view: JobView, reserved: int | None) -> str:
    if view.status == JobStatus.SUCCEEDED:
        return f"{view.price} points, charged"
    if view.status == JobStatus.REJECTED:
        return f"{view.price} points, not charged ({view.error.message if view.error else 'rejected'})"
    if view.terminal:
        return "refunded (nothing charged)"
    if reserved is not None:
        return f"{reserved} points, reserved; charged when the video is delivered"
    return "not reserved yet"


def download_job(settings: Settings, job_id: str, output: Path | None) -> int:
    """Write the job's video to ``output`` (default ``<job>.<extension>`` here) atomically."""
    from pipeline.video import extension_of_format, parse_format
    from services.cli.generate import check_output

    record = _record(settings, job_id)
    completed = record.completed
    if completed is None:
        status = record.view.status.value if record.view is not None else "unknown"
        if record.view is not None and record.view.terminal:
            raise CliError(f"job {job_id} ended {status}; it has no video", 1)
        raise CliError(f"job {job_id} has no video yet ({status}); `i2v jobs show {job_id}` follows it", 1)
    extension = extension_of_format(parse_format(completed.format))
    target = output if output is not None else Path(f"{job_id}{extension}")
    if target.suffix.lower() != extension:
        raise CliError(f"-o {target}: the job's video is {completed.format}; name a {extension} file")
    check_output(target)
    store = store_for(settings)
    try:
        data = store.get(completed.video)
    except ObjectMissingError:
        raise CliError(f"job {job_id}'s video is no longer stored (the job was deleted)", 1) from None
    except ObjectStoreError as exc:
        raise CliError(f"object store at {settings.s3_endpoint}: {exc}", 1) from None
    _write_atomically(target, data)
    print(f"{target}  {len(data):,} bytes, {completed.frame_count} frames at {completed.fps} fps, {completed.format}")
    return 0


def _write_atomically(target: Path, data: bytes) -> None:
    """A reader sees the old file or the whole new one, never a part: written beside it, then renamed."""
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        # Created as any new file is (the umask applies), unlike mkstemp's owner-only file.
        with partial.open("xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CliError(f"-o {target}: cannot write there ({exc.strerror})", 1) from None


def dlq_list(settings: Settings) -> int:
    letters = _with_client(settings, lambda client: client.dead_letters())
    if not letters:
        print("no dead letters")
    for seq, letter in letters:
        print(
            f"{seq:>6}  {letter.failed_at:%Y-%m-%d %H:%M:%S}  {letter.stage or '-':<7}  "
            f"job {letter.job_id or '-':<26}  attempts {letter.attempts}  {letter.code}: {letter.error}"
        )
    return 0


def _letter(settings: Settings, seq: int) -> DeadLetter:
    for found, letter in _with_client(settings, lambda client: client.dead_letters()):
        if found == seq:
            return letter
    raise CliError(f"no dead letter with id {seq}; `i2v dlq list` shows them", 1)


def dlq_show(settings: Settings, seq: int) -> int:
    letter = _letter(settings, seq)
    document = letter.model_dump(mode="json")
    with contextlib.suppress(ValueError):
        document["body"] = json.loads(letter.body)
    print(json.dumps(document, indent=2))
    return 0


def dlq_replay(settings: Settings, seq: int) -> int:
    letter = _letter(settings, seq)
    if letter.job_id is None or letter.stage is None:
        raise CliError(f"dead letter {seq} has no readable job; there is nothing to replay", 1)
    return replay_job(settings, letter.job_id, letter.stage)
