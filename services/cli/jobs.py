"""``i2v jobs`` and ``i2v dlq``: operate on a running stack (found as :mod:`services.cli.settings` says)."""

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors

from contracts.messages import DeadLetter
from contracts.stages import Stage
from infra.objectstore import ObjectStoreError, S3ObjectStore
from services.cli.errors import CliError
from services.config import Settings
from services.jobclient import BusUnreachableError, JobClient, JobNotFoundError, JobStateError
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


def show_job(settings: Settings, job_id: str) -> int:
    history = _with_client(settings, lambda client: client.history(job_id))
    if not history.events:
        raise CliError(f"no job {job_id!r} on this stack", 1)
    for item in history.events:
        print(f"{item.sequence:>8}  {item.event.model_dump_json()}")
    return 0


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
