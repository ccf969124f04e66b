"""The three JetStream streams, declared in one place so every service and the CLI agree on them."""

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from contracts.subjects import (
    DLQ_STREAM,
    DLQ_SUBJECTS,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    WORK_STREAM,
    WORK_SUBJECTS,
)

_DAY = 24 * 3600.0
# A retried publish within this window is dropped by JetStream (Nats-Msg-Id); an hour covers any backoff.
_DEDUP_WINDOW_S = 3600.0

WORK = StreamConfig(
    name=WORK_STREAM,
    subjects=[WORK_SUBJECTS],
    retention=RetentionPolicy.WORK_QUEUE,
    storage=StorageType.FILE,
    duplicate_window=_DEDUP_WINDOW_S,
    max_age=7 * _DAY,
)
EVENTS = StreamConfig(
    name=EVENTS_STREAM,
    subjects=[EVENTS_SUBJECTS],
    retention=RetentionPolicy.LIMITS,
    storage=StorageType.FILE,
    duplicate_window=_DEDUP_WINDOW_S,
    max_age=30 * _DAY,
    discard=DiscardPolicy.OLD,
)
DLQ = StreamConfig(
    name=DLQ_STREAM,
    subjects=[DLQ_SUBJECTS],
    retention=RetentionPolicy.LIMITS,
    storage=StorageType.FILE,
    duplicate_window=_DEDUP_WINDOW_S,
    max_age=90 * _DAY,
)
ALL_STREAMS = (WORK, EVENTS, DLQ)


async def ensure_streams(js: JetStreamContext) -> None:
    """Create the streams and the cancel bucket, or bring an existing stream's config up to date.

    Safe to call from every process at once.
    """
    from services.bus.cancellation import cancel_bucket

    await cancel_bucket(js)
    for config in ALL_STREAMS:
        try:
            await js.stream_info(config.name or "")
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:
                # Another process created it between our lookup and add: fine, it is the same config.
                await js.stream_info(config.name or "")
        else:
            await js.update_stream(config)
