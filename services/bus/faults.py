"""Which failures are worth retrying. Transient faults are retried with backoff; permanent ones fail the job."""

from dataclasses import dataclass


class PermanentError(Exception):
    """Bad input or a broken reference: retrying cannot help. ``code`` is stable, the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TransientError(Exception):
    """Infrastructure hiccup (store unreachable, timeout, out of GPU memory): retry later."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class JobCancelledError(Exception):
    """Raised inside a stage when the job was cancelled; nothing after it runs."""


@dataclass(frozen=True)
class Fault:
    transient: bool
    code: str
    message: str


def classify(exc: BaseException) -> Fault:
    """Map an exception from a stage to a retry decision."""
    from pydantic import ValidationError

    from infra.objectstore import (
        ObjectIntegrityError,
        ObjectMissingError,
        ObjectStoreUnavailableError,
    )

    if isinstance(exc, PermanentError):
        return Fault(False, exc.code, str(exc))
    if isinstance(exc, TransientError):
        return Fault(True, exc.code, str(exc))
    if isinstance(exc, ObjectStoreUnavailableError):
        return Fault(True, "object_store_unavailable", str(exc))
    if isinstance(exc, ObjectMissingError):
        return Fault(False, "object_missing", str(exc))
    if isinstance(exc, ObjectIntegrityError):
        return Fault(False, "object_integrity", str(exc))
    if isinstance(exc, ValidationError):
        return Fault(False, "schema_violation", _one_line(exc))
    if isinstance(exc, TimeoutError | ConnectionError):
        return Fault(True, "timeout", _one_line(exc) or type(exc).__name__)
    if "out of memory" in str(exc).lower():
        # torch.OutOfMemoryError and its CUDA cousins: another replica or a later try may have room.
        return Fault(True, "out_of_memory", _one_line(exc))
    # Unknown errors are retried too (bounded): a bug fails the job after max_deliver tries, a fluke passes.
    return Fault(True, "internal", f"{type(exc).__name__}: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
