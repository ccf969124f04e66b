"""``i2v jobs`` and ``i2v dlq``: operate on a running stack (I2V_NATS_URL, I2V_S3_* settings)."""

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from contracts.messages import DeadLetter
from contracts.stages import Stage
from contracts.subjects import DLQ_STREAM, DLQ_SUBJECTS
from services.cli.errors import CliError
from services.config import Settings
from services.jobclient import JobClient, JobNotFoundError, JobStateError
from services.objectstore import object_store_from

T = TypeVar("T")


def _with_client(settings: Settings, action: Callable[[JobClient], Awaitable[T]]) -> T:
    try:
        settings.require_connections()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    store = object_store_from(settings)

    async def run() -> T:
        try:
            client = await JobClient.connect(settings.nats_url, store)
        except (OSError, nats.errors.Error) as exc:
            raise CliError(f"cannot reach NATS at {settings.nats_url}: {exc}", 1) from None
        try:
            return await action(client)
        except JobNotFoundError as exc:
            raise CliError(f"no job {exc.args[0]!r} on this stack", 1) from None
        except JobStateError as exc:
            raise CliError(str(exc), 1) from None
        finally:
            await client.close()

    return asyncio.run(run())


def cancel_job(settings: Settings, job_id: str) -> int:
    history = _with_client(settings, lambda client: client.cancel(job_id, reason="i2v jobs cancel"))
    if history.terminal is not None:
        print(f"job {job_id} already ended: {history.terminal.type}")
    else:
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


async def _dead_letters(settings: Settings) -> list[tuple[int, DeadLetter]]:
    nc = await nats.connect(settings.nats_url, connect_timeout=5)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(DLQ_STREAM)
        except NotFoundError:
            return []
        if info.state.messages == 0:
            return []
        sub = await js.subscribe(
            DLQ_SUBJECTS,
            stream=DLQ_STREAM,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        letters: list[tuple[int, DeadLetter]] = []
        while True:
            try:
                msg = await sub.next_msg(timeout=2.0)
            except TimeoutError:
                break
            letters.append((msg.metadata.sequence.stream, DeadLetter.model_validate_json(msg.data)))
            if msg.metadata.num_pending == 0:
                break
        await sub.unsubscribe()
        return letters
    finally:
        await nc.close()


def dlq_list(settings: Settings) -> int:
    letters = asyncio.run(_dead_letters(settings))
    if not letters:
        print("no dead letters")
    for seq, letter in letters:
        print(
            f"{seq:>6}  {letter.failed_at:%Y-%m-%d %H:%M:%S}  {letter.stage or '-':<7}  "
            f"job {letter.job_id or '-':<26}  attempts {letter.attempts}  {letter.code}: {letter.error}"
        )
    return 0


def _letter(settings: Settings, seq: int) -> DeadLetter:
    for found, letter in asyncio.run(_dead_letters(settings)):
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
