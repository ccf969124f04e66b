"""Fault classification: what is retried and what fails the job at once."""

import pytest
import torch
from pydantic import ValidationError

from contracts.failures import FailureCode
from contracts.messages import JobSubmitted
from infra.objectstore import ObjectIntegrityError, ObjectMissingError, ObjectStoreUnavailableError
from services.bus.faults import PermanentError, classify


def _schema_error() -> ValidationError:
    try:
        JobSubmitted.model_validate({"schema_version": 2})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


@pytest.mark.parametrize(
    ("exc", "transient", "code"),
    [
        (ObjectStoreUnavailableError("S3 at http://127.0.0.1:1 is unreachable"), True, "object_store_unavailable"),
        (TimeoutError("publish timed out"), True, "timeout"),
        (ConnectionResetError("reset by peer"), True, "timeout"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True, "out_of_memory"),
        (RuntimeError("something nobody expected"), True, "internal"),
        (PermanentError(FailureCode.UNSUPPORTED_FORMAT, "GIF is not supported"), False, "unsupported_format"),
        (ObjectMissingError("jobs/j1/upload"), False, "object_missing"),
        (ObjectIntegrityError("jobs/j1/upload", "a" * 64, "b" * 64), False, "object_integrity"),
        (_schema_error(), False, "schema_violation"),
    ],
)
def test_classify(exc: BaseException, transient: bool, code: str) -> None:
    fault = classify(exc)
    assert (fault.transient, fault.code) == (transient, code)
    assert fault.message and "\n" not in fault.message
