"""The three JetStream streams, declared in one place so every service and the CLI agree on them."""

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterator

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, BadRequestError, NotFoundError

from contracts.failures import FailureCode
from contracts.messages import DeadLetter
from contracts.stages import PIPELINE_ORDER
from contracts.subjects import (
    CANCEL_BUCKET,
    DLQ_STREAM,
    DLQ_SUBJECTS,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    WORK_STREAM,
    WORK_SUBJECTS,
    dlq_subject,
    work_subject,
)

log = logging.getLogger("i2v.streams")

_DAY = 24 * 3600.0
# A retried publish within this window is dropped by JetStream (Nats-Msg-Id); an hour covers any backoff.
_DEDUP_WINDOW_S = 3600.0
_MIB = 1024 * 1024
_CANCEL_STREAM = f"KV_{CANCEL_BUCKET}"
# Disk each stream may fill besides its age limit. JetStream reserves these on the server (1.5 GiB in
# all), so they stay modest for a laptop; a production deployment raises them with its traffic.
WORK_MAX_BYTES = 256 * _MIB
"""Commands are small and leave once acked; a full work stream refuses new jobs (the gateway answers 503)
rather than dropping queued ones."""
EVENTS_MAX_BYTES = 1024 * _MIB
"""About 25,000 jobs of history at ~40 kB each; past it the oldest events go first, as with age."""
DLQ_MAX_BYTES = 256 * _MIB

STAGE_SUBJECTS = [work_subject(stage) for stage in PIPELINE_ORDER]
"""The work stream takes commands for known stages only: a publish to any other ``i2v.work.*`` subject is
refused (no stream answers it), instead of waiting 7 days for a consumer that does not exist."""

WORK = StreamConfig(
    name=WORK_STREAM,
    subjects=STAGE_SUBJECTS,
    retention=RetentionPolicy.WORK_QUEUE,
    storage=StorageType.FILE,
    duplicate_window=_DEDUP_WINDOW_S,
    max_age=7 * _DAY,
    max_bytes=WORK_MAX_BYTES,
    discard=DiscardPolicy.NEW,
)
EVENTS = StreamConfig(
    name=EVENTS_STREAM,
    subjects=[EVENTS_SUBJECTS],
    retention=RetentionPolicy.LIMITS,
    storage=StorageType.FILE,
    duplicate_window=_DEDUP_WINDOW_S,
    max_age=30 * _DAY,
    max_bytes=EVENTS_MAX_BYTES,
    discard=DiscardPolicy.OLD,
)
DLQ = StreamConfig(
    name=DLQ_STREAM,
    subjects=[DLQ_SUBJECTS],
    retention=RetentionPolicy.LIMITS,
    storage=StorageType.FILE,
    duplicate_window=_DEDUP_WINDOW_S,
    max_age=90 * _DAY,
    max_bytes=DLQ_MAX_BYTES,
    discard=DiscardPolicy.OLD,
)
ALL_STREAMS = (WORK, EVENTS, DLQ)


def stream_configs(replicas: int = 1) -> tuple[StreamConfig, ...]:
    """The three streams as declared, each kept on ``replicas`` nodes (I2V_STREAM_REPLICAS)."""
    return tuple(dataclasses.replace(config, num_replicas=replicas) for config in ALL_STREAMS)


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create the streams and the cancel bucket, or bring an existing stream's config up to date, then
    dead-letter whatever the work stream holds on a subject no stage consumes.

    Each stream and the bucket is kept on ``replicas`` nodes (``I2V_STREAM_REPLICAS``); one declared with
    another count is changed to it, which a cluster does in place (a single nats-server refuses more than
    one: :class:`StreamReplicasError`).

    Safe to call from every process at once. Streams already as configured here are only looked up, so
    a user allowed to look streams up but not to change them (every user but the admin, see
    services/stack/nats_auth.py) passes once the admin has declared them.
    """
    from services.bus.cancellation import cancel_bucket

    with _changing(CANCEL_BUCKET):
        await cancel_bucket(js, replicas)
    bucket = await js.stream_info(_CANCEL_STREAM)
    if (bucket.config.num_replicas or 1) != replicas:
        await _rescale(js, dataclasses.replace(bucket.config, num_replicas=replicas), bucket.config)
    for config in stream_configs(replicas):
        try:
            info = await js.stream_info(config.name or "")
        except NotFoundError:
            try:
                with _changing(config.name):
                    await js.add_stream(config)
            except BadRequestError:
                # Another process created it between our lookup and add: fine, it is the same config.
                await js.stream_info(config.name or "")
        else:
            if (info.config.num_replicas or 1) != replicas:
                await _rescale(js, config, info.config)
            elif not _configured_as(info.config, config):
                with _changing(config.name):
                    await js.update_stream(config)
    await sweep_unknown_work(js)


async def ensure_streams_patiently(
    js: JetStreamContext, replicas: int = 1, *, patience_s: float = 60.0, may_change: bool = False
) -> None:
    """:func:`ensure_streams`, asked again while the servers do not answer, for up to ``patience_s`` seconds:
    a cluster electing its leaders, or a starved machine, leaves requests unanswered for a while.

    A :class:`StreamsNotDeclaredError` says a user who may not change the streams was refused, which
    waiting does not mend; it is final unless ``may_change`` (the admin), for whom no answer is only that.
    """
    deadline = asyncio.get_running_loop().time() + patience_s
    while True:
        try:
            await ensure_streams(js, replicas)
            return
        except StreamsNotDeclaredError:
            if not may_change or asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("no answer to declaring the streams yet; asking again")
        except nats.errors.TimeoutError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("no answer to looking the streams up yet; asking again")
        await asyncio.sleep(1.0)


class StreamsNotDeclaredError(TimeoutError):
    """A stream is missing or out of date and this user may not change it (the server does not answer)."""


class StreamReplicasError(RuntimeError):
    """A stream is kept on another number of nodes than I2V_STREAM_REPLICAS asks, and the server refused
    to change it (a single nats-server keeps one copy only)."""


async def _rescale(js: JetStreamContext, config: StreamConfig, current: StreamConfig) -> None:
    """Update a stream to ``config``, whose replica count differs from the ``current`` one's; every
    failure is one line saying what to do."""
    have, want = current.num_replicas or 1, config.num_replicas or 1
    settle = f"set I2V_STREAM_REPLICAS={have} to use the stream as it is"
    try:
        await js.update_stream(config)
    except nats.errors.TimeoutError:
        raise StreamsNotDeclaredError(
            f"stream {config.name} has {have} replica(s) and I2V_STREAM_REPLICAS={want}: only the NATS admin may "
            f"change that (`i2v stack streams` as I2V_NATS_USER=admin with I2V_STREAM_REPLICAS={want}); or {settle}"
        ) from None
    except APIError as exc:
        raise StreamReplicasError(
            f"stream {config.name} has {have} replica(s) and I2V_STREAM_REPLICAS={want}, which NATS refused "
            f"({exc.description}): run a cluster of at least {want} nodes, or {settle}"
        ) from None
    log.warning("stream %s now kept on %d node(s) (was %d)", config.name, want, have)


@contextlib.contextmanager
def _changing(name: str | None) -> Iterator[None]:
    try:
        yield
    except nats.errors.TimeoutError:
        raise StreamsNotDeclaredError(
            f"no answer to declaring {name}: it is missing or differs from this version's, and only the NATS "
            "admin may change it (`i2v stack streams` as I2V_NATS_USER=admin)"
        ) from None


def _configured_as(current: StreamConfig, wanted: StreamConfig) -> bool:
    """Every setting ``wanted`` names has that value in ``current`` (the server fills in the rest)."""
    have = current.as_dict()
    return all(have.get(key) == value for key, value in wanted.as_dict().items())


async def sweep_unknown_work(js: JetStreamContext) -> int:
    """Move every message on a work subject no stage consumes (kept from before the stream was limited to
    the stages' subjects) to the dead-letter stream as ``unknown_subject``; returns how many.

    Idempotent and safe to run from several processes at once: a letter's Nats-Msg-Id is the message's
    stream sequence, and a message already deleted by another sweeper is skipped.
    """
    info = await js.stream_info(WORK_STREAM, subjects_filter=WORK_SUBJECTS)
    unknown = sorted(set(info.state.subjects or {}) - set(STAGE_SUBJECTS))
    swept = 0
    for subject in unknown:
        seq = 0
        while True:
            try:
                msg = await js.get_msg(WORK_STREAM, seq=seq + 1, subject=subject, next=True)
            except NotFoundError:
                break
            assert msg.seq is not None
            seq = msg.seq
            body = (msg.data or b"").decode("utf-8", "backslashreplace")
            letter = DeadLetter(
                stage=None,
                subject=subject,
                body=body,
                code=FailureCode.UNKNOWN_SUBJECT,
                error=f"no stage consumes {subject}; the work stream takes {', '.join(STAGE_SUBJECTS)}",
                attempts=0,
            )
            await js.publish(
                dlq_subject(None),
                letter.model_dump_json().encode(),
                stream=DLQ_STREAM,
                headers={"Nats-Msg-Id": f"{WORK_STREAM}:{seq}:{FailureCode.UNKNOWN_SUBJECT}"},
            )
            # Another sweeper may have deleted it first; one left behind is lettered again under the same id.
            with contextlib.suppress(APIError):
                await js.delete_msg(WORK_STREAM, seq)
            swept += 1
            log.warning("dead-lettered message %d on %s: no stage consumes it", seq, subject)
    return swept
