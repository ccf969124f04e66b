"""Which failures are worth retrying. Transient faults are retried with backoff; permanent ones fail the job."""

from dataclasses import dataclass

from contracts.failures import FailureCode


class PermanentError(Exception):
    """Bad input or a broken reference: retrying cannot help. ``code`` is stable, the message is for people."""

    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class JobCancelledError(Exception):
    """Raised inside a stage when the job was cancelled; nothing after it runs."""


@dataclass(frozen=True)
class Fault:
    transient: bool
    code: FailureCode
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
    if isinstance(exc, ObjectStoreUnavailableError):
        return Fault(True, FailureCode.OBJECT_STORE_UNAVAILABLE, str(exc))
    if isinstance(exc, ObjectMissingError):
        return Fault(False, FailureCode.OBJECT_MISSING, str(exc))
    if isinstance(exc, ObjectIntegrityError):
        return Fault(False, FailureCode.OBJECT_INTEGRITY, str(exc))
    if isinstance(exc, ValidationError):
        return Fault(False, FailureCode.SCHEMA_VIOLATION, _one_line(exc))
    if isinstance(exc, TimeoutError | ConnectionError):
        return Fault(True, FailureCode.TIMEOUT, _one_line(exc) or type(exc).__name__)
    if "out of memory" in str(exc).lower():
        # torch.OutOfMemoryError and its CUDA cousins: another replica or a later try may have room.
        return Fault(True, FailureCode.OUT_OF_MEMORY, _one_line(exc))
    # Unknown errors are retried too (bounded): a bug fails the job after max_deliver tries, a fluke passes.
    return Fault(True, FailureCode.INTERNAL, f"{type(exc).__name__}: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
