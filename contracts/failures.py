"""Why a job failed or a message was dead-lettered: one stable vocabulary for stages, events and the gateway."""

from enum import StrEnum


class FailureCode(StrEnum):
    """Stable, snake_case reasons. ``JobFailed.code``, ``JobRejected.code``, ``DeadLetter.code`` and the
    gateway's error bodies all use these; the human message travels beside the code."""

    # The upload (ingest and the gateway check it with the same code).
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    TOO_MANY_PIXELS = "too_many_pixels"
    TOO_SMALL = "too_small"
    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    ANIMATED = "animated"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    # The request, the model and the account.
    MODEL_NOT_FOUND = "model_not_found"
    UNKNOWN_ACCOUNT = "unknown_account"
    INSUFFICIENT_POINTS = "insufficient_points"
    BAD_REPLAY = "bad_replay"
    VIDEO_TOO_LARGE = "video_too_large"
    NOT_RESERVED = "not_reserved"
    RIFE_UNAVAILABLE = "rife_unavailable"
    FORMAT_UNAVAILABLE = "format_unavailable"
    # What a stage made does not match what was asked.
    FRAME_COUNT = "frame_count"
    MUX_MISMATCH = "mux_mismatch"
    # Messages and object references.
    NOT_JSON = "not_json"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_SUBJECT = "unknown_subject"
    OBJECT_MISSING = "object_missing"
    OBJECT_INTEGRITY = "object_integrity"
    # Transient: retried with backoff, then dead-lettered.
    OBJECT_STORE_UNAVAILABLE = "object_store_unavailable"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    INTERNAL = "internal"
    # A job's webhook could not be delivered before its retries ran out (services/webhooks).
    WEBHOOK_UNDELIVERED = "webhook_undelivered"


IMAGE_FAILURES: frozenset[FailureCode] = frozenset(
    {
        FailureCode.EMPTY,
        FailureCode.TOO_LARGE,
        FailureCode.TOO_MANY_PIXELS,
        FailureCode.TOO_SMALL,
        FailureCode.NOT_AN_IMAGE,
        FailureCode.UNSUPPORTED_FORMAT,
        FailureCode.ANIMATED,
        FailureCode.TRUNCATED,
        FailureCode.CORRUPT,
    }
)
"""Codes that say the upload itself is unusable; the gateway answers them with 413/415/422."""
